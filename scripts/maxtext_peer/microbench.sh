#!/usr/bin/env bash
# MaxText's decode microbenchmark (maxtext.inference.inference_microbenchmark: prefill time and the
# autoregressive step time, "AR step average time") on a shrunk Qwen3-Next on CPU, random weights, f32.
#   microbench.sh tiny|mid [key=value ...]   (PREFILL=128 tokens, TARGET=256 cache length; keys appended)
# Needs JetStream: setup_jetstream.sh [SRC] first; JETSTREAM_DIR = the folder it printed after "ok".
# The prefill length equals max_prefill_predict_length: a shorter one crashes MaxText's scanned Qwen3-Next
# (scan carry shape mismatch of cached_prefill_key). Prints MaxText's JSON summary as the last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
V=${MAXTEXT_VENV:-$HOME/.cache/maxtext-peer/venv}
: "${JETSTREAM_DIR:?run setup_jetstream.sh and set JETSTREAM_DIR}"
SP=$("$V/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')
size=${1:?tiny or mid}; shift
. "$HERE/models.sh"
peer_model_args "$size"
MODEL=${MODEL/max_target_length=*/}   # decode sets its own lengths
PREFILL=${PREFILL:-128}; TARGET=${TARGET:-256}
export DECOUPLE_GCLOUD=TRUE JAX_PLATFORMS=cpu PYTHONPATH="$JETSTREAM_DIR:$HERE/shims${PYTHONPATH:+:$PYTHONPATH}"
export XLA_FLAGS=${XLA_FLAGS:---xla_force_host_platform_device_count=1}
OUT=${MAXTEXT_OUT:-$(mktemp -d)}
# shellcheck disable=SC2086
exec "$V/bin/python" -m maxtext.inference.inference_microbenchmark "$SP/maxtext/configs/base.yml" \
  base_output_directory="$OUT" run_name=peer-decode per_device_batch_size=1 model_name=qwen3-next-80b-a3b \
  override_model_config=True attention=dot_product dtype=float32 weight_dtype=float32 megablox=False \
  sparse_matmul=False hardware=cpu skip_jax_distributed_system=True tokenizer_type=huggingface \
  tokenizer_path="$SP/maxtext/assets/tokenizers/qwen3-tokenizer" max_prefill_predict_length="$PREFILL" \
  max_target_length="$TARGET" "inference_microbenchmark_prefill_lengths=\"$PREFILL\"" \
  inference_microbenchmark_stages=prefill,generate inference_microbenchmark_loop_iters=10 $MODEL "$@"
