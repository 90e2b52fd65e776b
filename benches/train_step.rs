//! Train-step time, tokens/s and MFU for the tiny and "small" Qwen3-Next configs on the XLA CPU plugin,
//! next to the forward pass of the same batch run in the same process (the ratio train/forward shows the
//! cost of the backward pass and the optimizer; ~3x is the usual target).
//!
//! Run: `cargo bench --bench train_step` (env `TRAIN_BENCH_STEPS`, default 5 timed steps per config).

use maxtext::config::Config;
use maxtext::metrics::{mfu, training_tflops_per_device, CPU_NOMINAL_PEAK_TFLOPS};
use maxtext::pjrt::{open_client, Hardware};
use maxtext::program::{forward_program, train_program};
use maxtext::runtime::{fresh_train_state, init_params, HostTensor, Runtime, Trainer};
use std::path::Path;
use std::time::{Duration, Instant};

fn config(extra: &[&str]) -> Config {
    let o: Vec<String> = ["override_model_config=true", "dtype=float32", "weight_dtype=float32", "steps=100"].iter().chain(extra).map(|s| s.to_string()).collect();
    Config::load(Path::new("configs/base.yml"), &o).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(name: &str, cfg: &Config, batch: i64, seq: i64, steps: usize) {
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(1)).unwrap());
    let vocab = cfg.model.vocab_size as i32;
    let tokens: Vec<i32> = (0..batch * seq).map(|i| ((i * 7919) % vocab as i64) as i32).collect();
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

    let t = Instant::now();
    let tp = train_program(cfg, batch, seq).unwrap();
    let params = init_params(&tp.decls, 0);
    let state = fresh_train_state(&tp, params.clone());
    let mut trainer = Trainer::new(&rt, tp, &state).unwrap();
    let compile_train = t.elapsed();
    trainer.step(&batch_in).unwrap(); // first run (thread pool warm-up)
    let train: Vec<Duration> = (0..steps)
        .map(|_| {
            let t = Instant::now();
            trainer.step(&batch_in).unwrap();
            t.elapsed()
        })
        .collect();

    let fp = forward_program(cfg, batch, seq).unwrap();
    let mut args = vec![batch_in[0].clone(), batch_in[1].clone()];
    args.extend(params);
    let t = Instant::now();
    rt.run(&fp.program, &args).unwrap();
    let compile_fwd = t.elapsed();
    let fwd: Vec<Duration> = (0..steps)
        .map(|_| {
            let t = Instant::now();
            rt.run(&fp.program, &args).unwrap();
            t.elapsed()
        })
        .collect();

    let (tr, fw) = (median(train), median(fwd));
    let tokens_per_s = (batch * seq) as f64 / tr.as_secs_f64();
    let tflops = training_tflops_per_device(cfg, batch as usize, seq as usize, 1) / tr.as_secs_f64();
    println!(
        "{name:>6}: {:>6.2} M params, batch {batch}x{seq}: train step {:>8.1} ms (compile {:.1} s), forward {:>7.1} ms (compile+first run {:.1} s), train/forward {:.2}x, {:>8.0} tokens/s, {:.4} TFLOP/s, MFU {:.2}% of a nominal {CPU_NOMINAL_PEAK_TFLOPS} TFLOP/s CPU",
        fp.num_params() as f64 / 1e6,
        tr.as_secs_f64() * 1e3,
        compile_train.as_secs_f64(),
        fw.as_secs_f64() * 1e3,
        compile_fwd.as_secs_f64(),
        tr.as_secs_f64() / fw.as_secs_f64(),
        tokens_per_s,
        tflops,
        100.0 * mfu(tflops, CPU_NOMINAL_PEAK_TFLOPS),
    );
}

fn main() {
    let steps: usize = std::env::var("TRAIN_BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    println!("train_step: median of {steps} steps, XLA CPU plugin, 1 device, float32, host-side forward copies params each run");
    let tiny = config(&["model_name=qwen3-next-tiny", "vocab_size=1024"]);
    bench("tiny", &tiny, 4, 128, steps);
    // "small": the make_hf_reference.py preset (hidden 512, 8 layers, 32 experts top-4).
    let small = config(&[
        "model_name=qwen3-next-tiny",
        "vocab_size=4096",
        "base_emb_dim=512",
        "base_num_decoder_layers=8",
        "base_num_query_heads=8",
        "base_num_kv_heads=2",
        "head_dim=64",
        "gdn_num_key_heads=4",
        "gdn_num_value_heads=8",
        "gdn_key_head_dim=64",
        "gdn_value_head_dim=64",
        "num_experts=32",
        "num_experts_per_tok=4",
        "base_moe_mlp_dim=128",
        "base_mlp_dim=128",
        "shared_expert_mlp_dim=128",
        "rope_max_timescale=10000000",
    ]);
    bench("small", &small, 2, 128, steps);
}
