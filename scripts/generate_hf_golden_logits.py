#!/usr/bin/env python3
"""Golden logits from a HuggingFace causal LM, in MaxText's golden JSONL format.

Writes one JSON object per prompt and line:

    {"prompt": <text or null>, "tokens": [int, ...], "logits": [[float32 x vocab] x len(tokens)]}

the format of MaxText's tests/assets/logits_generation/generate_hf_golden_logits.py and the input of
`maxtext check-logits ... golden_logits_path=FILE` (and MaxText's forward_pass_logit_checker). The logits
are those of every position of a single no-cache forward pass (batch 1, no padding), cast to float32
whatever --dtype the model was loaded in. Text prompts are tokenized with the model's tokenizer as
MaxText does (`tokenizer.encode(prompt)`: Qwen adds no BOS); --token-ids skips the tokenizer.

Requirements: torch and transformers (transformers >= 4.57 for Qwen3-Next), plus safetensors:
    pip install torch transformers safetensors
(torch from PyPI pulls CUDA wheels, about 2.8 GB; the forward pass runs on the CPU by default.)

Examples:
    generate_hf_golden_logits.py --model-id-or-path Qwen/Qwen3-Next-80B-A3B-Instruct \\
        --prompts "I love to" "Today is a" "What is the" --output-path golden.jsonl --dtype bfloat16
    generate_hf_golden_logits.py --model-id-or-path tests/fixtures/hf/qwen3-next-tiny \\
        --token-ids 1 17,300,5,999,42,42,7 --output-path tiny.jsonl
"""

import argparse
import json
import os
import sys


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model-id-or-path", "--model-id", dest="model", required=True,
                    help="HF hub id or local directory (config.json + safetensors [+ tokenizer])")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", nargs="+", metavar="TEXT",
                     help="text prompts, one per argument; a single argument containing ';' is split on ';' "
                          "(MaxText's form)")
    src.add_argument("--token-ids", nargs="+", metavar="IDS",
                     help="token id sequences, one per argument, comma-separated (e.g. 1,2,3); no tokenizer needed")
    ap.add_argument("--output-path", required=True, help="JSONL file to write (parent directories are created)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="dtype the model is loaded and run in (default float32); logits are written as float32")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--attn-implementation", default=None,
                    help="transformers attn_implementation, e.g. eager or sdpa (default: transformers' choice)")
    ap.add_argument("--trust-remote-code", action="store_true",
                    help="allow model code from the checkpoint (not needed for Qwen3-Next with transformers >= 4.57)")
    return ap.parse_args(argv)


def token_sequences(args):
    """[(prompt text or None, [ids])] from --token-ids, or None when prompts need the tokenizer."""
    if args.token_ids is None:
        return None
    seqs = []
    for arg in args.token_ids:
        try:
            ids = [int(t) for t in arg.replace(" ", "").split(",") if t != ""]
        except ValueError:
            sys.exit(f"error: --token-ids {arg!r} is not a comma-separated list of integers")
        if not ids:
            sys.exit(f"error: --token-ids {arg!r} has no ids")
        seqs.append((None, ids))
    return seqs


def prompt_texts(args):
    prompts = list(args.prompts)
    if len(prompts) == 1 and ";" in prompts[0]:
        prompts = [p for p in prompts[0].split(";") if p != ""]
    return prompts


def import_deps():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        sys.exit(
            f"error: {e.name or e} is not installed. This script needs torch and transformers "
            "(transformers >= 4.57 for Qwen3-Next): pip install torch transformers safetensors"
        )
    import torch
    import transformers
    return torch, transformers


def dtype_kwargs(transformers, torch_dtype):
    """transformers >= 4.56 takes `dtype=`, older versions `torch_dtype=`."""
    try:
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    except ValueError:
        major, minor = 5, 0
    return {"dtype": torch_dtype} if (major, minor) >= (4, 56) else {"torch_dtype": torch_dtype}


def main(argv=None):
    args = parse_args(argv)
    seqs = token_sequences(args)
    torch, transformers = import_deps()
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]

    if seqs is None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
        seqs = [(p, tokenizer.encode(p)) for p in prompt_texts(args)]
        for p, ids in seqs:
            if not ids:
                sys.exit(f"error: prompt {p!r} has no tokens")

    kwargs = dtype_kwargs(transformers, torch_dtype)
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    model = transformers.AutoModelForCausalLM.from_pretrained(
        args.model, trust_remote_code=args.trust_remote_code, **kwargs)
    model.to(args.device)
    model.eval()

    out_dir = os.path.dirname(os.path.abspath(args.output_path))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.output_path, "w") as f, torch.no_grad():
        for prompt, ids in seqs:
            x = torch.tensor([ids], dtype=torch.long, device=args.device)
            logits = model(input_ids=x, use_cache=False).logits[0].float().cpu()
            # float32 values as Python floats: json writes the shortest repr, which reads back exactly.
            line = {"prompt": prompt, "tokens": ids, "logits": logits.tolist()}
            f.write(json.dumps(line) + "\n")
            print(f"{len(ids)} tokens, logits {tuple(logits.shape)}: {prompt!r}", file=sys.stderr)
    print(f"wrote {len(seqs)} line(s) to {args.output_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
