#!/usr/bin/env bash
# Runs the same short training in maxtext-rs and in MaxText 0.2.5 (the CPU peer) and prints the two loss
# curves and raw grad norms side by side: tiny Qwen3-Next (`train.sh tiny`'s model), both starting from the
# same Orbax checkpoint's params (load_parameters_path), dataset_type=synthetic, float32, AdamW, 5 steps.
#
# Usage: scripts/compare_with_maxtext.sh [key=value ...]      (extra keys go to both programs)
#   CKPT=<item dir>     the common start (default: the step-0 checkpoint MaxText 0.2.5 wrote of this model, in the shared
#                       fixtures: ../shared/fixtures/orbax/maxtext_qwen3next_tiny/0/items; the in-repo trimmed copy lacks
#                       the data file, and HF's tiny fixture has a shared-expert width MaxText cannot express)
#   STEPS=5  MAXTEXT_VENV=<venv> (default ~/.cache/maxtext-peer/venv)
#   MAXTEXT_PEER_SCRIPTS=<dir with setup.sh, train.sh and models.sh> (default scripts/maxtext_peer)
# The losses agree only if both see the same batch: our synthetic data must be MaxText's (branch synthrng).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${MAXTEXT_PEER_SCRIPTS:-$ROOT/scripts/maxtext_peer}
V=${MAXTEXT_VENV:-$HOME/.cache/maxtext-peer/venv}
CKPT=${CKPT:-$ROOT/../shared/fixtures/orbax/maxtext_qwen3next_tiny/0/items}
STEPS=${STEPS:-5}
for f in setup.sh train.sh models.sh; do
  [ -f "$PEER/$f" ] || { echo "missing $PEER/$f: the MaxText peer scripts (set MAXTEXT_PEER_SCRIPTS to their folder)" >&2; exit 1; }
done
[ -f "$CKPT/_METADATA" ] || { echo "missing $CKPT/_METADATA: set CKPT to an Orbax item directory of this model (e.g. a maxtext train checkpoint's <step>/items)" >&2; exit 1; }
if ! "$V/bin/python" -c 'import maxtext, jax, orbax.checkpoint' >/dev/null 2>&1; then
  echo "MaxText peer not found in $V: installing it with $PEER/setup.sh (~3 min, 2 GB)" >&2
  bash "$PEER/setup.sh" "$V" >&2
fi
OUT=$(mktemp -d)
# train.sh tiny's model and switches, spelled so that our CLI takes them too.
MODEL="model_name=qwen3-next-80b-a3b override_model_config=true base_emb_dim=128 base_num_decoder_layers=4
  base_num_query_heads=4 base_num_kv_heads=2 head_dim=32 base_mlp_dim=64 base_moe_mlp_dim=64 num_experts=8
  num_experts_per_tok=2 shared_experts=1 vocab_size=1024 gdn_key_head_dim=32 gdn_value_head_dim=32 gdn_num_key_heads=2
  gdn_num_value_heads=4 gdn_chunk_size=64 max_target_length=128 per_device_batch_size=1 dataset_type=synthetic
  attention=dot_product dtype=float32 weight_dtype=float32 megablox=false sparse_matmul=false opt_type=adamw"
COMMON="load_parameters_path=$CKPT steps=$STEPS enable_checkpointing=false"

(cd "$ROOT" && cargo build -q --bin maxtext)
echo "maxtext-rs ..." >&2
# shellcheck disable=SC2086
(cd "$ROOT" && target/debug/maxtext train configs/base.yml $MODEL $COMMON base_output_directory="$OUT/ours" run_name=r \
  metrics_file="$OUT/ours.jsonl" "$@") >"$OUT/ours.log" 2>&1 || { tail -30 "$OUT/ours.log"; echo "maxtext-rs failed: $OUT/ours.log" >&2; exit 1; }
echo "MaxText ..." >&2
# shellcheck disable=SC2086
MAXTEXT_VENV=$V MAXTEXT_OUT="$OUT/maxtext" bash "$PEER/train.sh" tiny $MODEL $COMMON metrics_file="$OUT/maxtext.jsonl" \
  jax_cache_dir="$(dirname "$V")/jax_cache" "$@" >"$OUT/maxtext.log" 2>&1 \
  || { grep -v 'Config param' "$OUT/maxtext.log" | tail -30; echo "MaxText failed: $OUT/maxtext.log" >&2; exit 1; }

python3 - "$OUT/ours.jsonl" "$OUT/maxtext.jsonl" <<'EOF'
import json, sys
def load(p):
    rows = {}
    for line in open(p):
        if line.strip():
            r = json.loads(line)
            rows[int(r["step"])] = r
    return rows
a, b = load(sys.argv[1]), load(sys.argv[2])
print(f"{'step':>4}  {'loss ours':>12} {'loss MaxText':>12} {'rel diff':>9}   {'raw grad norm ours':>18} {'MaxText':>12} {'rel diff':>9}")
worst = 0.0
for s in sorted(set(a) | set(b)):
    la, lb = a.get(s, {}).get("learning/loss"), b.get(s, {}).get("learning/loss")
    ga, gb = a.get(s, {}).get("learning/raw_grad_norm"), b.get(s, {}).get("learning/raw_grad_norm")
    rel = lambda x, y: abs(x - y) / abs(y) if x is not None and y else float("nan")
    worst = max(worst, rel(la, lb)) if la is not None and lb is not None else worst
    f = lambda v: f"{v:12.6f}" if v is not None else f"{'-':>12}"
    print(f"{s:>4}  {f(la)} {f(lb)} {rel(la, lb):9.2e}   {f(ga):>18} {f(gb)} {rel(ga, gb):9.2e}")
print(f"largest relative loss difference: {worst:.2e} (the issue's tolerance: 1e-4)")
EOF
echo "logs and metrics: $OUT" >&2
