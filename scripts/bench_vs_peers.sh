#!/usr/bin/env bash
# maxtext-rs next to its peers on this machine, one after the other in one run, with a ratio table at the end:
#   1. ours: `cargo bench --bench commands` (the release binary as whole processes: matmul peak, train of the
#      peer tiny and mid models, decode of the mid model from the HF checkpoint below, the GPU-sized export);
#   2. MaxText 0.2.5 training, `PATCH_DWCONV=1` (the depthwise-conv gradient swapped for an equal sum) and
#      stock, tiny and mid (scripts/maxtext_peer/train.sh, cold compile, step time by steptimes.py);
#   3. HF transformers decode of the same mid checkpoint (torch CPU, 1 thread; scripts/bench_hf_decode.py);
#   4. MaxText decode (inference_microbenchmark's AR step, mid, vocab 8192), when JetStream can be had.
#
#   scripts/bench_vs_peers.sh            (about 11 minutes on 2 cores, a third of it stock MaxText on mid)
#
# Installs what is missing: MaxText into ~/.cache/maxtext-peer/venv (scripts/maxtext_peer/setup.sh, ~2 GB),
# torch + transformers into .cache/hfref-venv (as scripts/bench_decode.sh; ~3 GB), JetStream for MaxText's
# decoder (scripts/maxtext_peer/setup_jetstream.sh: google-jetstream 0.2.2 from PyPI, which is too old for
# MaxText 0.2.5, so MaxText decode is marked unavailable with the reason; MAXTEXT_JETSTREAM_SRC=DIR, a
# JetStream checkout at MaxText's pin 29329e8, makes it run). Whatever cannot be had is said in the table.
#
# Environment: PEER_TINY_STEPS (12), PEER_MID_STEPS (6, patched MaxText), PEER_MID_STOCK_STEPS (4; 0 skips
# stock MaxText on mid, ~1 min a step), PEER_DECODE_BATCHES ("1 8", MaxText decode), BENCH_DECODE_REPS (3, HF),
# CMD_BENCH_* (passed to the commands bench), MAXTEXT_VENV, HF_PYTHON, MAXTEXT_JETSTREAM_SRC.
# Raw JSON lines and every log: .cache/bench/vs_peers/<UTC time>/ (the table is also saved there as table.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=.cache/bench/vs_peers/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
PEER=scripts/maxtext_peer
V=${MAXTEXT_VENV:-$HOME/.cache/maxtext-peer/venv}
HFPY=${HF_PYTHON:-.cache/hfref-venv/bin/python}
HFDIR=.cache/bench/peer-mid-hf
TINY_STEPS=${PEER_TINY_STEPS:-12}
MID_STEPS=${PEER_MID_STEPS:-6}
MID_STOCK_STEPS=${PEER_MID_STOCK_STEPS:-4}
note() { echo "bench_vs_peers: $*" >&2; }
missing() { echo "$1	$2" >> "$OUT/missing.tsv"; note "UNAVAILABLE $1: $2"; }
# The load average before each part goes to loads.jsonl (the table prints it).
part() {
  local l; l=$(cut -d' ' -f1-3 /proc/loadavg)
  printf '{"part": "%s", "loadavg": "%s", "utc": "%s"}\n' "$1" "$l" "$(date -u +%FT%TZ)" >> "$OUT/loads.jsonl"
  note "$1 (load $l)"
}
: > "$OUT/missing.tsv"

# ---- set-up: ours, MaxText, HF, the shared mid checkpoint, JetStream --------------------------------------
note "building the release binary and the commands bench"
cargo build --release -q || { note "cargo build --release failed"; exit 1; }
BENCH=$(cargo bench --bench commands --no-run --message-format=json-render-diagnostics 2>/dev/null | python3 -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "commands" and m.get("executable")]
print(exe[-1] if exe else "")')
[ -x "$BENCH" ] || { note "could not build benches/commands.rs"; exit 1; }

if [ ! -x "$V/bin/python" ]; then
  note "installing MaxText 0.2.5 into $V (scripts/maxtext_peer/setup.sh, ~3 minutes, ~2 GB)"
  "$PEER/setup.sh" "$V" >&2 || true
fi
HAVE_MT=1
[ -x "$V/bin/python" ] && "$V/bin/python" -c 'import maxtext' 2>/dev/null \
  || { HAVE_MT=0; missing "maxtext" "no MaxText venv at $V (scripts/maxtext_peer/setup.sh failed; see its output above)"; }

if [ ! -x "$HFPY" ]; then
  note "making .cache/hfref-venv (torch, transformers, safetensors, numpy from PyPI, ~3 GB)"
  python3 -m venv .cache/hfref-venv && .cache/hfref-venv/bin/pip install -q torch transformers safetensors numpy >&2
  HFPY=.cache/hfref-venv/bin/python
