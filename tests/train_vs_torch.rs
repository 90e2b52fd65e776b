//! The train step against torch autograd (`tests/fixtures/hf/qwen3-next-tiny/train/` and the references
//! made by `scripts/make_test_references.sh`; `tiny-8layers-gqa4` is optional): gradients at the initial
//! params, then 3 steps of clipped AdamW with MaxText's hyper-parameters — loss and raw grad norm per step,
//! and the final params.

mod common;

use maxtext::autodiff::value_and_grad;
use maxtext::checkpoint::hf;
use maxtext::config::Config;
use maxtext::ir::Program;
use maxtext::pjrt::{open_client, Hardware};
use maxtext::program::{loss_function, train_program, LOSS_OUTPUTS};
use maxtext::runtime::{fresh_train_state, HostTensor, Runtime, Trainer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-12);
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64)) / scale
}

struct Fixture {
    model_dir: PathBuf,
    train_dir: PathBuf,
    reference: serde_json::Value,
    /// The same 3 steps in torch float64 (`scripts/make_f64_train_reference.py`), when made.
    f64_steps: Option<Vec<serde_json::Value>>,
}

fn fixture(model_dir: PathBuf, train_dir: PathBuf, f64_ref: PathBuf) -> Fixture {
    let r = train_dir.join("train_reference.json");
    let text = std::fs::read_to_string(&r).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
    let reference = serde_json::from_str(&text).unwrap();
    let f64_steps = std::fs::read_to_string(f64_ref)
        .ok()
        .map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap()["steps"].as_array().unwrap().clone());
    Fixture { model_dir, train_dir, reference, f64_steps }
}

fn config(fx: &Fixture, extra: &[&str]) -> Config {
    let (b, s) = batch_shape(fx);
    let mut o = hf::read_config_overrides(&fx.model_dir).unwrap();
    for kv in [
        "dtype=float32".to_string(),
        "weight_dtype=float32".into(),
        "learning_rate=1e-3".into(),
        "warmup_steps_fraction=0".into(),
        "learning_rate_final_fraction=1.0".into(),
        "adam_b1=0.9".into(),
        "adam_b2=0.95".into(),
        "adam_eps=1e-8".into(),
        "adam_eps_root=0".into(),
        "adam_weight_decay=0.1".into(),
        "gradient_clipping_threshold=1.0".into(),
        "z_loss_multiplier=0".into(),
        "steps=3".into(),
        format!("per_device_batch_size={b}"),
        format!("max_target_length={s}"),
        format!("max_prefill_predict_length={s}"),
    ] {
        o.push(kv);
    }
    o.extend(extra.iter().map(|s| s.to_string()));
    Config::load(Path::new("configs/base.yml"), &o).unwrap()
}

fn batch_shape(fx: &Fixture) -> (i64, i64) {
    let inputs = fx.reference["batch"]["inputs"].as_array().unwrap();
    (inputs.len() as i64, inputs[0].as_array().unwrap().len() as i64)
}

/// inputs, positions, segmentation, targets, targets_segmentation.
fn batch(fx: &Fixture) -> Vec<HostTensor> {
    let (b, s) = batch_shape(fx);
    let rows = |k: &str| -> Vec<i32> {
        fx.reference["batch"][k].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32)).collect()
    };
    let dims = [b, s];
    let pos: Vec<i32> = (0..b * s).map(|i| (i % s) as i32).collect();
    let ones = vec![1i32; (b * s) as usize];
    vec![
        HostTensor::from_i32(&rows("inputs"), &dims),
        HostTensor::from_i32(&pos, &dims),
        HostTensor::from_i32(&ones, &dims),
        HostTensor::from_i32(&rows("targets"), &dims),
        HostTensor::from_i32(&ones, &dims),
    ]
}

fn rt() -> Runtime {
    Runtime::new(open_client(Hardware::Cpu, None, Some(1)).unwrap())
}

/// HF-named tensors of a safetensors file, as f32.
fn hf_file(path: &Path) -> HashMap<String, Vec<f32>> {
    let ck = hf::HfCheckpoint::open(path.parent().unwrap()).ok();
    let _ = ck;
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())).collect()
}

