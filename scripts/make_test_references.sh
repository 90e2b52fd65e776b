#!/usr/bin/env bash
# Regenerates the HF references with ../shared/scripts/make_hf_reference.py (HF transformers, float32, torch
# CPU): tiny-interval2-ratio1 under tests/fixtures/hf/ (shipped), tiny-8layers-gqa4 under OPTIONAL_DIR/hf/
# (an optional set, default .cache/references; point MAXTEXT_RS_REFERENCES at OPTIONAL_DIR). The golden
# JSONL files become safetensors + JSON (scripts/golden_jsonl_to_safetensors.py, values unchanged).
# Needs torch + transformers: this script makes a venv in .cache/hfref-venv (about 3 GB, from PyPI)
# unless HF_PYTHON points at a python that has them.
#
#   scripts/make_test_references.sh [OPTIONAL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OPTIONAL_DIR=${1:-.cache/references}
binary_goldens() {
  python3 scripts/golden_jsonl_to_safetensors.py "$1/golden_logits.jsonl" "$1/golden_greedy.jsonl"
  rm "$1"/golden_*.jsonl
}
MAKE=../shared/scripts/make_hf_reference.py
PY=${HF_PYTHON:-.cache/hfref-venv/bin/python}
if [ ! -x "$PY" ]; then
  python3 -m venv .cache/hfref-venv
  .cache/hfref-venv/bin/pip install -q torch transformers safetensors numpy
fi
# 8 layers, GQA 4:1, GDN 4 key / 8 value heads with dk != dv, rotary 0.5, 16 experts top-4.
"$PY" "$MAKE" --preset tiny --seed 7 --out "$OPTIONAL_DIR/hf/tiny-8layers-gqa4" --what logits,greedy,train \
  --prompt-lengths 5,64,65,130 --set num_hidden_layers=8 --set num_attention_heads=8 --set num_key_value_heads=2 \
  --set head_dim=16 --set linear_num_key_heads=4 --set linear_num_value_heads=8 --set linear_key_head_dim=8 \
  --set linear_value_head_dim=12 --set num_experts=16 --set num_experts_per_tok=4 --set moe_intermediate_size=24 \
  --set shared_expert_intermediate_size=40 \
  --set 'rope_parameters={"rope_type":"default","rope_theta":1000000.0,"partial_rotary_factor":0.5}'
# full attention every 2nd layer, GDN heads 1:1, conv kernel 3, full rotary, norm_topk_prob=false.
"$PY" "$MAKE" --preset tiny --seed 11 --out tests/fixtures/hf/tiny-interval2-ratio1 --what logits,greedy,train \
  --prompt-lengths 3,63,64,129 --set num_hidden_layers=6 --set full_attention_interval=2 --set vocab_size=512 \
  --set hidden_size=96 --set num_attention_heads=6 --set num_key_value_heads=3 --set head_dim=24 \
  --set linear_num_key_heads=3 --set linear_num_value_heads=3 --set linear_key_head_dim=16 \
  --set linear_value_head_dim=16 --set num_experts=6 --set num_experts_per_tok=3 --set norm_topk_prob=false \
  --set moe_intermediate_size=20 --set shared_expert_intermediate_size=16 --set linear_conv_kernel_dim=3 \
  --set 'rope_parameters={"rope_type":"default","rope_theta":500000.0,"partial_rotary_factor":1.0}'
binary_goldens "$OPTIONAL_DIR/hf/tiny-8layers-gqa4"
binary_goldens tests/fixtures/hf/tiny-interval2-ratio1