fi
HAVE_HF=1
"$HFPY" -c 'import torch, transformers' 2>/dev/null || { HAVE_HF=0; missing "hf" "no python with torch + transformers ($HFPY; pip install failed)"; }
if [ "$HAVE_HF" = 1 ] && [ ! -f "$HFDIR/model.safetensors" ]; then
  "$HFPY" scripts/make_hf_bench_model.py --preset peer-mid --out "$HFDIR" >&2 || { HAVE_HF=0; missing "hf" "make_hf_bench_model.py failed"; }
fi

JS_DIR=""
if [ "$HAVE_MT" = 1 ]; then
  # Always tried: the registry's JetStream. Its verdict is kept for the table even when a source is given.
  "$PEER/setup_jetstream.sh" > "$OUT/jetstream-pypi.txt" 2>&1 || true
  note "JetStream from PyPI: $(cat "$OUT/jetstream-pypi.txt")"
  js=$(cat "$OUT/jetstream-pypi.txt")
  if [ -n "${MAXTEXT_JETSTREAM_SRC:-}" ]; then
    js=$("$PEER/setup_jetstream.sh" "$MAXTEXT_JETSTREAM_SRC" 2>&1 || true)
    echo "$js" > "$OUT/jetstream-src.txt"
    note "JetStream from $MAXTEXT_JETSTREAM_SRC: $js"
  fi
  case "$js" in
    ok\ *) JS_DIR=${js#ok } ;;
    *) missing "maxtext-decode" "${js#unavailable: }" ;;
  esac
fi

# ---- 1. ours ----------------------------------------------------------------------------------------------
part "ours: cargo bench --bench commands"
ours_hf=""
[ "$HAVE_HF" = 1 ] && ours_hf=$HFDIR
CMD_BENCH_HF_DIR=$ours_hf CMD_BENCH_LOG_DIR=$OUT/ours-logs "$BENCH" > "$OUT/ours.jsonl" 2> "$OUT/ours.txt"
tail -n 12 "$OUT/ours.txt" >&2

# ---- 2. MaxText training ----------------------------------------------------------------------------------
mt_train() {  # variant size steps
  local variant=$1 size=$2 steps=$3 name=mt-train-$1-$2 patch=0 tokens=128
  [ "$variant" = patched ] && patch=1
  [ "$size" = mid ] && tokens=512
  part "MaxText $variant train $size ($steps steps)"
  JAX_LOG_COMPILES=1 PATCH_DWCONV=$patch MAXTEXT_OUT="$OUT/maxtext-out" \
    python3 scripts/proc_stats.py --log "$OUT/$name.log" --json "$OUT/$name.json" -- \
    "$PEER/train.sh" "$size" "steps=$steps" jax_cache_dir= >&2
  python3 "$PEER/steptimes.py" "$OUT/$name.log" "$tokens" > "$OUT/$name.steps.txt" 2>&1 || true
}
if [ "$HAVE_MT" = 1 ]; then
  mt_train patched tiny "$TINY_STEPS"
  mt_train patched mid "$MID_STEPS"
  mt_train stock tiny "$TINY_STEPS"
  if [ "$MID_STOCK_STEPS" -gt 0 ]; then mt_train stock mid "$MID_STOCK_STEPS"; else missing "maxtext-stock-mid" "skipped (PEER_MID_STOCK_STEPS=0)"; fi
fi

# ---- 3. HF transformers decode (torch, 1 thread) ----------------------------------------------------------
if [ "$HAVE_HF" = 1 ]; then
  part "HF transformers decode, torch 1 thread"
  "$HFPY" scripts/bench_hf_decode.py --model-dir "$HFDIR" --prompt-lengths 128 --new 128 \
    --reps "${BENCH_DECODE_REPS:-3}" --threads 1 > "$OUT/hf-decode.json" 2> "$OUT/hf-decode.log" \
    || missing "hf" "bench_hf_decode.py failed: $(tail -1 "$OUT/hf-decode.log")"
fi

# ---- 4. MaxText decode (inference_microbenchmark) ---------------------------------------------------------
if [ -n "$JS_DIR" ]; then
  for b in ${PEER_DECODE_BATCHES:-1 8}; do
    part "MaxText decode microbenchmark mid batch $b"
    JETSTREAM_DIR=$JS_DIR MAXTEXT_OUT="$OUT/maxtext-out" \
      python3 scripts/proc_stats.py --log "$OUT/mt-decode-b$b.log" --json "$OUT/mt-decode-b$b.json" -- \
      "$PEER/microbench.sh" mid per_device_batch_size="$b" jax_cache_dir= >&2
  done
fi

part "end"
python3 scripts/bench_vs_peers_table.py "$OUT" | tee "$OUT/table.txt"
