//! Prefill and greedy-decode throughput of an HF Qwen3-Next checkpoint on the XLA CPU plugin (1 device,
//! batch 1, float32), for comparison with `scripts/bench_hf_decode.py` (HF transformers, torch CPU) on the
//! same model and prompts; `scripts/bench_decode.sh` runs both and prints the table.
//!
//! Run: `cargo bench --bench decode_vs_hf -- --hf-dir DIR [--prompt-lengths 16,128] [--new 32] [--reps 5]`
//! (or the environment: `DECODE_BENCH_HF_DIR`, `DECODE_BENCH_PROMPT_LENGTHS`, `DECODE_BENCH_NEW`,
//! `DECODE_BENCH_REPS`, and `DECODE_BENCH_OVERRIDES="key=value ..."` for extra config keys).
//!
//! Per prompt length: one Generator whose caches hold exactly prompt + new tokens (`max_target_length`),
//! one untimed warm-up generation (compiles the prefill bucket and the decode step, first-touch of the
//! buffers), then `reps` timed generations. Figures, per repetition:
//! - prefill: prompt tokens / time from the start of prefill to the first generated token on the host
//!   (inputs to device, prefill, on-device argmax, token back);
//! - decode: (new - 1) tokens / time from the first token on the host to the last one (each step feeds the
//!   previous token, runs the decode step, brings the next token back).
//!
//! Prompts: the prompt of that length in `DIR/golden_logits.jsonl` (as written by make_hf_reference.py
//! with `--prompt-lengths`), else `(7919 i + 17) mod vocab`; the Python script picks them the same way.
//! Prints one JSON line on stdout.

use maxtext::checkpoint::hf;
use maxtext::config::Config;
use maxtext::pjrt::{open_client, Hardware};
use maxtext::runtime::{Generator, Runtime};
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Args {
    hf_dir: PathBuf,
    prompt_lengths: Vec<usize>,
    new_tokens: usize,
    reps: usize,
    overrides: Vec<String>,
}

fn args() -> Args {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut hf_dir = env("DECODE_BENCH_HF_DIR");
    let mut lengths = env("DECODE_BENCH_PROMPT_LENGTHS").unwrap_or_else(|| "16,128".into());
    let mut new = env("DECODE_BENCH_NEW").unwrap_or_else(|| "32".into());
    let mut reps = env("DECODE_BENCH_REPS").unwrap_or_else(|| "5".into());
    let mut overrides: Vec<String> = env("DECODE_BENCH_OVERRIDES").map(|s| s.split_whitespace().map(String::from).collect()).unwrap_or_default();
    // `cargo bench` appends `--bench`; everything else is ours.
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--hf-dir" => hf_dir = Some(value()),
            "--prompt-lengths" => lengths = value(),
            "--new" => new = value(),
            "--reps" => reps = value(),
            kv if kv.contains('=') => overrides.push(kv.to_string()),
            other => panic!("unknown argument {other:?} (--hf-dir DIR --prompt-lengths 16,128 --new 32 --reps 5 key=value...)"),
        }
    }
    let hf_dir = hf_dir.map(PathBuf::from).unwrap_or_else(|| {
        panic!("give the HF model dir: --hf-dir DIR or DECODE_BENCH_HF_DIR (scripts/bench_decode.sh makes them)")
    });
    Args {
        hf_dir,
        prompt_lengths: lengths.split(',').map(|s| s.trim().parse().expect("prompt length")).collect(),
        new_tokens: new.parse().expect("--new"),
        reps: reps.parse::<usize>().expect("--reps").max(1),
        overrides,
    }
}

/// The prompt of `len` tokens from `golden_logits.jsonl`, else the arithmetic fallback.
fn prompt(dir: &Path, len: usize, vocab: usize) -> (Vec<i64>, &'static str) {
    if let Ok(text) = std::fs::read_to_string(dir.join("golden_logits.jsonl")) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("golden_logits.jsonl line");
            let tokens: Vec<i64> = serde_json::from_value(v["tokens"].clone()).expect("tokens");
            if tokens.len() == len {
                return (tokens, "golden_logits.jsonl");
            }
        }
    }
    ((0..len).map(|i| ((7919 * i + 17) % vocab) as i64).collect(), "(7919*i+17)%vocab")
}

/// Seconds of CPU (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // USER_HZ is 100 on Linux
}

