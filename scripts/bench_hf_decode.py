#!/usr/bin/env python3
"""Prefill and greedy-decode throughput of an HF Qwen3-Next checkpoint with HF transformers (torch CPU,
float32, batch 1, eval mode): the reference side of `cargo bench --bench decode_vs_hf`, same figures.

Usage:
    python scripts/bench_hf_decode.py --model-dir DIR [--prompt-lengths 16,128] [--new 32] [--reps 5]
                                      [--threads 1] [--attn-implementation sdpa] [--experts-implementation ...]

Per prompt length: one untimed warm-up, then `reps` timed runs of a manual greedy loop with the model's
cache, exactly what `model.generate(do_sample=False)` does (prefill with logits_to_keep=1, then one token
per step), timed in two parts:
  prefill: prompt tokens / time of the prompt forward + argmax of the last position (the first new token);
  decode:  (new - 1) tokens / time of the remaining new - 1 single-token forwards + argmax.
The loop's tokens are checked once against model.generate(do_sample=False, min_new_tokens=new).

Prompts: the prompt of that length in DIR/golden_logits.jsonl (make_hf_reference.py --prompt-lengths),
else (7919 i + 17) mod vocab, as the Rust bench picks them. Prints one JSON line on stdout.
"""

import argparse
import inspect
import json
import os
import statistics
import sys
import time

import torch
import transformers
from transformers import DynamicCache, Qwen3NextForCausalLM


def prompt(model_dir, n, vocab):
    path = os.path.join(model_dir, "golden_logits.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    tokens = json.loads(line)["tokens"]
                    if len(tokens) == n:
                        return tokens, "golden_logits.jsonl"
    return [(7919 * i + 17) % vocab for i in range(n)], "(7919*i+17)%vocab"


def best_median(v):
    return {"best": max(v), "median": statistics.median(v), "all": v}


@torch.inference_mode()
def greedy(model, ids, new, cache_kw):
    """Manual greedy loop; returns (tokens, prefill seconds, decode seconds)."""
    cache = DynamicCache(config=model.config)
    x = torch.tensor([ids], dtype=torch.long)
    t0 = time.perf_counter()
    out = model(input_ids=x, use_cache=True, logits_to_keep=1, **{cache_kw: cache})
    tok = out.logits[:, -1].argmax(-1, keepdim=True)
    first = int(tok)
    t1 = time.perf_counter()
    toks = [first]
    for _ in range(new - 1):
        out = model(input_ids=tok, use_cache=True, **{cache_kw: cache})
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        toks.append(int(tok))
    t2 = time.perf_counter()
    return toks, t1 - t0, t2 - t1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--prompt-lengths", default="16,128")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--attn-implementation", default=None, help="default: transformers' default (sdpa)")
    ap.add_argument("--experts-implementation", default=None, help="default: transformers' default")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    t_load = time.perf_counter()
    kw = {"dtype": torch.float32}
    if args.attn_implementation:
        kw["attn_implementation"] = args.attn_implementation
    model = Qwen3NextForCausalLM.from_pretrained(args.model_dir, **kw)
    if args.experts_implementation:
        model.set_experts_implementation(args.experts_implementation)
    model.eval()
    load_s = time.perf_counter() - t_load
    # transformers 5.x renamed past_key_values -> cache (the old name is deprecated).
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    vocab = model.config.vocab_size

    results = []
    for n in [int(s) for s in args.prompt_lengths.split(",")]:
        ids, source = prompt(args.model_dir, n, vocab)
        t_warm = time.perf_counter()
        warm, _, _ = greedy(model, ids, args.new, cache_kw)
        warmup_s = time.perf_counter() - t_warm
        with torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long)
            gen = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=args.new, min_new_tokens=args.new, pad_token_id=0)
        gen_tokens = gen[0, n:].tolist()
        prefill, decode, ttft = [], [], []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(args.reps):
            toks, tp, td = greedy(model, ids, args.new, cache_kw)
            assert toks == warm, "greedy decoding is not deterministic"
            prefill.append(n / tp)
            decode.append((args.new - 1) / td)
            ttft.append(tp * 1e3)
        cpu_util = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        results.append({
            "prompt_len": n, "prompt_source": source, "new_tokens": args.new, "decode_tokens_timed": args.new - 1,
            "prefill_tok_s": best_median(prefill), "decode_tok_s": best_median(decode),
            "ttft_ms_min": min(ttft), "warmup_s": warmup_s, "cpu_cores_busy": cpu_util,
            "generated": warm, "generate_matches_loop": gen_tokens == warm,
        })
        print(f"bench_hf_decode: prompt {n}: prefill {max(prefill):.0f} tok/s, decode {max(decode):.1f} tok/s "
              f"(best of {args.reps}), {cpu_util:.2f} cores busy", file=sys.stderr, flush=True)

    print(json.dumps({
        "impl": "hf-transformers",
        "backend": f"torch {torch.__version__} CPU, {torch.get_num_threads()} thread(s)",
        "transformers": transformers.__version__,
        "attn_implementation": model.config._attn_implementation,
        "experts_implementation": getattr(model.config, "_experts_implementation", None),
        "model_dir": args.model_dir,
        "n_params": sum(p.numel() for p in model.parameters()),
        "dtype": "float32", "batch": 1, "reps": args.reps, "load_s": load_s,
        "results": results,
    }))


if __name__ == "__main__":
    main()
