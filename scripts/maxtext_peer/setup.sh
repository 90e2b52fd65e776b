#!/usr/bin/env bash
# (The project's MaxText peer scripts, from the team's shared/scripts/maxtext_peer, kept here so that a fresh
# clone runs tests/maxtext_full_state.rs and scripts/compare_with_maxtext.sh on its own.)
# Installs MaxText 0.2.5 (JAX on CPU) into a venv, to run it side by side with maxtext-rs on the same
# machine: training step times, compile times, and goldens. About 3 minutes and 2 GB.
# MaxText needs Python >= 3.12. Usage: setup.sh [VENV_DIR]   (default ~/.cache/maxtext-peer/venv)
set -euo pipefail
V=${1:-${MAXTEXT_VENV:-$HOME/.cache/maxtext-peer/venv}}
if [ ! -x "$V/bin/python" ]; then
  PY=""
  for c in "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python python3.13 python3.12 python3; do
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then PY=$c; break; fi
  done
  [ -n "$PY" ] || { echo "MaxText needs Python >= 3.12 and none was found" >&2; exit 1; }
  "$PY" -m venv "$V"
fi
"$V/bin/pip" install -q maxtext==0.2.5
SP=$("$V/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')
REQ="$SP/dependencies/requirements/generated_requirements/decoupled-requirements.txt"
# The wheel has no base dependencies; its CPU-capable list is this file minus the GPU-only wheels.
grep -vE '^(cuda-bindings|cuda-pathfinder|nvidia-|apache-tvm-ffi|pynvml)' "$REQ" > "$V/cpu-requirements.txt"
"$V/bin/pip" install -q -r "$V/cpu-requirements.txt"
echo "$V"
