#!/usr/bin/env python3
"""Writes a randomly initialised HF Qwen3-Next checkpoint with the dimensions of a benchmark model, so that
HF transformers and maxtext (`hf_model_path=DIR`) decode the very same weights.

Usage: python scripts/make_hf_bench_model.py --out DIR [--preset peer-mid] [--seed 0]

Presets: peer-mid = configs/models/qwen3-next-peer-mid.yml (= scripts/maxtext_peer/train.sh mid): hidden
512, 8 layers (6 Gated DeltaNet + 2 full attention), 8/2 heads of 64, 32 experts top-4 of 256, shared expert
256, vocab 8192; peer-tiny likewise. Writes config.json + model.safetensors (save_pretrained, float32).

The init is deliberately not flat (the scheme of the project's reference generator, make_hf_reference.py):
with transformers' default std 0.02 every layer barely moves the residual stream and greedy decoding
collapses onto one token, which would make "same tokens" checks meaningless.
"""

import argparse
import json
import math
import os

import torch
from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

# Keys as in configs/models/qwen3-next-peer-{tiny,mid}.yml, in HF's names.
PRESETS = {
    "peer-tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=32, vocab_size=1024, moe_intermediate_size=64, shared_expert_intermediate_size=64,
                      num_experts=8, num_experts_per_tok=2, linear_key_head_dim=32, linear_value_head_dim=32,
                      linear_num_key_heads=2, linear_num_value_heads=4),
    "peer-mid": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                     head_dim=64, vocab_size=8192, moe_intermediate_size=256, shared_expert_intermediate_size=256,
                     num_experts=32, num_experts_per_tok=4, linear_key_head_dim=64, linear_value_head_dim=64,
                     linear_num_key_heads=4, linear_num_value_heads=8),
}
COMMON = dict(
    intermediate_size=256,  # dense-MLP size: unused, every layer is MoE (mlp_only_layers=[])
    hidden_act="silu", max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25},
    attention_bias=False, attention_dropout=0.0, linear_conv_kernel_dim=4, decoder_sparse_step=1,
    mlp_only_layers=[], full_attention_interval=4, norm_topk_prob=True,
    bos_token_id=None, eos_token_id=None, pad_token_id=None,
)


def reinit_(model, seed):
    """One seeded generator, tensor by tensor in named_parameters() order (make_hf_reference.py's scheme)."""
    g = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("linear_attn.norm.weight"):
                v = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
            elif name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                v = 0.2 * torch.randn(p.shape, generator=g)
            elif name.endswith("A_log"):
                v = torch.empty(p.shape).uniform_(math.log(0.05), math.log(2.0), generator=g)
            elif name.endswith("dt_bias"):
                v = 0.5 * torch.randn(p.shape, generator=g)
            elif name.endswith("conv1d.weight"):
                v = 0.5 * torch.randn(p.shape, generator=g)
            elif name.endswith("embed_tokens.weight"):
                v = torch.randn(p.shape, generator=g)
            elif name == "lm_head.weight":
                v = (2.0 / math.sqrt(hidden)) * torch.randn(p.shape, generator=g)
            else:
                v = torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1])
            p.copy_(v.to(p.dtype))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="peer-mid", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfg = Qwen3NextConfig(**COMMON, **PRESETS[a.preset])
    torch.manual_seed(a.seed)
    model = Qwen3NextForCausalLM(cfg)
    reinit_(model, a.seed)
    model.eval()
    model.save_pretrained(a.out, safe_serialization=True)
    n = sum(p.numel() for p in model.parameters())
    with open(os.path.join(a.out, "bench_model.json"), "w") as f:
        json.dump({"preset": a.preset, "seed": a.seed, "n_params": n}, f)
    print(f"make_hf_bench_model: {a.preset} ({n / 1e6:.1f} M parameters, seed {a.seed}) -> {a.out}")


if __name__ == "__main__":
    main()
