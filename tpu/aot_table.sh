#!/usr/bin/env bash
# The 80B compile table of tpu/README.md: `maxtext compile` of the seed's commands for v5p slices through
# libtpu, on this machine with no TPU (scripts/setup_libtpu.sh installs libtpu first). One line per
# command: per-chip memory, FLOPs, compile time; logs and stats under $OUT (default .cache/aot/<UTC time>).
#
#   tpu/aot_table.sh                 (several minutes per command on 2 cores)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-.cache/aot/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
scripts/setup_libtpu.sh >/dev/null || exit 1
cargo build --release -q || exit 1
M=(configs/base.yml model_name=qwen3-next-80b-a3b log_config=false jax_cache_dir=)
SEED_TRAIN=(per_device_batch_size=1 ici_fsdp_parallelism=-1 max_target_length=1024 attention=flash dtype=bfloat16
            weight_dtype=bfloat16 megablox=False sparse_matmul=False)
SEED_DECODE=(per_device_batch_size=1 max_prefill_predict_length=64 max_target_length=1024 attention=dot_product
             dtype=bfloat16 weight_dtype=bfloat16 megablox=False sparse_matmul=False ici_tensor_parallelism=1
             ici_fsdp_parallelism=1 ici_expert_parallelism=-1 scan_layers=False)
run() {
  local name=$1; shift
  local t0=$SECONDS
  ./target/release/maxtext compile "${M[@]}" out_dir="$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local mem; mem=$(grep -E "^memory per chip|Ran out of memory" "$OUT/$name.log" | head -1)
  local flops; flops=$(grep -oE "[0-9.]+e[0-9]+ FLOPs" "$OUT/$name.log" | head -1)
  printf '%s\trc=%s\t%ss\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$flops" "$mem" | tee -a "$OUT/table.tsv"
}
run v5p128-fsdp-dense compile_topology=v5p-128 per_device_batch_size=1 max_target_length=4096 ici_fsdp_parallelism=-1 sparse_matmul=false
run v5p128-fsdp-dense-dot compile_topology=v5p-128 per_device_batch_size=1 max_target_length=4096 ici_fsdp_parallelism=-1 sparse_matmul=false attention=dot_product
run v5p128-fsdp-dropless compile_topology=v5p-128 per_device_batch_size=1 max_target_length=4096 ici_fsdp_parallelism=-1
run v5p128-ep8-dense compile_topology=v5p-128 per_device_batch_size=1 max_target_length=4096 ici_fsdp_parallelism=-1 ici_expert_parallelism=8 sparse_matmul=false
run v5p64-seed-train compile_topology=v5p-64 "${SEED_TRAIN[@]}"
run v5p64-seed-prefill compile_topology=v5p-64 program=prefill "${SEED_DECODE[@]}"
run v5p64-seed-decode compile_topology=v5p-64 program=decode "${SEED_DECODE[@]}"
echo "table: $OUT/table.tsv"
