#!/usr/bin/env python3
"""The ratio table of scripts/bench_vs_peers.sh, from the raw files of one run.

Usage: bench_vs_peers_table.py DIR   (DIR = .cache/bench/vs_peers/<UTC time>)

Ratios are ours/peer: above 1 means ours has more tokens/s, or more seconds / MB (compile time, RSS).
"""

import json
import os
import re
import statistics
import sys

D = sys.argv[1]


def path(name):
    return os.path.join(D, name)


def jsonl(name):
    try:
        with open(path(name)) as f:
            return [json.loads(l) for l in f if l.strip().startswith("{")]
    except OSError:
        return []


def text(name):
    try:
        with open(path(name)) as f:
            return f.read()
    except OSError:
        return ""


ours = jsonl("ours.jsonl")
missing = dict(l.split("\t", 1) for l in text("missing.tsv").splitlines() if "\t" in l)


def ours_row(kind, **kw):
    return next((r for r in ours if r.get("kind") == kind and all(r.get(k) == v for k, v in kw.items())), None)


def fmt(x, unit=""):
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    return (f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}" if abs(x) >= 1 else f"{x:.3f}") + unit


def ratio(a, b):
    return f"({a / b:.2f}x)" if a and b else ""


def maxtext_train(variant, size):
    """Step time (steptimes.py), compile, wall and RSS of one MaxText training run, or None."""
    name = f"mt-train-{variant}-{size}"
    steps, log = text(f"{name}.steps.txt"), text(f"{name}.log")
    proc = (jsonl(f"{name}.json") or [None])[0]
    m = re.search(r"steady-state median step wall time \(steps>=3\): ([\d.]+) s", steps)
    if not m or not proc:
        why = missing.get(f"maxtext-{variant}-{size}") or missing.get("maxtext") or \
            (f"no step times (rc {proc['rc']}; see {name}.log)" if proc else "not run")
        return {"error": why}
    comp = [float(x) for x in re.findall(r"Finished XLA compilation of jit\(train_step\) in ([\d.]+) s", log)]
    trace = [float(x) for x in re.findall(r"Finished (?:tracing train_step for jit|jaxpr to MLIR module conversion "
                                          r"jit\(train_step\)) in ([\d.]+) s", log)]
    losses = re.search(r"losses: (.*)", steps)
    return {"step_s": float(m.group(1)), "compile_s": comp[0] if comp else None, "trace_lower_s": sum(trace) or None,
            "wall_s": proc["wall_s"], "max_rss_mb": proc["max_rss_mb"], "rc": proc["rc"],
            "losses": losses.group(1) if losses else "", "load": proc["loadavg_before"]}


