#!/usr/bin/env bash
# Creates .cache/orbax-venv with the real orbax-checkpoint that the Orbax fixtures were written and checked
# with (see ../shared/fixtures/orbax/README.md), for tests/orbax_interop.rs. Idempotent: a venv whose stamp
# matches the pinned requirements is left alone; otherwise it is (re)built. Needs python3 (>= 3.11) and pip
# access to PyPI.
#
#   scripts/setup_orbax_venv.sh            # prints the venv's python path on the last line
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.cache/orbax-venv
REQS=(
  "orbax-checkpoint==0.12.8"
  "tensorstore==0.1.86"
  "jax[cpu]==0.10.2"
  "numpy==2.4.6"
  "ml_dtypes==0.6.0"
)
STAMP="$VENV/.requirements"
WANT="$(printf '%s\n' "${REQS[@]}")"

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] \
   && "$VENV/bin/python" -c "import orbax.checkpoint, jax" >/dev/null 2>&1; then
  echo "orbax venv up to date: $VENV" >&2
else
  PY="${PYTHON:-python3}"
  command -v "$PY" >/dev/null || { echo "setup_orbax_venv: $PY not found" >&2; exit 2; }
  rm -rf "$VENV"
  mkdir -p .cache
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQS[@]}"
  "$VENV/bin/python" -c "import orbax.checkpoint, jax; print('orbax', orbax.checkpoint.__version__, 'jax', jax.__version__)" >&2
  printf '%s' "$WANT" > "$STAMP"
fi
echo "$PWD/$VENV/bin/python"
