#!/usr/bin/env bash
# Installs libtpu (the TPU PJRT plugin) from PyPI for `maxtext compile` (TPU AOT compilation on any machine,
# no TPU needed) and for `maxtext train hardware=tpu` on TPU VMs. libtpu's licence does not allow
# redistributing it, so it is never vendored: this fetches it with pip into the directory maxtext looks in,
#   $MAXTEXT_CACHE_DIR/libtpu-<version>, else ~/.cache/maxtext-rs/libtpu-<version>
# (or DIR when given), and prints the libtpu.so path. Re-running with the package present does nothing.
#
#   scripts/setup_libtpu.sh [DIR]        LIBTPU_VERSION=0.0.50.1 by default (~140 MB download, ~0.5 GB)
set -euo pipefail
VERSION=${LIBTPU_VERSION:-0.0.50.1}
ROOT=${MAXTEXT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/maxtext-rs}
DIR=${1:-$ROOT/libtpu-$VERSION}
SO=$DIR/libtpu/libtpu.so
if [ -f "$SO" ]; then
  echo "$SO"
  exit 0
fi
command -v python3 >/dev/null || { echo "setup_libtpu: python3 with pip is needed" >&2; exit 1; }
TMP="$DIR.tmp-$$"
trap 'rm -rf "$TMP"' EXIT
echo "setup_libtpu: pip install --no-deps --target $DIR libtpu==$VERSION" >&2
python3 -m pip install --no-deps --disable-pip-version-check --quiet --target "$TMP" "libtpu==$VERSION" >&2
[ -f "$TMP/libtpu/libtpu.so" ] || { echo "setup_libtpu: libtpu==$VERSION installed no libtpu/libtpu.so" >&2; exit 1; }
mkdir -p "$(dirname "$DIR")"
rm -rf "$DIR"
mv "$TMP" "$DIR"
echo "$SO"
