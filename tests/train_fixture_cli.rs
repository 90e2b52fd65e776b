//! The whole path a MaxText user takes, against torch: `maxtext convert` the HF tiny reference
//! (`tests/fixtures/hf/qwen3-next-tiny`) to Orbax, then
//! `maxtext train load_parameters_path=...` on the fixture's batch (a JSON-lines file of token ids, no
//! packing, no shuffling) with the fixture's optimizer settings. Each step's loss and raw grad norm (from
//! the metrics file) and the params of the last checkpoint (mapped back to HF names) match torch.

mod common;

use maxtext::checkpoint::hf;
use maxtext::checkpoint::train_state::leaf_name;
use std::path::Path;
use std::process::Command;

fn maxtext(args: &[String]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_maxtext")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn convert_then_train_matches_torch() {
    let fx = common::shipped("hf/qwen3-next-tiny");
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx.join("train/train_reference.json")).unwrap()).unwrap();
    let out = std::env::temp_dir().join(format!("maxtext_fixture_train_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();

    // 1. HF -> Orbax, float32.
    let conv = out.join("converted");
    let (ok, log) = maxtext(&[
        "convert".into(),
        "configs/base.yml".into(),
        format!("hf_model_path={}", fx.display()),
        format!("base_output_directory={}", conv.display()),
        "weight_dtype=float32".into(),
        "scan_layers=true".into(),
    ]);
    assert!(ok, "{log}");

    // 2. The batch as data: 2 rows of 33 ids -> inputs ids[0:32], targets ids[1:33].
    let rows = reference["batch"]["tokens"].as_array().unwrap();
    let jsonl: String = rows.iter().map(|r| format!("{{\"ids\": {r}}}\n")).collect();
    std::fs::write(out.join("batch.jsonl"), jsonl).unwrap();
    let overrides = hf::read_config_overrides(&fx).unwrap();
    let mut args: Vec<String> = vec!["train".into(), "configs/base.yml".into()];
    args.extend(overrides);
    args.extend(
        [
            "run_name=fx",
            "dtype=float32",
            "weight_dtype=float32",
            "scan_layers=true",
            "dataset_type=hf",
            "hf_path=json",
            "train_data_columns=ids",
            "packing=false",
            "enable_data_shuffling=false",
            "num_epoch=3",
            "per_device_batch_size=2",
            "max_target_length=32",
            "max_prefill_predict_length=32",
            "steps=3",
            "learning_rate=1e-3",
            "warmup_steps_fraction=0",
            "learning_rate_final_fraction=1.0",
            "adam_b1=0.9",
            "adam_b2=0.95",
            "adam_eps=1e-8",
            "adam_eps_root=0",
            "adam_weight_decay=0.1",
            "gradient_clipping_threshold=1.0",
            "checkpoint_period=100",
            "async_checkpointing=false",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.push(format!("hf_train_files={}", out.join("batch.jsonl").display()));
    args.push(format!("load_parameters_path={}", conv.join("0/items").display()));
    args.push(format!("base_output_directory={}", out.display()));
    args.push(format!("metrics_file={}", out.join("metrics.jsonl").display()));
    let (ok, log) = maxtext(&args);
    assert!(ok, "{log}");

    // 3. Per-step loss and raw grad norm.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps = reference["steps"].as_array().unwrap();
    assert_eq!(lines.len(), steps.len());
    // Step 0 against torch to 1e-4. After AdamW updates, float32 runs drift apart at the noise level of
    // the tiniest gradients (torch re-run: 8.27277 at step 2 where the fixture has 8.27313), so later steps
    // are held to the float64 ground truth (scripts/make_f64_train_reference.py): at least as close to it
    // as torch's float32 run, or within 1e-4.
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/qwen3-next-tiny-train-f64.json")).unwrap()).unwrap();
    for (k, (got, want)) in lines.iter().zip(steps).enumerate() {
        for (what, key, wkey) in [("loss", "learning/loss", "loss"), ("raw_grad_norm", "learning/raw_grad_norm", "raw_grad_norm_f64")] {
            let (ours, torch32) = (got[key].as_f64().unwrap(), want[wkey].as_f64().unwrap());
            if k == 0 {
                assert!(((ours - torch32) / torch32).abs() < 1e-4, "step 0: {what} {ours} vs torch {torch32}");
            } else {
                let exact = truth["steps"][k][what].as_f64().unwrap();
                let allowed = ((torch32 - exact).abs() * 1.5).max(1e-4 * exact.abs());
                assert!((ours - exact).abs() <= allowed, "step {k}: {what} {ours} vs float64 {exact} (torch float32 {torch32})");
            }
        }
    }

    // 4. The final checkpoint's params against torch's params after 3 steps (relative L2 over all).
    let ck = maxtext::checkpoint::orbax::OrbaxCheckpoint::open_step(&out.join("fx/checkpoints"), 2).unwrap();
    let cfg = maxtext::config::Config::load(Path::new("configs/base.yml"), &[hf::read_config_overrides(&fx).unwrap(), vec!["scan_layers=true".into(), "dtype=float32".into(), "weight_dtype=float32".into()]].concat()).unwrap();
    let decls = maxtext::program::param_decls(&cfg);
    let params: Vec<_> = decls.iter().map(|d| ck.read(&leaf_name("params.params", &d.path)).unwrap()).collect();
    let ours = hf::hf_tensors_for(&decls, &params, &cfg.model).unwrap();
    let bytes = std::fs::read(fx.join("train/params_after_3_steps.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (mut d2, mut p2) = (0f64, 0f64);
    for (name, t) in &ours {
        let want: Vec<f32> = st.tensor(name).unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        for (a, b) in t.to_f32().iter().zip(&want) {
            d2 += ((a - b) as f64).powi(2);
            p2 += (*b as f64).powi(2);
        }
    }
    let rel = (d2 / p2).sqrt();
    assert!(rel < 1e-4, "params after 3 steps differ from torch by {rel:.2e} (relative L2)");
    std::fs::remove_dir_all(&out).ok();
}
