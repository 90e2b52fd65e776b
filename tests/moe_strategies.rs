//! The three MoE strategies (reference §5): token dropping keeps exactly the copies MaxText's rule keeps
//! (a hand-built routing); with a capacity that drops nothing it equals dense, and dropless (blocked, and
//! by ragged dots as `megablox=false` / TPU run it) equals dense,
//! in the loss and every gradient, on a 64-expert top-8 model; the compiled forward of a 64-expert top-2
//! model does at most 0.35× the dense FLOPs with dropless and with `capacity_factor=1`; dropless equals
//! each copy through its own expert for even, crowded and sparse routings.
//! (check-logits against HF with each strategy: `tests/check_logits_cli.rs`.)

use maxtext::autodiff::value_and_grad;
use maxtext::config::Config;
use maxtext::ir::{DType, Graph, Program, TensorType};
use maxtext::nn::moe_dispatch::{capacity_positions, expert_capacity};
use maxtext::pjrt::{open_client, Hardware};
use maxtext::program::{forward_program, init_program, loss_function, param_decls, LOSS_OUTPUTS};
use maxtext::runtime::{HostTensor, Runtime};
use std::path::Path;

fn rt() -> Runtime {
    Runtime::new(open_client(Hardware::Cpu, None, Some(1)).unwrap())
}

