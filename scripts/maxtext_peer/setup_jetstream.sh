#!/usr/bin/env bash
# Makes JetStream importable for MaxText's decoders (maxtext.inference.decode, inference_microbenchmark),
# which need it and which the maxtext wheel does not pull in. Installed with --no-deps into its own folder
# (put on PYTHONPATH by microbench.sh), so the MaxText venv itself is not changed.
#   setup_jetstream.sh [JETSTREAM_SRC]
# Without an argument: google-jetstream 0.2.2, the only release on PyPI (2024-05). MaxText 0.2.5 pins a later
# JetStream (git commit 29329e8, google-jetstream 0.3.0, in its extra_deps/tf_requirements.txt), which is not on
# PyPI; give a checkout of it as JETSTREAM_SRC. Then probes MaxText's own import of JetStream
# (maxtext.common.gcloud_stub.jetstream(), which silently falls back to stubs) and prints one line:
# "ok <dir>" (exit 0), or "unavailable: <exact reason>" (exit 1).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
V=${MAXTEXT_VENV:-$HOME/.cache/maxtext-peer/venv}
[ -x "$V/bin/python" ] || { echo "unavailable: no MaxText venv at $V (run setup.sh)"; exit 1; }
SRC=${1:-}
if [ -n "$SRC" ]; then DIR=$HOME/.cache/maxtext-peer/jetstream-src; SPEC=$SRC; else DIR=$HOME/.cache/maxtext-peer/jetstream-0.2.2; SPEC=google-jetstream==0.2.2; fi
if [ ! -d "$DIR/jetstream" ] || [ -n "$SRC" ]; then
  rm -rf "$DIR"
  # seqio is left out on purpose (it needs TensorFlow); shims/seqio stands in for it.
  if ! "$V/bin/pip" install -q --no-deps --target "$DIR" "$SPEC" >"$DIR.install.log" 2>&1; then
    echo "unavailable: pip install $SPEC failed: $(tail -1 "$DIR.install.log")"; exit 1
  fi
fi
# gcloud_stub.jetstream() prints "[NO-OP] jetstream: dependency missing (<ImportError>)" and returns stubs when
# the installed JetStream lacks what MaxText imports; the stubbed engine then cannot tokenize or decode.
why=$(PYTHONPATH="$DIR:$HERE/shims" "$V/bin/python" - 2>/dev/null <<'PY'
import contextlib, io
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    from maxtext.common import gcloud_stub
    mods = gcloud_stub.jetstream()
if getattr(mods[0], "_IS_STUB", False):
    print(buf.getvalue().strip().replace("\n", " ") or "MaxText returned its JetStream stubs")
PY
) || why="importing maxtext.common.gcloud_stub failed"
if [ -n "$why" ]; then
  ver=$(ls -d "$DIR"/google_jetstream-*.dist-info 2>/dev/null | sed 's/.*google_jetstream-\(.*\)\.dist-info/\1/')
  echo "unavailable: google-jetstream ${ver:-?} ($SPEC) does not provide what MaxText 0.2.5 imports: $why; MaxText then uses its stubs, under which inference_microbenchmark stops at import (prefill_packing: 'This module depends on JetStream') and decode at MaxEngine.get_tokenizer"
  exit 1
fi
echo "ok $DIR"
