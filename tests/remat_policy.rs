//! `remat_policy`: every built policy trains exactly as `full` does (only what the backward pass keeps
//! differs), on the real CPU plugin, against torch's first step; the compiled train step's temporaries
//! grow with what a policy keeps (`maxtext export-hlo program=train`); unbuilt values are refused.

mod common;

use maxtext::checkpoint::hf;
use maxtext::config::Config;
use maxtext::pjrt::{open_client, Hardware};
use maxtext::program::train_program;
use maxtext::runtime::{fresh_train_state, HostTensor, Runtime, Trainer};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shipped torch reference with three scanned blocks (6 layers, full attention every second layer), so
/// the layer loop runs more than once.
fn fixture_dir() -> PathBuf {
    common::shipped("hf/tiny-interval2-ratio1")
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("train_reference.json")).unwrap()).unwrap()
}

/// One step whose update is (almost exactly) minus the raw gradient: no clipping, no weight decay, and at
/// step 1 AdamW moves by lr·g/(|g| + eps) = g/(1 + |g|/1000) with lr = eps = 1000, so the params after the
/// step show every gradient element.
fn config(reference: &serde_json::Value, extra: &[&str]) -> Config {
    let inputs = reference["batch"]["inputs"].as_array().unwrap();
    let (b, s) = (inputs.len(), inputs[0].as_array().unwrap().len());
    let mut o = hf::read_config_overrides(&fixture_dir()).unwrap();
    for kv in [
        "dtype=float32",
        "weight_dtype=float32",
        "learning_rate=1000",
        "adam_eps=1000",
        "adam_eps_root=0",
        "adam_weight_decay=0",
        "gradient_clipping_threshold=0",
        "warmup_steps_fraction=0",
        "learning_rate_final_fraction=1.0",
        "z_loss_multiplier=0",
        "steps=1",
    ] {
        o.push(kv.to_string());
    }
    o.extend([format!("per_device_batch_size={b}"), format!("max_target_length={s}"), format!("max_prefill_predict_length={s}")]);
    o.extend(extra.iter().map(|s| s.to_string()));
    Config::load(Path::new("configs/base.yml"), &o).unwrap()
}

fn batch(reference: &serde_json::Value) -> Vec<HostTensor> {
    let rows = |k: &str| -> Vec<Vec<i32>> {
        reference["batch"][k].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect()).collect()
    };
    let (inputs, targets) = (rows("inputs"), rows("targets"));
    let (b, s) = (inputs.len() as i64, inputs[0].len() as i64);
    let dims = [b, s];
    let pos: Vec<i32> = (0..b * s).map(|i| (i % s) as i32).collect();
    let ones = vec![1i32; (b * s) as usize];
    vec![
        HostTensor::from_i32(&inputs.concat(), &dims),
        HostTensor::from_i32(&pos, &dims),
        HostTensor::from_i32(&ones, &dims),
        HostTensor::from_i32(&targets.concat(), &dims),
        HostTensor::from_i32(&ones, &dims),
    ]
}

/// One train step from the fixture's params: (loss, raw grad norm, each parameter's update).
fn step(reference: &serde_json::Value, extra: &[&str]) -> (f64, f64, Vec<Vec<f32>>) {
    let cfg = config(reference, extra);
    let inputs = reference["batch"]["inputs"].as_array().unwrap();
    let (b, s) = (inputs.len() as i64, inputs[0].as_array().unwrap().len() as i64);
    let tp = train_program(&cfg, b, s).unwrap();
    let params = hf::load_params(&fixture_dir(), &tp.decls, &cfg.model).unwrap();
    let before: Vec<Vec<f32>> = params.iter().map(|p| p.to_f32()).collect();
    let state = fresh_train_state(&tp, params);
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(1)).unwrap());
    let mut trainer = Trainer::new(&rt, tp, &state).unwrap();
    let out = trainer.step(&batch(reference)).unwrap();
    let after = trainer.state_to_host().unwrap();
    let updates = after[2].iter().zip(&before).map(|(a, b)| a.to_f32().iter().zip(b).map(|(a, b)| b - a).collect()).collect();
    (out.loss, out.raw_grad_norm, updates)
}

/// Largest difference over the largest magnitude of `want`.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    got.iter().zip(want).fold(0f64, |m, (a, b)| m.max((a - b).abs() as f64)) / scale
}

/// Every built policy, and `custom` with a few tensors on the device.
const POLICIES: [&[&str]; 9] = [
    &["remat_policy=minimal"],
    &["remat_policy=minimal_with_context"],
    &["remat_policy=save_dot_with_context_except_mlp"],
    &["remat_policy=save_dot_except_mlpwi"],
    &["remat_policy=save_dot_except_mlp"],
    &["remat_policy=save_qkv_proj"],
    &["remat_policy=save_out_proj"],
    &["remat_policy=custom", "query_proj=device", "attention_out=device", "moe_mlpwi_1=device", "mlpwo=device"],
    &["remat_policy=custom", "decoder_layer_input=remat"],
];

