//! `cargo bench --bench serve_load`: whole-process figures for the tiny model (random weights, f32, CPU):
//! 1. `maxtext decode` host overhead per token: the same command with 32 and 288 new tokens (median of
//!    3 runs each). The wall-clock slope per extra token, less the slope of the device time the command
//!    reports (each step's execute to its token on the host, times the steps), is what the host adds per
//!    token; the longer run also has a 5x longer KV cache (max_target_length), so its steps cost more.
//! 2. `maxtext serve` (32-row decode batch) under concurrency 1, 8 and 32 on loopback: requests/s and
//!    generated tokens/s (32-token prompts, 32 new tokens each, greedy).

#[path = "../tests/serve_common/mod.rs"]
mod serve_common;

use std::process::Command;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_maxtext");

fn prompt(seed: usize) -> Vec<i64> {
    (0..32).map(|i| ((i * 37 + seed * 101 + 100) % 150000) as i64).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// (wall seconds, device ms per step, decode-loop seconds) of one `maxtext decode` run with `new` new tokens.
fn decode_run(new: usize) -> (f64, f64, f64) {
    let ids = prompt(0).iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .args(["decode", "model_name=qwen3-next-tiny", "per_device_batch_size=1", "max_prefill_predict_length=32"])
        .arg(format!("prompt_token_ids={ids}"))
        .arg(format!("max_target_length={}", 32 + new))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running maxtext decode");
    let wall = t0.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let device_ms = err
        .lines()
        .find_map(|l| l.strip_prefix("decode step: ").and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok()))
        .expect("decode prints its device step time");
    // "decode N steps: X tokens/s": the loop took N / X seconds (one row).
    let loop_s = err
        .lines()
        .find_map(|l| {
            let r = l.split("decode ").nth(1)?;
            let steps: f64 = r.split_whitespace().next()?.parse().ok()?;
            let tps: f64 = r.split("steps: ").nth(1)?.split_whitespace().next()?.parse().ok()?;
            Some(steps / tps)
        })
        .expect("decode prints its tokens/s");
    (wall, device_ms, loop_s)
}

fn decode_overhead() {
    let runs = |n| (0..3).map(|_| decode_run(n)).collect::<Vec<_>>();
    let (short, long) = (runs(32), runs(288));
    let med = |r: &Vec<(f64, f64, f64)>, f: fn(&(f64, f64, f64)) -> f64| median(r.iter().map(f).collect());
    let (ws, wl) = (med(&short, |x| x.0), med(&long, |x| x.0));
    let (ls, ll) = (med(&short, |x| x.2), med(&long, |x| x.2));
    // Device seconds of the decode loop: steps (new tokens - 1) x ms per step.
    let (ds, dl) = (med(&short, |x| x.1 * 31.0 / 1e3), med(&long, |x| x.1 * 287.0 / 1e3));
    let per = |a: f64, b: f64| (b - a) * 1e3 / 256.0;
    println!("maxtext decode (tiny, whole process, median of 3): 32 new tokens {ws:.2} s, 288 new tokens {wl:.2} s");
    println!(
        "  wall slope {:.2} ms/token = device {:.2} + host in the loop {:.3} + outside the loop {:.2} (startup, compile for a 64- vs 320-position cache, prefill: {:.2} s vs {:.2} s)",
        per(ws, wl),
        per(ds, dl),
        per(ls - ds, ll - dl),
        per(ws - ls, wl - ll),
        ws - ls,
        wl - ll
    );
    println!("  host overhead per token beyond the device step: {:.3} ms in the loop", per(ls - ds, ll - dl));
}

fn serve_load() {
    let server = serve_common::Server::start(
        BIN,
        &["model_name=qwen3-next-tiny", "per_device_batch_size=32", "max_target_length=96", "max_prefill_predict_length=32", "--max-queue", "1024"],
    );
    let body = |k: usize| serde_json::json!({"prompt": prompt(k), "max_tokens": 32, "temperature": 0}).to_string();
    // Warm-up: compiles the prefill bucket.
    assert_eq!(server.post("/v1/completions", &body(0)).0, 200);
    println!("maxtext serve (tiny, 32-row decode batch, 32-token prompts, 32 new tokens, greedy):");
    println!("{:>12} {:>10} {:>12} {:>12} {:>14}", "concurrency", "requests", "seconds", "requests/s", "new tokens/s");
    for conc in [1usize, 8, 32] {
        let per_client = if conc == 1 { 8 } else { 4 };
        let t0 = Instant::now();
        let handles: Vec<_> = (0..conc)
            .map(|c| {
                let addr = server.addr.clone();
                let bodies: Vec<String> = (0..per_client).map(|k| body(c * 100 + k + 1)).collect();
                std::thread::spawn(move || {
                    let mut tokens = 0u64;
                    for b in bodies {
                        let (status, text) = serve_common::request(&addr, "POST", "/v1/completions", &b);
                        assert_eq!(status, 200, "{text}");
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                        tokens += v["usage"]["completion_tokens"].as_u64().unwrap();
                    }
                    tokens
                })
            })
            .collect();
        let tokens: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let secs = t0.elapsed().as_secs_f64();
        let n = conc * per_client;
        println!("{conc:>12} {n:>10} {secs:>12.2} {:>12.2} {:>14.1}", n as f64 / secs, tokens as f64 / secs);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let only = std::env::var("SERVE_LOAD_ONLY").unwrap_or_default();
    if only != "serve" {
        decode_overhead();
    }
    if only != "decode" {
        serve_load();
    }
}