fn config(extra: &[&str]) -> Config {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml");
    let mut args: Vec<String> = ["model_name=qwen3-next-tiny", "override_model_config=true", "vocab_size=512", "dtype=float32", "weight_dtype=float32", "matmul_precision=highest"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::load(&base, &args).unwrap()
}

#[test]
fn capacity_follows_maxtext() {
    // int(max(ceil(T·k / E) · cf, cf))
    assert_eq!(expert_capacity(4, 2, 3, 1.0), 3);
    assert_eq!(expert_capacity(4, 2, 3, 0.5), 1);
    assert_eq!(expert_capacity(128, 2, 64, 1.25), 5);
    assert_eq!(expert_capacity(10, 1, 64, 2.0), 2);
}

/// Priority: token position first, then the copy's rank in the top-k; a copy is kept while its expert's
/// count (1-based, in that order) is within the capacity.
#[test]
fn dropping_keeps_the_copies_maxtext_keeps() {
    // One row, 4 tokens, k=2, 3 experts, capacity 2.
    let idx = [0, 1, 0, 2, 1, 0, 0, 1];
    // Walk: (t0: e0 #1, e1 #1) (t1: e0 #2, e2 #1) (t2: e1 #2, e0 #3) (t3: e0 #4, e1 #3).
    let want_pos = [1, 1, 2, 1, 2, 3, 4, 3];
    let want_kept = [true, true, true, true, true, false, false, false];
    let g = Graph::new();
    let i = g.param(TensorType::new(DType::S32, &[1, 4, 2]));
    let (pos, kept) = capacity_positions(&i, 3, 2);
    let kept = kept.select(&g.full(1.0, DType::S32, &[1, 4, 2]), &g.zeros(DType::S32, &[1, 4, 2]));
    let out = rt().run(&Program::new("capacity", g.finish(&[pos, kept])), &[HostTensor::from_i32(&idx, &[1, 4, 2])]).unwrap();
    assert_eq!(out[0].to_i64(), want_pos.map(|v| v as i64).to_vec());
    assert_eq!(out[1].to_i64(), want_kept.map(|v| v as i64).to_vec());
}

/// (loss, gradients) of the training loss at random parameters for one strategy.
fn loss_and_grads(cfg: &Config, params: &[HostTensor], b: i64, s: i64) -> (f64, Vec<Vec<f32>>) {
    let (f, decls) = loss_function(cfg, b, s);
    let grad = value_and_grad(&f, &(5..5 + decls.len()).collect::<Vec<_>>());
    let tok: Vec<i32> = (0..b * s).map(|i| ((i * 37 + 11) % 512) as i32).collect();
    let tgt: Vec<i32> = (0..b * s).map(|i| ((i * 53 + 7) % 512) as i32).collect();
    let pos: Vec<i32> = (0..b * s).map(|i| (i % s) as i32).collect();
    let ones = vec![1i32; (b * s) as usize];
    let dims = [b, s];
    let mut args = vec![
        HostTensor::from_i32(&tok, &dims),
        HostTensor::from_i32(&pos, &dims),
        HostTensor::from_i32(&ones, &dims),
        HostTensor::from_i32(&tgt, &dims),
        HostTensor::from_i32(&ones, &dims),
    ];
    args.extend(params.iter().cloned());
    let out = rt().run(&Program::new("grads", grad), &args).unwrap();
    let weights = out[1].to_f64()[0];
    (out[0].to_f64()[0] / weights, out[LOSS_OUTPUTS..].iter().map(|g| g.to_f32()).collect())
}

#[test]
fn dropless_and_roomy_dropping_equal_dense_with_64_experts_top_8() {
    let model = ["num_experts=64", "num_experts_per_tok=8"];
    let with = |strategy: &[&str]| config(&[&model[..], strategy].concat());
    let dense = with(&["sparse_matmul=false"]);
    let decls = param_decls(&dense);
    let params = rt().run(&init_program(&dense, &decls, 7).unwrap(), &[]).unwrap();
    let (b, s) = (2, 24);
    let (want_loss, want) = loss_and_grads(&dense, &params, b, s);
    let strategies = [&["sparse_matmul=true"][..], &["sparse_matmul=true", "megablox=false"][..], &["sparse_matmul=false", "capacity_factor=8"][..]];
    for strategy in strategies {
        let (loss, grads) = loss_and_grads(&with(strategy), &params, b, s);
        assert!(((loss - want_loss) / want_loss).abs() < 1e-6, "{strategy:?}: loss {loss} vs dense {want_loss}");
        for ((d, g), w) in decls.iter().zip(&grads).zip(&want) {
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let err = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            assert!(err < 1e-4, "{strategy:?}: gradient of {} differs from dense by {err:.2e} of its max", d.path);
        }
    }
}

/// Compiled FLOPs (the plugin's cost analysis) of the forward pass for one strategy.
fn forward_flops(cfg: &Config) -> f64 {
    let fp = forward_program(cfg, 4, 256).unwrap();
    let exe = rt().compile(&fp.program).unwrap();
    exe.cost_analysis().unwrap()["flops"]
}

#[test]
fn sparse_strategies_cut_the_flops_of_64_experts_top_2() {
    // A wider expert MLP so that the routed experts dominate the forward, as in the real model.
    let model = ["num_experts=64", "num_experts_per_tok=2", "base_moe_mlp_dim=256", "base_mlp_dim=256"];
    let with = |strategy: &[&str]| config(&[&model[..], strategy].concat());
    let dense = forward_flops(&with(&["sparse_matmul=false"]));
    let dropless = forward_flops(&with(&["sparse_matmul=true"]));
    let dropping = forward_flops(&with(&["sparse_matmul=false", "capacity_factor=1"]));
    eprintln!("forward FLOPs: dense {dense:.4e}, dropless {dropless:.4e} ({:.3}x), dropping cf=1 {dropping:.4e} ({:.3}x)", dropless / dense, dropping / dense);
    assert!(dropless <= 0.35 * dense, "dropless {dropless:e} vs dense {dense:e}");
    assert!(dropping <= 0.35 * dense, "dropping {dropping:e} vs dense {dense:e}");
}

/// With the experts over 8 devices (`ici_expert_parallelism=8`), each device holds 1/8 of the expert
/// weights and dropless computes about 1/8 of the blocks (per-device FLOPs of the forward against one
/// device, the non-MoE rest replicated).
#[test]
fn expert_parallel_dropless_splits_the_experts_and_their_work() {
    let model = ["num_experts=64", "num_experts_per_tok=2", "base_moe_mlp_dim=256", "base_mlp_dim=256"];
    let flops_on = |devices: i64, extra: &[&str]| {
        let batch = format!("per_device_batch_size={}", 8 / devices);
        let count = format!("cpu_device_count={devices}");
        let cfg = config(&[&model[..], &[batch.as_str(), count.as_str()], extra].concat());
        let fp = forward_program(&cfg, 8, 128).unwrap();
        let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(devices)).unwrap());
        let exe = rt.compile(&fp.program).unwrap();
        (fp, exe.cost_analysis().unwrap()["flops"])
    };
    let (_, one) = flops_on(1, &[]);
    let (fp, eight) = flops_on(8, &["ici_expert_parallelism=8"]);
    eprintln!("dropless forward FLOPs per device: 1 device {one:.4e}, expert=8 {eight:.4e} ({:.3}x)", eight / one);
    assert!(eight <= 0.2 * one, "per-device FLOPs {eight:e} on 8 devices vs {one:e} on one");
    for (i, d) in fp.decls.iter().enumerate().filter(|(_, d)| d.path.contains("routed_experts/wi_")) {
        let arg = fp.program.args("params").nth(i).unwrap();
        let sharding = fp.program.arg_shardings[arg].as_ref().unwrap();
        assert!(format!("{sharding:?}").contains("expert"), "{} is not split over the expert axis: {sharding:?}", d.path);
    }
}