def main():
    out = []
    p = lambda s="": out.append(s)
    loads = jsonl("loads.jsonl")
    p(f"bench_vs_peers {os.path.basename(D.rstrip('/'))} (UTC), {os.cpu_count()} cores; raw files in {D}")
    p("Ratios in brackets are ours/peer: above 1 = ours has more tokens/s, or takes more seconds / MB.")
    p("Load average (1/5/15 min) before each part: " + "; ".join(f"{l['part']}: {l['loadavg']}" for l in loads))
    peaks = [r for r in ours if r.get("kind") == "peak"]
    peak = max((r["gflops_best"] for r in peaks if r["dtype"] == "f32"), default=None)
    p("Matmul peak through the XLA CPU plugin (2048^3 dot, best of 5), measured in this run: " + ", ".join(
        f"{r['dtype']} {r['gflops_best']:.1f} GFLOP/s ({r['when']})" for r in peaks))
    p()
    p("== training: f32, batch 1, synthetic data, dot-product attention, cold compile (no cache) ==")
    p("ours: median per-step seconds of steps >= 2 (each step waits for its loss); MaxText: median of the wall")
    p("deltas between its step log lines, steps >= 3 (steptimes.py; MaxText's own 'seconds' are async on CPU).")
    p("MaxText runs its dense MoE (sparse_matmul=False, every expert on every token); ours runs dropless top-k.")
    for size, seq in (("tiny", 128), ("mid", 512)):
        o = ours_row("train", model=f"qwen3-next-peer-{size}") or {}
        pa, st = maxtext_train("patched", size), maxtext_train("stock", size)
        ot = o.get("tokens_per_s")

        def peer(name, r, key, conv=lambda x: x):
            if "error" in r:
                return f"{name} unavailable ({r['error']})"
            v = conv(r[key]) if r.get(key) is not None else None
            return f"{name} {fmt(v)} {ratio(ours_val, v)}".rstrip()

        ours_val = ot
        p(f"{size} train tokens/s: ours {fmt(ot)}, " + peer("MaxText patched", pa, "step_s", lambda s: seq / s)
          + ", " + peer("stock", st, "step_s", lambda s: seq / s))
        ours_val = o.get("compile_s")
        p(f"{size} train-step compile s (ours: emit + XLA compile; MaxText: XLA compile of jit(train_step)): ours "
          f"{fmt(ours_val)}, " + peer("MaxText patched", pa, "compile_s") + ", " + peer("stock", st, "compile_s"))
        p(f"{size} MaxText trace + lowering of train_step, on top of its compile: patched "
          f"{fmt(pa.get('trace_lower_s'))} s, stock {fmt(st.get('trace_lower_s'))} s")
        ours_val = o.get("wall_s")
        p(f"{size} whole process s ({o.get('steps')} steps ours; MaxText {TINY if size == 'tiny' else MID}): ours "
          f"{fmt(ours_val)}, " + peer("MaxText patched", pa, "wall_s") + ", " + peer("stock", st, "wall_s"))
        ours_val = o.get("max_rss_mb")
        p(f"{size} peak RSS MB: ours {fmt(ours_val)}, " + peer("MaxText patched", pa, "max_rss_mb") + ", "
          + peer("stock", st, "max_rss_mb"))
        f = o.get("maxtext_formula_flops")
        if f and peak:
            mfu = lambda r: f"{100 * f / r['step_s'] / (peak * 1e9):.1f}%" if "step_s" in r else "n/a"
            p(f"{size} MFU (model FLOPs by MaxText's formula {f:.3e}/step, of the f32 peak {peak:.0f} GFLOP/s): "
              f"ours {mfu(o)}, MaxText patched {mfu(pa)}, stock {mfu(st)}; ours by XLA's count of its program "
              f"({o.get('xla_flops', 0):.3e}/step): {o.get('xla_flops', 0) / o['step_s'] / 1e9:.1f} GFLOP/s, "
              f"{100 * o.get('xla_flops', 0) / o['step_s'] / (peak * 1e9):.1f}%")
        p(f"{size} losses: ours {' '.join(f'{x:.3f}' for x in o.get('losses', []))}; MaxText patched "
          f"{pa.get('losses', 'n/a')} (different random init)")
        if o.get("error"):
            p(f"{size} ours ERROR: {o['error']}")
    p()
    p("== decode: qwen3-next-peer-mid, 128-token prompt, 128 new tokens, greedy, f32 ==")
    hf = (jsonl("hf-decode.json") or [None])[-1]
    hr = hf["results"][0] if hf else None
    o1, o8 = ours_row("decode", batch=1) or {}, ours_row("decode", batch=8) or {}
    src = "the same HF checkpoint (hf_model_path)" if str(o1.get("model", "")).startswith("hf:") else "random weights"
    p(f"ours: maxtext decode as a whole process on {src}, XLA's thread pool (2 cores); HF: transformers "
      f"{hf['transformers'] if hf else '?'} {hf['backend'] if hf else ''}, best of {hf['reps'] if hf else '?'} "
      "in one process; MaxText: inference_microbenchmark's AR step (random weights, dense MoE).")
    mt = {}
    for b in (1, 8):
        log = text(f"mt-decode-b{b}.log")
        i = log.find('{"prefill-result-sizes"')
        if i >= 0:
            r = json.loads(log[i:].splitlines()[0])
            ar = r["autoregressive"]
            mt[b] = {"decode": ar["global_batch_size"] * 1000.0 / ar["step_in_ms"],
                     "prefill": 128 * 1000.0 / r["prefill"]["128"]["time_in_ms"], "step_ms": ar["step_in_ms"]}
    mt_why = missing.get("maxtext-decode") or missing.get("maxtext") or "no result (see mt-decode-b*.log)"
    js = text("jetstream-src.txt").strip()
    mt_name = "MaxText (JetStream from MAXTEXT_JETSTREAM_SRC)" if js.startswith("ok") else "MaxText"
    mtv = lambda b, k: (f"{mt_name} {fmt(mt[b][k])} {ratio(o.get(k + '_tok_s'), mt[b][k])}" if b in mt
                        else f"{mt_name} unavailable: {mt_why}")
    for b, o in ((1, o1), (8, o8)):
        hfv = (f"HF torch 1 thread {fmt(hr['decode_tok_s']['best'])} {ratio(o.get('decode_tok_s'), hr['decode_tok_s']['best'])}, "
               if hr and b == 1 else "")
        p(f"batch {b} decode tokens/s: ours {fmt(o.get('decode_tok_s'))}, {hfv}{mtv(b, 'decode')}")
        hfp = (f"HF torch 1 thread {fmt(hr['prefill_tok_s']['best'])} {ratio(o.get('prefill_tok_s'), hr['prefill_tok_s']['best'])}, "
               if hr and b == 1 else "")
        p(f"batch {b} prefill tokens/s (to the first token): ours {fmt(o.get('prefill_tok_s'))}, {hfp}"
          + (mtv(b, "prefill") if b == 1 else "MaxText prefills one sequence at a time (batch 1 figure above)"))
        p(f"batch {b} ours: device step {fmt(o.get('device_step_ms'))} ms, whole process {fmt(o.get('wall_s'))} s, "
          f"peak RSS {fmt(o.get('max_rss_mb'))} MB" + (f"  ERROR {o['error']}" if o.get("error") else ""))
    if hr and o1.get("generated"):
        g, h = o1["generated"], hr["generated"]
        same = next((i for i, (a, c) in enumerate(zip(g, h)) if a != c), min(len(g), len(h)))
        p(f"greedy tokens, ours vs HF (same weights): the first {same} of {min(len(g), len(h))} equal")
    if not hr:
        p(f"HF decode unavailable: {missing.get('hf', 'no result (see hf-decode.log)')}")
    pypi = text("jetstream-pypi.txt").strip()
    if pypi:
        p(f"JetStream from PyPI: {pypi}")
    if js:
        p(f"JetStream from MAXTEXT_JETSTREAM_SRC: {js}")
    w = ours_row("wide")
    if w:
        p()
        p(f"GPU-sized model (qwen3-next-wide4-e64: 4 layers at the real width, 64 experts, bf16, 4 x 2048 tokens), "
          f"ours on CPU: export-hlo compile {fmt(w.get('export_compile_s'))} s, FLOPs/step XLA "
          f"{w.get('xla_flops', 0):.3e}, MaxText formula {w.get('maxtext_formula_flops', 0):.3e}; GPU: "
          f"{w.get('gpu_train') or fmt(w.get('gpu_step_s')) + ' s/step'}")
    print("\n".join(out))


TINY = os.environ.get("PEER_TINY_STEPS", "12")
MID = os.environ.get("PEER_MID_STEPS", "6") + " patched / " + os.environ.get("PEER_MID_STOCK_STEPS", "4") + " stock"
main()
