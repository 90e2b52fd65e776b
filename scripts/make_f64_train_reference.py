#!/usr/bin/env python3
"""Float64 ground truth for the 3-step training references (needs torch + transformers).

The HF fixtures' train references are torch float32. After the first AdamW update, elements whose
gradient is at float32 noise level move by +-lr in a direction that is noise, so two float32
implementations (or torch re-run) drift apart by up to a few 1e-4 in the grad norm. This script reruns
the same 3 steps in float64 (the model loaded as float64, eager attention and experts), giving the exact
values both float32 implementations approximate, so a test can ask ours to be at least as close to them
as torch's float32 run is.

    python scripts/make_f64_train_reference.py MODEL_DIR TRAIN_REFERENCE_JSON OUT_JSON
"""
import json
import sys

import torch
from transformers import Qwen3NextForCausalLM


def main():
    model_dir, ref_path, out_path = sys.argv[1:4]
    ref = json.load(open(ref_path))
    opt = ref["optimizer"]
    inp = torch.tensor(ref["batch"]["inputs"])
    tgt = torch.tensor(ref["batch"]["targets"])
    m = Qwen3NextForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float64, attn_implementation="eager",
                                             experts_implementation="eager")
    m.train(False)
    params = list(m.parameters())
    mu = [torch.zeros_like(p) for p in params]
    nu = [torch.zeros_like(p) for p in params]
    b1, b2, eps, lr, wd, clip = opt["b1"], opt["b2"], opt["eps"], opt["learning_rate"], opt["weight_decay"], opt["clip_max_norm"]
    steps = []
    for t in range(1, opt["steps"] + 1):
        logits = m(inp).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
        norm = torch.sqrt(sum((g * g).sum() for g in grads)).item()
        steps.append({"step": t, "loss": loss.item(), "raw_grad_norm": norm})
        scale = 1.0 if norm < clip else clip / norm
        with torch.no_grad():
            for p, g, mm, vv in zip(params, grads, mu, nu):
                g = g * scale
                mm.mul_(b1).add_((1 - b1) * g)
                vv.mul_(b2).add_((1 - b2) * g * g)
                m_hat = mm / (1 - b1 ** t)
                v_hat = vv / (1 - b2 ** t)
                p.sub_(lr * (m_hat / (v_hat.sqrt() + eps) + wd * p))
    json.dump({"made_by": "scripts/make_f64_train_reference.py (torch float64)", "steps": steps}, open(out_path, "w"), indent=1)
    print(json.dumps(steps))


if __name__ == "__main__":
    main()
