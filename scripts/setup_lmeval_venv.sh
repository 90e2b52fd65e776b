#!/usr/bin/env bash
# Creates ~/.cache/maxtext-rs/lmeval-venv with the real lm-eval client (`lm-eval[api]`, no torch, no
# transformers), for tests/serve_lmeval.rs and the MMLU recipe in the README. Idempotent: a venv whose stamp
# matches the pinned requirements is left alone; otherwise it is (re)built. Needs python3 (>= 3.10) and pip
# access to PyPI.
#
#   scripts/setup_lmeval_venv.sh            # prints the venv's python path on the last line
set -euo pipefail

VENV="${MAXTEXT_LMEVAL_VENV:-$HOME/.cache/maxtext-rs/lmeval-venv}"
REQS=(
  "lm-eval[api]==0.4.13"
)
STAMP="$VENV/.requirements"
WANT="$(printf '%s\n' "${REQS[@]}")"

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] \
   && "$VENV/bin/python" -c "import lm_eval, aiohttp" >/dev/null 2>&1; then
  echo "lm-eval venv up to date: $VENV" >&2
else
  PY="${PYTHON:-python3}"
  command -v "$PY" >/dev/null || { echo "setup_lmeval_venv: $PY not found" >&2; exit 2; }
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQS[@]}"
  "$VENV/bin/python" -c "import lm_eval; print('lm-eval', lm_eval.__version__)" >&2
  printf '%s' "$WANT" > "$STAMP"
fi
echo "$VENV/bin/python"