fn check_grads(fx: &Fixture, extra: &[&str]) {
    let cfg = config(fx, extra);
    let (b, s) = batch_shape(fx);
    let (loss_fn, decls) = loss_function(&cfg, b, s);
    let n = decls.len();
    let f = value_and_grad(&loss_fn, &(5..5 + n).collect::<Vec<_>>());
    let params = hf::load_params(&fx.model_dir, &decls, &cfg.model).unwrap();
    let mut args = batch(fx);
    args.extend(params.iter().cloned());
    let out = rt().run(&Program::new("grads", f), &args).unwrap();
    let (loss_sum, weights) = (out[0].to_f64()[0], out[1].to_f64()[0]);
    let loss = loss_sum / (weights + 1e-8);
    let want_loss = fx.reference["loss"].as_f64().unwrap();
    assert!(((loss - want_loss) / want_loss).abs() < 1e-5, "loss {loss} vs torch {want_loss}");
    // d mean-loss / d params = d sum / weights; map back to HF names and compare with torch.
    let grads: Vec<HostTensor> = out[LOSS_OUTPUTS..].iter().map(|g| HostTensor::from_f32(&g.to_f32().iter().map(|v| (*v as f64 / (weights + 1e-8)) as f32).collect::<Vec<_>>(), &g.dims)).collect();
    let ours = hf::hf_tensors_for(&decls, &grads, &cfg.model).unwrap();
    let torch = hf_file(&fx.train_dir.join("grads.safetensors"));
    let mut worst = (0f64, String::new());
    let mut sq = 0f64;
    for (name, t) in &ours {
        let want = torch.get(name).unwrap_or_else(|| panic!("torch has no grad {name}"));
        let got = t.to_f32();
        sq += got.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        let e = if want.iter().all(|v| *v == 0.0) { got.iter().fold(0f64, |m, v| m.max(v.abs() as f64)) } else { rel_err(&got, want) };
        if e > worst.0 {
            worst = (e, name.clone());
        }
    }
    assert!(worst.0 < 1e-3, "gradient {} differs from torch by {:.2e} (relative to its max)", worst.1, worst.0);
    let norm = sq.sqrt();
    let want_norm = fx.reference["grad_global_norm_f64"].as_f64().unwrap();
    // Within 1e-4 of torch float32's norm, or (where float64 ground truth exists) no farther from the
    // float64 norm than 3x torch float32's own distance from it. Measured on `tiny-8layers-gqa4` with the
    // dropless MoE: float64 97.50673, torch float32 97.52329 (1.7e-4 off), ours 97.53675 (3.1e-4 off;
    // 97.52837 with the dense MoE, whose expert outputs are summed in another order).
    let near_torch = ((norm - want_norm) / want_norm).abs() < 1e-4;
    let near_truth = fx.f64_steps.as_ref().is_some_and(|t| {
        let exact = t[0]["raw_grad_norm"].as_f64().unwrap();
        (norm - exact).abs() <= 3.0 * (want_norm - exact).abs()
    });
    assert!(near_torch || near_truth, "grad norm {norm} vs torch {want_norm}");
}