/// `maxtext train` reports the dropped fraction: none with a roomy capacity; with `capacity_factor=0.5`
/// each expert takes at most half of a balanced share, so at least half of the copies are dropped.
#[test]
fn train_reports_the_dropped_fraction() {
    let run = |cf: &str| -> f64 {
        let out = std::env::temp_dir().join(format!("maxtext_drop_{}_{cf}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let metrics = out.join("m.jsonl");
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_maxtext"))
            .args(["train", "configs/base.yml", "model_name=qwen3-next-tiny", "override_model_config=true", "vocab_size=1024", "run_name=drop"])
            .args(["dataset_type=synthetic", "per_device_batch_size=2", "max_target_length=32", "max_prefill_predict_length=32", "steps=1"])
            .args(["enable_checkpointing=false", "sparse_matmul=false", &format!("capacity_factor={cf}")])
            .arg(format!("base_output_directory={}", out.display()))
            .arg(format!("metrics_file={}", metrics.display()))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&metrics).unwrap().lines().next().unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        line["learning/moe_dropped_fraction"].as_f64().unwrap()
    };
    assert_eq!(run("100"), 0.0);
    let f = run("0.5");
    assert!((0.5..1.0).contains(&f), "dropped fraction {f} with capacity_factor=0.5");
}

/// The dropless layout against each copy multiplied by its own expert's weights, for routings that fill
/// the home blocks evenly, crowd every copy onto one expert (the overflow region at its bound), and
/// leave most experts empty; and for a single token (the per-copy path of decode steps). The same for the
/// ragged-dot path (`megablox=false`; its dense formulation here, `chlo.ragged_dot` on TPU).
#[test]
fn dropless_equals_per_copy_experts_for_any_routing() {
    use maxtext::config::GroupedMatmul;
    use maxtext::nn::moe_dispatch::{dropless, ExpertWeights};
    let (e, m, f, k) = (8i64, 16i64, 8i64, 2i64);
    let check = |b: i64, s: i64, idx: Vec<i32>, kernel: GroupedMatmul| {
        let n = b * s * k;
        let g = Graph::new();
        let x = g.param(TensorType::new(DType::F32, &[b, s, m])).named(&["batch", "seq", "embed"]);
        let ids = g.param(TensorType::new(DType::S32, &[b, s, k]));
        let w = g.param(TensorType::new(DType::F32, &[b, s, k]));
        let wi_0 = g.param(TensorType::new(DType::F32, &[e, m, f])).named(&["exp", "embed", "mlp_moe"]);
        let wi_1 = g.param(TensorType::new(DType::F32, &[e, m, f])).named(&["exp", "embed", "mlp_moe"]);
        let wo = g.param(TensorType::new(DType::F32, &[e, f, m])).named(&["exp", "mlp_moe", "embed"]);
        let ew = ExpertWeights { wi_0: &wi_0, wi_1: &wi_1, wo: &wo, activations_in_float32: false };
        let got = dropless(&x, &ids, &w, &ew, kernel).reshape(&[b * s * m]);
        let pseudo = |len: i64, seed: i64| -> Vec<f32> { (0..len).map(|i| (((i * 7919 + seed * 104729) % 2001) as f32 / 1000.0 - 1.0) * 0.5).collect() };
        let args = [
            HostTensor::from_f32(&pseudo(b * s * m, 1), &[b, s, m]),
            HostTensor::from_i32(&idx, &[b, s, k]),
            HostTensor::from_f32(&pseudo(n, 2), &[b, s, k]),
            HostTensor::from_f32(&pseudo(e * m * f, 3), &[e, m, f]),
            HostTensor::from_f32(&pseudo(e * m * f, 4), &[e, m, f]),
            HostTensor::from_f32(&pseudo(e * f * m, 5), &[e, f, m]),
        ];
        let out = rt().run(&Program::new("dropless", g.finish(&[got])), &args).unwrap()[0].to_f32();
        // The reference on the host: y[t] = Σ_k w[t,k] · (silu(x W0[e]) ⊙ (x W1[e])) Wo[e].
        let (xs, ws, w0, w1, w2) = (args[0].to_f32(), args[2].to_f32(), args[3].to_f32(), args[4].to_f32(), args[5].to_f32());
        for t in 0..(b * s) as usize {
            for j in 0..m as usize {
                let mut want = 0f64;
                for c in 0..k as usize {
                    let ex = idx[t * k as usize + c] as usize;
                    let mut acc = 0f64;
                    for h in 0..f as usize {
                        let (mut h0, mut h1) = (0f64, 0f64);
                        for i in 0..m as usize {
                            let xv = xs[t * m as usize + i] as f64;
                            h0 += xv * w0[(ex * m as usize + i) * f as usize + h] as f64;
                            h1 += xv * w1[(ex * m as usize + i) * f as usize + h] as f64;
                        }
                        acc += h0 / (1.0 + (-h0).exp()) * h1 * w2[(ex * f as usize + h) * m as usize + j] as f64;
                    }
                    want += ws[t * k as usize + c] as f64 * acc;
                }
                let got = out[t * m as usize + j] as f64;
                assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "{kernel:?}, token {t}, column {j}: {got} vs {want} (routing {idx:?})");
            }
        }
    };
    let (b, s) = (2, 16); // 64 copies over 8 experts: blocks of 8 rows
    for kernel in [GroupedMatmul::Blocks, GroupedMatmul::RaggedDot { native: false }] {
        check(b, s, (0..b * s * k).map(|i| (i % e) as i32).collect(), kernel);
        check(b, s, (0..b * s * k).map(|i| if i % 2 == 0 { 5 } else { 2 }).collect(), kernel);
        check(b, s, (0..b * s * k).map(|i| [3, 7][(i / 5 % 2) as usize]).collect(), kernel);
        check(b, s, vec![4; (b * s * k) as usize], kernel);
        check(1, 1, vec![6, 1], kernel);
    }
}