fn same_step_as_full(scan: &str, policies: &[&[&str]]) {
    let r = reference();
    let (loss, norm, updates) = step(&r, &[scan, "remat_policy=full"]);
    // `full` against torch's first step (its loss and float32 raw grad norm).
    let torch = &r["steps"][0];
    let (tl, tn) = (torch["loss"].as_f64().unwrap(), torch["raw_grad_norm"].as_f64().unwrap());
    eprintln!("{scan} full: loss {loss} (torch {tl}), raw grad norm {norm} (torch {tn})");
    assert!(((loss - tl) / tl).abs() < 1e-5, "{scan} full: loss {loss} vs torch {tl}");
    assert!(((norm - tn) / tn).abs() < 5e-4, "{scan} full: raw grad norm {norm} vs torch {tn}");
    for extra in policies {
        let (l, n, u) = step(&r, &[&[scan], *extra].concat());
        let worst = u.iter().zip(&updates).map(|(a, b)| rel_err(a, b)).fold(0f64, f64::max);
        eprintln!("{scan} {extra:?}: loss {l}, raw grad norm {n}, worst parameter update {worst:.1e} off full's");
        assert!(((l - loss) / loss).abs() < 1e-6, "{scan} {extra:?}: loss {l} vs full {loss}");
        assert!(((n - norm) / norm).abs() < 1e-5, "{scan} {extra:?}: raw grad norm {n} vs full {norm}");
        assert!(worst < 1e-4, "{scan} {extra:?}: a parameter update is {worst:.1e} (relative to its largest) off full's");
    }
}

#[test]
fn every_policy_trains_as_full_does_scanned() {
    same_step_as_full("scan_layers=true", &POLICIES);
}

/// Unscanned, each layer is its own remat region.
#[test]
fn policies_train_as_full_does_unscanned() {
    same_step_as_full("scan_layers=false", &POLICIES[..1]);
}

/// With `attention=flash` the kernel's output carries the `context` tag, which the `*_with_context` policies
/// keep: they still train exactly as `full` does.
#[test]
fn with_context_policies_train_as_full_does_with_flash() {
    let r = reference();
    let flash = ["scan_layers=true", "attention=flash", "sa_block_q=8", "sa_block_kv=8"];
    let (loss, norm, updates) = step(&r, &[&flash[..], &["remat_policy=full"]].concat());
    for policy in ["remat_policy=minimal_with_context", "remat_policy=save_dot_with_context_except_mlp"] {
        let (l, n, u) = step(&r, &[&flash[..], &[policy]].concat());
        let worst = u.iter().zip(&updates).map(|(a, b)| rel_err(a, b)).fold(0f64, f64::max);
        assert!(((l - loss) / loss).abs() < 1e-6 && ((n - norm) / norm).abs() < 1e-5 && worst < 1e-4, "{policy} with flash: loss {l} vs {loss}, norm {n} vs {norm}, update {worst:.1e}");
    }
}

fn export_train_temp_bytes(dir: &Path, extra: &[&str]) -> i64 {
    let mut args: Vec<String> = ["export-hlo", "configs/base.yml", "program=train", "model_name=qwen3-next-tiny"].iter().map(|s| s.to_string()).collect();
    args.push(format!("out_dir={}", dir.display()));
    args.extend(MEMORY_SHAPE.iter().chain(extra).map(|s| s.to_string()));
    let out = Command::new(env!("CARGO_BIN_EXE_maxtext")).args(&args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert!(out.status.success(), "export-hlo {extra:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("train.stats.json")).unwrap()).unwrap();
    stats["memory_per_device"]["temp_bytes"].as_i64().unwrap()
}

/// The tiny model with a small vocabulary (so the logits do not hide the activations), 8 layers and
/// 4 × 512 tokens.
const MEMORY_SHAPE: [&str; 5] = ["override_model_config=true", "vocab_size=1024", "base_num_decoder_layers=8", "per_device_batch_size=4", "max_target_length=512"];

/// What a policy keeps shows in the compiled train step's temporaries: full (layer inputs only) <
/// save_qkv_proj (+ the attention projections) < minimal (+ out_proj and every MLP projection), scanned;
/// unscanned, where each layer is a one-iteration region XLA inlines, full < minimal too.
#[test]
fn temporaries_grow_with_what_the_policy_keeps() {
    let tmp = tempfile::tempdir().unwrap();
    let temp_bytes = |scan: &str, policy: &str| {
        let b = export_train_temp_bytes(&tmp.path().join(format!("{scan}-{policy}")), &[&format!("scan_layers={scan}"), &format!("remat_policy={policy}")]);
        eprintln!("scan_layers={scan} remat_policy={policy}: temporaries {b} bytes");
        b
    };
    let (full, qkv, minimal) = (temp_bytes("true", "full"), temp_bytes("true", "save_qkv_proj"), temp_bytes("true", "minimal"));
    assert!(full < qkv && qkv < minimal, "scanned: temporaries full {full} < save_qkv_proj {qkv} < minimal {minimal} expected");
    let (full, minimal) = (temp_bytes("false", "full"), temp_bytes("false", "minimal"));
    assert!(full < minimal, "unscanned: temporaries full {full} < minimal {minimal} expected");
}

#[test]
fn unbuilt_values_are_refused() {
    let load = |o: &[&str]| Config::load(Path::new("configs/base.yml"), &o.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map(|_| ()).unwrap_err().to_string();
    for policy in ["minimal_offloaded", "qkv_proj_offloaded"] {
        let e = load(&["model_name=qwen3-next-tiny", &format!("remat_policy={policy}")]);
        assert!(e.contains(&format!("remat_policy={policy}")) && e.contains("host memory") && e.contains("minimal"), "{e}");
    }
    let e = load(&["model_name=qwen3-next-tiny", "remat_policy=custom", "mlpwo=offload"]);
    assert!(e.contains("mlpwo=offload") && e.contains("`device`"), "{e}");
    let e = load(&["model_name=qwen3-next-tiny", "query_proj=device"]);
    assert!(e.contains("query_proj=device") && e.contains("remat_policy=custom"), "{e}");
    let e = load(&["model_name=qwen3-next-tiny", "remat_policy=minimal_flash"]);
    assert!(e.contains("remat_policy") && e.contains("minimal_with_context"), "{e}");
}