/// `later_tol`: relative tolerance of loss and grad norm after the first update (see `other_shapes_match_torch`).
fn check_three_steps(fx: &Fixture, extra: &[&str], later_tol: f64) {
    let cfg = config(fx, extra);
    let (b, s) = batch_shape(fx);
    let tp = train_program(&cfg, b, s).unwrap();
    let params = hf::load_params(&fx.model_dir, &tp.decls, &cfg.model).unwrap();
    let state = fresh_train_state(&tp, params);
    let runtime = Runtime::new(open_client(Hardware::Cpu, None, Some(cfg.run.cpu_device_count as i64)).unwrap());
    let decls = tp.decls.clone();
    let mut trainer = Trainer::new(&runtime, tp, &state).unwrap();
    let steps = fx.reference["steps"].as_array().unwrap();
    for (k, want) in steps.iter().enumerate() {
        let out = trainer.step(&batch(fx)).unwrap();
        let (loss, raw) = (out.loss, out.raw_grad_norm);
        let (wl, wr) = (want["loss"].as_f64().unwrap(), want["raw_grad_norm_f64"].as_f64().unwrap());
        eprintln!("step {k}: loss {loss} (torch {wl}), raw grad norm {raw} (torch {wr})");
        match (&fx.f64_steps, k > 0 && later_tol < 0.01) {
            // After the first update, where float64 ground truth exists: at least as close to it as torch's
            // own float32 run is (or within 1e-4 of it).
            (Some(truth), true) => {
                for (what, ours, torch32) in [("loss", loss, wl), ("raw_grad_norm", raw, wr)] {
                    let exact = truth[k][what].as_f64().unwrap();
                    let allowed = ((torch32 - exact).abs() * 1.5).max(1e-4 * exact.abs());
                    let (d, dt) = ((ours - exact).abs(), (torch32 - exact).abs());
                    assert!(d <= allowed, "step {k}: {what} {ours} is {d:.2e} from the float64 value {exact}; torch float32 is {dt:.2e} from it ({extra:?})");
                }
            }
            // Otherwise within the tolerance of torch's value, or (where float64 ground truth exists) no
            // farther from the float64 value than 3x torch float32's own distance from it. Measured on
            // `tiny-8layers-gqa4` on this machine's XLA CPU codegen, dropless MoE: step 1 raw grad norm
            // float64 97.50673, torch float32 97.52329 (1.7e-4 off), ours 97.53658 (3.0e-4 off). After the
            // first update the loss is held to 1% (see `other_shapes_match_torch`): step 3 loss float64
            // 5.64741, torch float32 5.64071, ours 5.61594 dropless and 5.63160 dense — the same float32
            // noise-driven spread the perturbation experiment shows.
            (truth, _) => {
                let exact = |what: &str| truth.as_ref().map(|t| t[k][what].as_f64().unwrap());
                let near = |ours: f64, torch: f64, exact: Option<f64>, tol: f64| {
                    ((ours - torch) / torch).abs() < tol || exact.is_some_and(|e| (ours - e).abs() <= 3.0 * (torch - e).abs())
                };
                let tol = if k == 0 { 1e-4 } else { later_tol };
                assert!(near(loss, wl, exact("loss"), tol.min(1e-2)), "step {k}: loss {loss} vs torch {wl}, float64 {:?} ({extra:?})", exact("loss"));
                assert!(near(raw, wr, exact("raw_grad_norm"), tol), "step {k}: raw grad norm {raw} vs torch {wr}, float64 {:?} ({extra:?})", exact("raw_grad_norm"));
            }
        }
    }
    let state = trainer.state_to_host().unwrap();
    assert_eq!(state[1][0].to_i64()[0], steps.len() as i64, "optimizer count");
    let ours = hf::hf_tensors_for(&decls, &state[2], &cfg.model).unwrap();
    let torch = hf_file(&fx.train_dir.join("params_after_3_steps.safetensors"));
    // Relative L2 error per tensor (and over all params). Elementwise max-relative is not meaningful after
    // AdamW: elements whose gradient is at float32 noise level (|g| ~ 1e-7 against max |g| ~ 1e-1) get
    // updates of ±lr whose sign is that noise, in torch as much as here.
    let (mut d2, mut p2, mut worst) = (0f64, 0f64, (0f64, String::new()));
    for (name, t) in &ours {
        let (got, want) = (t.to_f32(), &torch[name]);
        let dd: f64 = got.iter().zip(want.iter()).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let pp: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        d2 += dd;
        p2 += pp;
        let e = (dd / pp.max(1e-30)).sqrt();
        if e > worst.0 {
            worst = (e, name.clone());
        }
    }
    let global = (d2 / p2).sqrt();
    eprintln!("params after {} steps vs torch: relative L2 error {global:.2e} overall, worst tensor {} {:.2e} ({extra:?})", steps.len(), worst.1, worst.0);
    assert!(global < later_tol.min(1e-3), "params after 3 steps differ from torch by {global:.2e} (relative L2) ({extra:?})");
    assert!(worst.0 < 10.0 * later_tol.min(1e-3), "param {} after 3 steps differs from torch by {:.2e} (relative L2) ({extra:?})", worst.1, worst.0);
}

fn tiny() -> Fixture {
    let dir = common::shipped("hf/qwen3-next-tiny");
    let f64_ref = common::shipped("hf/qwen3-next-tiny-train-f64.json");
    fixture(dir.clone(), dir.join("train"), f64_ref)
}

/// A reference of `scripts/make_test_references.sh` (model and train files in one folder), if present.
fn other(name: &str) -> Option<Fixture> {
    let dir = common::reference(&format!("hf/{name}"))?;
    Some(fixture(dir.clone(), dir.clone(), dir.join("train_reference_f64.json")))
}

#[test]
fn gradients_match_torch_autograd() {
    let fx = tiny();
    check_grads(&fx, &["scan_layers=true"]);
    check_grads(&fx, &["scan_layers=false"]);
}

/// `attention=flash` over the fixture's 32 tokens in query blocks of 8 and key blocks of 5 (the key loop,
/// shorter key blocks and the autodiff through both): torch's gradients, then its 3 AdamW steps.
#[test]
fn flash_attention_matches_torch() {
    let fx = tiny();
    let flash = ["scan_layers=true", "attention=flash", "sa_block_q=8", "sa_block_kv=5"];
    check_grads(&fx, &flash);
    check_three_steps(&fx, &flash, 1e-4);
}

#[test]
fn three_adamw_steps_match_torch_scanned() {
    let fx = tiny();
    check_three_steps(&fx, &["scan_layers=true"], 1e-4);
}

