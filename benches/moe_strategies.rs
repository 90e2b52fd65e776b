//! Train-step and prefill time of the three MoE strategies side by side, on one config with 64 experts
//! top-8 (hidden 256, expert MLP 256, 4 layers), in one process on the XLA CPU plugin (1 device, f32),
//! each with its compiled FLOPs; ratios against dense.
//!
//! Run: `cargo bench --bench moe_strategies` (env `MOE_BENCH_STEPS`, default 3 timed runs each).

use maxtext::config::Config;
use maxtext::pjrt::{open_client, Hardware};
use maxtext::program::{prefill_program, train_program};
use maxtext::runtime::{fresh_train_state, init_params, HostTensor, Runtime, Trainer};
use std::path::Path;
use std::time::{Duration, Instant};

const MODEL: [&str; 12] = [
    "model_name=qwen3-next-tiny",
    "override_model_config=true",
    "vocab_size=1024",
    "base_emb_dim=256",
    "num_experts=64",
    "num_experts_per_tok=8",
    "base_moe_mlp_dim=256",
    "base_mlp_dim=256",
    "dtype=float32",
    "weight_dtype=float32",
    "steps=100",
    "max_prefill_predict_length=512",
];

fn config(strategy: &[&str]) -> Config {
    let o: Vec<String> = MODEL.iter().chain(strategy).map(|s| s.to_string()).collect();
    Config::load(Path::new("configs/base.yml"), &o).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    median((0..runs).map(|_| {
        let t = Instant::now();
        f();
        t.elapsed()
    }).collect())
}

/// (train step, prefill, train FLOPs) for one strategy.
fn bench(rt: &Runtime, cfg: &Config, batch: i64, seq: i64, runs: usize) -> (Duration, Duration, f64) {
    let tokens: Vec<i32> = (0..batch * seq).map(|i| ((i * 7919) % 1024) as i32).collect();
    let pos: Vec<i32> = (0..batch * seq).map(|i| (i % seq) as i32).collect();
    let ones = vec![1i32; (batch * seq) as usize];
    let dims = [batch, seq];
    let batch_in = vec![
        HostTensor::from_i32(&tokens, &dims),
        HostTensor::from_i32(&pos, &dims),
        HostTensor::from_i32(&ones, &dims),
        HostTensor::from_i32(&tokens, &dims),
        HostTensor::from_i32(&ones, &dims),
    ];
    let tp = train_program(cfg, batch, seq).unwrap();
    let params = init_params(&tp.decls, 0);
    let flops = rt.compile(&tp.program).unwrap().cost_analysis().unwrap()["flops"];
    let state = fresh_train_state(&tp, params.clone());
    let mut trainer = Trainer::new(rt, tp, &state).unwrap();
    let train = timed(runs, || {
        trainer.step(&batch_in).unwrap();
    });
    let pp = prefill_program(cfg, batch, seq, seq).unwrap();
    let mut args = vec![batch_in[0].clone(), batch_in[1].clone(), batch_in[2].clone(), HostTensor::from_i32(&vec![seq as i32; batch as usize], &[batch])];
    args.push(HostTensor::from_bytes(maxtext::ir::DType::U64, &[2], vec![0u8; 16]));
    args.extend(params);
    let exe = rt.compile(&pp.program).unwrap();
    let inputs = rt.upload_group(&pp.program, &exe, "inputs", &args[..4]).unwrap();
    let params = rt.upload_group(&pp.program, &exe, "params", &args[5..]).unwrap();
    let prefill = timed(runs, || {
        // The rng is donated to each run's results: a fresh one each time.
        let rng = rt.upload_group(&pp.program, &exe, "rng", &args[4..5]).unwrap();
        let outs = rt.execute(&pp.program, &exe, &[("inputs", &inputs), ("rng", &rng), ("params", &params)]).unwrap();
        rt.download_group(&pp.program, &outs, "token").unwrap();
    });
    (train, prefill, flops)
}

fn main() {
    let runs: usize = std::env::var("MOE_BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(1)).unwrap());
    let (batch, seq) = (2, 256);
    println!("moe_strategies: 64 experts top-8, hidden 256, expert MLP 256, 4 layers, batch {batch}x{seq}, f32, 1 CPU device, median of {runs}");
    let strategies: [(&str, &[&str]); 3] = [
        ("dense", &["sparse_matmul=false"]),
        ("dropping (capacity_factor=1)", &["sparse_matmul=false", "capacity_factor=1"]),
        ("dropless", &["sparse_matmul=true"]),
    ];
    let mut base = None;
    for (name, keys) in strategies {
        let (train, prefill, flops) = bench(&rt, &config(keys), batch, seq, runs);
        let (bt, bp, bf) = *base.get_or_insert((train, prefill, flops));
        println!(
            "{name:>30}: train step {:>8.1} ms ({:.2}x dense), prefill {:>7.1} ms ({:.2}x), train FLOPs {flops:.3e} ({:.3}x)",
            train.as_secs_f64() * 1e3,
            train.as_secs_f64() / bt.as_secs_f64(),
            prefill.as_secs_f64() * 1e3,
            prefill.as_secs_f64() / bp.as_secs_f64(),
            flops / bf,
        );
    }
}