fn best_median(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) };
    serde_json::json!({ "best": v[n - 1], "median": median, "all": v })
}

fn main() {
    let a = args();
    let t_load = Instant::now();
    let base = hf::read_config_overrides(&a.hf_dir).expect("config.json");
    let config = |len: usize| {
        let mut o = base.clone();
        o.extend(
            [
                "dtype=float32".to_string(),
                "weight_dtype=float32".into(),
                "per_device_batch_size=1".into(),
                "cpu_device_count=1".into(),
                format!("max_prefill_predict_length={len}"),
                // The caches hold exactly the prompt and the new tokens (+1: the last token is never fed back).
                format!("max_target_length={}", len + a.new_tokens + 1),
            ]
            .into_iter()
            .chain(a.overrides.iter().cloned()),
        );
        Config::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/base.yml")), &o).expect("config")
    };
    let cfg0 = config(a.prompt_lengths[0]);
    let decls = maxtext::program::param_decls(&cfg0);
    let params = hf::load_params(&a.hf_dir, &decls, &cfg0.model).expect("HF params");
    let n_params: usize = params.iter().map(|p| p.dims.iter().product::<i64>() as usize).sum();
    let load_s = t_load.elapsed().as_secs_f64();
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(1)).expect("CPU PJRT client"));

    let mut results = Vec::new();
    for &len in &a.prompt_lengths {
        let cfg = config(len);
        let (tokens, source) = prompt(&a.hf_dir, len, cfg.model.vocab_size);
        let prompts = vec![tokens];
        let t_warm = Instant::now();
        let gen = Generator::new(&rt, &cfg, &params).expect("generator");
        let warm = gen.generate(&prompts, a.new_tokens, &[], false, |_| {}).expect("warm-up generation");
        let warmup_s = t_warm.elapsed().as_secs_f64();
        let (mut prefill, mut decode, mut ttft_ms) = (Vec::new(), Vec::new(), Vec::new());
        let (cpu0, wall0) = (cpu_seconds(), Instant::now());
        for _ in 0..a.reps {
            let g = gen.generate(&prompts, a.new_tokens, &[], false, |_| {}).expect("generation");
            assert_eq!(g.generated[0], warm.generated[0], "greedy decoding is not deterministic");
            assert_eq!(g.generated[0].len(), a.new_tokens, "generation stopped early");
            // decode_time starts when prefill returns; the wait for its first token belongs to prefill.
            let decode_time = g.decode_time.saturating_sub(g.first_token_time.saturating_sub(g.prefill_time));
            prefill.push(len as f64 / g.first_token_time.as_secs_f64());
            decode.push(g.decode_steps as f64 / decode_time.as_secs_f64());
            ttft_ms.push(g.first_token_time.as_secs_f64() * 1e3);
        }
        let cpu_util = (cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64();
        eprintln!(
            "decode_vs_hf: prompt {len}: prefill {:.0} tok/s, decode {:.1} tok/s (best of {}), warm-up {warmup_s:.1} s, {:.2} cores busy",
            prefill.iter().cloned().fold(0.0, f64::max),
            decode.iter().cloned().fold(0.0, f64::max),
            a.reps,
            cpu_util
        );
        results.push(serde_json::json!({
            "prompt_len": len,
            "prompt_source": source,
            "new_tokens": a.new_tokens,
            "decode_tokens_timed": a.new_tokens - 1,
            "prefill_bucket": maxtext::runtime::prefill_bucket(len, len),
            "prefill_tok_s": best_median(prefill),
            "decode_tok_s": best_median(decode),
            "ttft_ms_min": ttft_ms.iter().cloned().fold(f64::INFINITY, f64::min),
            "warmup_s": warmup_s,
            "cpu_cores_busy": cpu_util,
            "generated": warm.generated[0],
        }));
    }
    let out = serde_json::json!({
        "impl": "maxtext-rs",
        "backend": "XLA CPU PJRT plugin, 1 device",
        "xla_flags": std::env::var("XLA_FLAGS").unwrap_or_default(),
        "model_dir": a.hf_dir.display().to_string(),
        "n_params": n_params,
        "dtype": "float32",
        "batch": 1,
        "reps": a.reps,
        "scan_layers": cfg0.compute.scan_layers,
        "load_s": load_s,
        "results": results,
    });
    println!("{out}");
}