/// The same 3 steps with the model split over 4 devices, tensor=2 x expert=2 (the global batch stays the
/// fixture's: per_device_batch_size is fractional, as MaxText allows).
#[test]
fn three_adamw_steps_match_torch_tensor2_expert2() {
    let fx = tiny();
    let pdbs = format!("per_device_batch_size={}", batch_shape(&fx).0 as f64 / 4.0);
    check_three_steps(&fx, &["scan_layers=true", "cpu_device_count=4", "ici_fsdp_parallelism=1", "ici_tensor_parallelism=2", "ici_expert_parallelism=2", &pdbs], 1e-4);
}

#[test]
fn three_adamw_steps_match_torch_unscanned_with_accumulation() {
    let fx = tiny();
    check_three_steps(&fx, &["scan_layers=false", "gradient_accumulation_steps=2", "per_device_batch_size=2"], 1e-4);
}

/// Gradients at the initial params are held to the same tolerance as on the tiny reference. After the
/// first AdamW update every element moves by about ±lr whatever its gradient's size (m̂/√v̂ = g/|g| at
/// step 1), so elements whose gradient is at float32 noise level move in a direction that is noise, in
/// torch as much as here. On `tiny-8layers-gqa4` this is measured: torch itself, with its initial params
/// perturbed by 1e-7 (relative), gives a step-3 grad norm of 39.57 instead of 41.31 (and a re-run of torch
/// gives 41.34 at step 2 where the fixture recorded 41.40). So after step 1 the loss is held to 1% and
/// the grad norm to 10% (the loss also passes when it is no farther from the float64 value than 3x torch
/// float32's own distance from it: see `check_three_steps`).
#[test]
fn other_shapes_match_torch() {
    for name in ["tiny-8layers-gqa4", "tiny-interval2-ratio1"] {
        let Some(fx) = other(name) else { continue };
        check_grads(&fx, &["scan_layers=true"]);
        check_three_steps(&fx, &["scan_layers=true"], 0.1);
    }
}

/// `opt_type=adam_pax` (MaxText's bias correction folded into the moments) is AdamW's algebra when
/// `adam_eps_root=0`: the same 3 steps as torch's AdamW.
#[test]
fn three_adam_pax_steps_match_torch_adamw() {
    let fx = tiny();
    check_three_steps(&fx, &["scan_layers=true", "opt_type=adam_pax"], 1e-4);
}

/// One `opt_type=sgd` step (optax.sgd, no clipping, lr = 1) moves every parameter by minus torch's
/// gradient, and the state keeps no moments.
#[test]
fn one_sgd_step_is_minus_torch_gradient() {
    let fx = tiny();
    let cfg = config(&fx, &["scan_layers=true", "opt_type=sgd", "learning_rate=1.0", "gradient_clipping_threshold=0"]);
    let (b, s) = batch_shape(&fx);
    let tp = train_program(&cfg, b, s).unwrap();
    let params = hf::load_params(&fx.model_dir, &tp.decls, &cfg.model).unwrap();
    let before = hf::hf_tensors_for(&tp.decls, &params, &cfg.model).unwrap();
    let state = fresh_train_state(&tp, params);
    assert_eq!(state.len(), 3, "step, count, params: no moments");
    let decls = tp.decls.clone();
    let runtime = rt();
    let mut trainer = Trainer::new(&runtime, tp, &state).unwrap_or_else(|e| panic!("{e}"));
    let out = trainer.step(&batch(&fx)).unwrap();
    let want_loss = fx.reference["loss"].as_f64().unwrap();
    assert!(((out.loss - want_loss) / want_loss).abs() < 1e-5, "loss {} vs torch {want_loss}", out.loss);
    let state = trainer.state_to_host().unwrap();
    assert_eq!(state[1][0].to_i64()[0], 1, "optimizer count");
    let after = hf::hf_tensors_for(&decls, &state[2], &cfg.model).unwrap();
    let torch = hf_file(&fx.train_dir.join("grads.safetensors"));
    let (mut d2, mut g2) = (0f64, 0f64);
    for (name, p1) in &after {
        let p0 = before.iter().find(|(n, _)| n == name).map(|(_, t)| t.to_f32()).unwrap();
        let g = &torch[name];
        for ((a, b), g) in p1.to_f32().iter().zip(&p0).zip(g) {
            d2 += ((a - b) as f64 + *g as f64).powi(2);
            g2 += (*g as f64).powi(2);
        }
    }
    let rel = (d2 / g2).sqrt();
    eprintln!("one sgd step: |Δp + g_torch| / |g_torch| = {rel:.2e}");
    assert!(rel < 1e-3, "the sgd update differs from -lr·g by {rel:.2e} (relative L2)");
}
