#!/usr/bin/env bash
# Prefill and greedy-decode throughput, maxtext-rs (XLA CPU plugin) next to HF transformers (torch CPU),
# batch 1, float32, on the same HF checkpoints and the same prompts; prints one table.
#
#   scripts/bench_decode.sh
#
# Environment: HF_PYTHON (a python with torch + transformers + safetensors + numpy; else this script makes
# .cache/hfref-venv, about 3 GB from PyPI, like scripts/make_test_references.sh), BENCH_CONFIGS
# ("tiny small"), BENCH_PROMPT_LENGTHS (16,128), BENCH_NEW (32 new tokens), BENCH_REPS (5).
# Models: ../shared/scripts/make_hf_reference.py --preset {tiny,small} into .cache/bench/{tiny,small}
# (made once). Raw JSON lines: .cache/bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
MAKE=../shared/scripts/make_hf_reference.py
PY=${HF_PYTHON:-.cache/hfref-venv/bin/python}
CONFIGS=${BENCH_CONFIGS:-tiny small}
LENGTHS=${BENCH_PROMPT_LENGTHS:-16,128}
NEW=${BENCH_NEW:-32}
REPS=${BENCH_REPS:-5}
OUT=.cache/bench/results
mkdir -p "$OUT"

# (a) the reference python
if [ ! -x "$PY" ]; then
  echo "bench_decode: making .cache/hfref-venv (torch, transformers, safetensors, numpy from PyPI)" >&2
  python3 -m venv .cache/hfref-venv
  .cache/hfref-venv/bin/pip install -q torch transformers safetensors numpy
  PY=.cache/hfref-venv/bin/python
fi

# (b) the models, with prompts of the benchmarked lengths in golden_logits.jsonl
for c in $CONFIGS; do
  dir=.cache/bench/$c
  have=$("$PY" -c "import json,sys; print(','.join(str(p['len']) for p in json.load(open(sys.argv[1]))['prompts']))" \
    "$dir/manifest.json" 2>/dev/null || true)
  if [ ! -f "$dir/model.safetensors" ] || [ "$have" != "$LENGTHS" ]; then
    echo "bench_decode: making $dir (make_hf_reference.py --preset $c --prompt-lengths $LENGTHS)" >&2
    "$PY" "$MAKE" --preset "$c" --seed 0 --out "$dir" --what logits --prompt-lengths "$LENGTHS" >&2
  fi
done

# A 1-core run of ours. XLA's switch for its multi-threaded Eigen kernels (when the plugin has it) alone is
# not enough: the thunk executor still runs work on the intra-op pool (measured: up to 1.8 cores busy), so
# the process is also pinned to one core with taskset when there is one.
SO=$(find "${HOME}/.cache/maxtext-rs" -name '*.so' 2>/dev/null | head -1)
# (grep -a rather than `strings | grep -q`: under pipefail the early exit of grep -q fails the pipe.)
if [ -n "$SO" ] && grep -aqF xla_cpu_multi_thread_eigen "$SO"; then
  FLAG="--xla_cpu_multi_thread_eigen=false"
else
  FLAG=""
fi
PIN=()
command -v taskset >/dev/null && PIN=(taskset -c 0)
ONE_CORE="${FLAG:+XLA_FLAGS=$FLAG }${PIN[*]:-}"
[ -n "$ONE_CORE" ] || ONE_CORE="(no way to restrict: same as above)"
one_core() { XLA_FLAGS="${XLA_FLAGS:-} $FLAG" "${PIN[@]}" "$@"; }

# Built once, then run directly: every run times the same binary (and nothing is rebuilt in between).
BENCH=$(cargo bench --bench decode_vs_hf --no-run --message-format=json-render-diagnostics | "$PY" -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "decode_vs_hf" and m.get("executable")]
print(exe[-1])')

# (c) the runs (`cargo bench --bench decode_vs_hf -- ARGS` runs the same binary), one after the other
for c in $CONFIGS; do
  dir=.cache/bench/$c
  args=(--hf-dir "$dir" --prompt-lengths "$LENGTHS" --new "$NEW" --reps "$REPS")
  echo "bench_decode: $c: maxtext-rs (XLA thread pool)" >&2
  "$BENCH" "${args[@]}" > "$OUT/$c.ours.json"
  echo "bench_decode: $c: maxtext-rs ($ONE_CORE)" >&2
  one_core "$BENCH" "${args[@]}" > "$OUT/$c.ours-1core.json"
  echo "bench_decode: $c: HF transformers (torch, 1 thread)" >&2
  "$PY" scripts/bench_hf_decode.py --model-dir "$dir" --prompt-lengths "$LENGTHS" --new "$NEW" --reps "$REPS" \
    --threads 1 > "$OUT/$c.hf.json"
done

# (d) the table
"$PY" - "$OUT" "$ONE_CORE" "$(nproc)" $CONFIGS <<'EOF'
import json, sys
out, one_core, cores, configs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
load = lambda c, w: {r["prompt_len"]: r for r in json.loads(open(f"{out}/{c}.{w}.json").read().strip().splitlines()[-1])["results"]}
hf0 = json.loads(open(f"{out}/{configs[0]}.hf.json").read().strip().splitlines()[-1])
reps = hf0["reps"]
print(f"Prefill: prompt tokens/s to the first new token; decode: new tokens/s after it ({hf0['results'][0]['new_tokens']} new, "
      f"greedy); batch 1, float32; best of {reps} (median in brackets).")
print(f"ours = maxtext-rs on the XLA CPU PJRT plugin (1 device); HF = transformers {hf0['transformers']}, "
      f"{hf0['backend']}, attn {hf0['attn_implementation']}, experts {hf0['experts_implementation']}, "
      f"GDN and conv by HF's PyTorch fallbacks (no fla / causal_conv1d on CPU).")
print(f"XLA CPU runs on its own thread pool ({cores} cores here) while torch is pinned to 1 thread; the second table "
      f"runs ours with {one_core} for a 1-core vs 1-core comparison. 'busy' = process CPU time / wall time while timed.")
fmt = lambda d: f"{d['best']:.0f} ({d['median']:.0f})" if d["best"] >= 100 else f"{d['best']:.1f} ({d['median']:.1f})"
for which, title in (("ours", f"ours: XLA thread pool ({cores} cores)"), ("ours-1core", f"ours: {one_core}")):
    print()
    print(f"== {title}  vs  HF: torch 1 thread ==")
    head = ["config", "prompt", "ours prefill tok/s", "HF prefill tok/s", "ratio", "ours decode tok/s",
            "HF decode tok/s", "ratio", "busy ours/HF", "same tokens"]
    rows = []
    for c in configs:
        ours, hf = load(c, which), load(c, "hf")
        for n in sorted(ours):
            o, h = ours[n], hf[n]
            same = sum(a == b for a, b in zip(o["generated"], h["generated"]))
            rows.append([c, str(n), fmt(o["prefill_tok_s"]), fmt(h["prefill_tok_s"]),
                         f"{o['prefill_tok_s']['best'] / h['prefill_tok_s']['best']:.2f}x",
                         fmt(o["decode_tok_s"]), fmt(h["decode_tok_s"]),
                         f"{o['decode_tok_s']['best'] / h['decode_tok_s']['best']:.2f}x",
                         f"{o['cpu_cores_busy']:.2f}/{h['cpu_cores_busy']:.2f}", f"{same}/{len(h['generated'])}"])
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(x.rjust(w[i]) if i > 1 else x.ljust(w[i]) for i, x in enumerate(r)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in rows:
        print(line(r))
EOF
