//! `maxtext train` end to end through the binary on the real XLA CPU plugin: exact resume after SIGKILL,
//! the same losses on 4 devices (fsdp) as on 1, a NaN stop that keeps the last good checkpoint, metrics
//! and TensorBoard files, and fine-tuning on real text with packing lowering the loss.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("maxtext_train_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny synthetic-data run under `out` (run name `r`), plus `extra` keys.
fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = common::tiny_train_args(&[
        "dataset_type=synthetic",
        "per_device_batch_size=2",
        "dtype=float32",
        "learning_rate=1e-3",
        "checkpoint_period=2",
    ]);
    a.push(format!("base_output_directory={}", out.display()));
    a.push(format!("metrics_file={}", out.join("metrics.jsonl").display()));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn maxtext(a: &[String]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_maxtext")).args(a).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// step -> loss from a metrics file (the last line of a step wins: a resumed run logs it again).
fn losses(out: &Path) -> BTreeMap<u64, f64> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| (v["step"].as_f64().unwrap() as u64, v["learning/loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn sigkill_then_restart_resumes_exactly() {
    let straight = scratch("straight");
    let (ok, log) = maxtext(&args(&straight, &["steps=7"]));
    assert!(ok, "{log}");
    let want = losses(&straight);
    assert_eq!(want.len(), 7, "{log}");

    let killed = scratch("killed");
    let a = args(&killed, &["steps=7", "async_checkpointing=true"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_maxtext")).args(&a).current_dir(env!("CARGO_MANIFEST_DIR")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill it once checkpoint 2 is complete and step 3 has run (mid-training, between checkpoints).
    let t0 = Instant::now();
    while !(killed.join("r/checkpoints/2/items/_METADATA").is_file() && losses(&killed).contains_key(&3)) {
        assert!(t0.elapsed() < Duration::from_secs(300), "the run did not reach step 3");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (ok, log) = maxtext(&a);
    assert!(ok, "{log}");
    assert!(log.contains("resuming from checkpoint"), "{log}");
    let got = losses(&killed);
    assert_eq!(got.len(), 7);
    for (step, w) in &want {
        assert_eq!(got[step], *w, "step {step}: resumed run logs {} but the uninterrupted run {w}", got[step]);
    }
}

#[test]
fn four_devices_fsdp_give_the_losses_of_one() {
    let one = scratch("one");
    let four = scratch("four");
    let (ok, log) = maxtext(&args(&one, &["steps=3", "enable_checkpointing=false", "per_device_batch_size=4", "cpu_device_count=1"]));
    assert!(ok, "{log}");
    // 4 devices x 1 row per device = the same global batch of 4.
    let (ok, log) = maxtext(&args(&four, &["steps=3", "enable_checkpointing=false", "per_device_batch_size=1", "cpu_device_count=4", "ici_fsdp_parallelism=-1"]));
    assert!(ok, "{log}");
    let (a, b) = (losses(&one), losses(&four));
    assert_eq!(a.len(), 3);
    for (s, l) in &a {
        assert!(((l - b[s]) / l).abs() < 1e-5, "step {s}: 1 device {l} vs 4 devices {}", b[s]);
    }
}

/// The dropless MoE by ragged dots (`megablox=false`, what TPU compiles natively), each of 4 devices
/// sorting and multiplying only its own tokens inside a manual computation, trains as the blocked path
/// does on one device.
#[test]
fn ragged_dot_per_shard_on_four_devices_trains_as_blocks_on_one() {
    let one = scratch("blocks_one");
    let four = scratch("ragged_four");
    let (ok, log) = maxtext(&args(&one, &["steps=4", "enable_checkpointing=false", "per_device_batch_size=4", "cpu_device_count=1"]));
    assert!(ok, "{log}");
    // The ragged path cuts the expert weights' fsdp shards along the experts (EXPERT_SHARD_MOVE): its
    // checkpoint after step 2 is resumed by the blocked path on one device, which reads it whole (the
    // final checkpoint removed, so that step 3 runs again there).
    let keys = ["steps=4", "per_device_batch_size=1", "cpu_device_count=4", "ici_fsdp_parallelism=-1", "megablox=false"];
    let (ok, log) = maxtext(&args(&four, &keys));
    assert!(ok, "{log}");
    std::fs::remove_dir_all(four.join("r/checkpoints/3")).unwrap();
    let (ok, log) = maxtext(&args(&four, &["steps=4", "per_device_batch_size=4", "cpu_device_count=1"]));
    assert!(ok, "{log}");
    let resumed = format!("resuming from checkpoint {}", four.join("r/checkpoints/2").display());
    assert!(log.contains(&resumed), "the one-device run resumes after step 2:\n{log}");
    let (a, b) = (losses(&one), losses(&four));
    assert_eq!(a.len(), 4);
    for (s, l) in &a {
        assert!(((l - b[s]) / l).abs() < 1e-5, "step {s}: blocks on 1 device {l} vs ragged dot on 4 devices (steps 0-2; step 3 by blocks on 1) {}", b[s]);
    }
}

#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let out = scratch("nan");
    let (ok, log) = maxtext(&args(&out, &["steps=8", "learning_rate=1e15", "gradient_clipping_threshold=0", "async_checkpointing=false"]));
    assert!(!ok, "a diverging run must fail:\n{log}");
    assert!(log.contains("stopping; the last good checkpoint is"), "{log}");
    let steps: Vec<String> = std::fs::read_dir(out.join("r/checkpoints")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(steps.iter().any(|s| s == "0"), "checkpoint 0 kept: {steps:?}");
}

#[test]
fn metrics_and_tensorboard_files() {
    let out = scratch("metrics");
    let (ok, log) = maxtext(&args(&out, &["steps=2", "enable_checkpointing=false"]));
    assert!(ok, "{log}");
    let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    for tag in ["learning/loss", "learning/grad_norm", "learning/raw_grad_norm", "learning/current_learning_rate", "perf/step_time_seconds", "perf/per_device_tflops_per_sec", "perf/per_device_tokens_per_sec"] {
        assert!(line[tag].is_number(), "{tag} missing in {line}");
    }
    let files = maxtext::metrics::event_files(&out.join("r/tensorboard")).unwrap();
    assert!(!files.is_empty(), "no TensorBoard event file under {}", out.display());
    let scalars = maxtext::metrics::read_scalars(&files[0]).unwrap();
    assert!(scalars.iter().any(|s| s.tag == "learning/loss" && s.step == 1), "{scalars:?}");
}

#[test]
fn fine_tuning_on_shakespeare_with_packing_lowers_the_loss() {
    let text = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/text/shakespeare/hamlet_gut.txt");
    let out = scratch("finetune");
    let mut a = args(&out, &["steps=80", "enable_checkpointing=false", "learning_rate=3e-3", "warmup_steps_fraction=0.05", "per_device_batch_size=4", "max_target_length=64", "max_prefill_predict_length=64"]);
    // The real Qwen3 vocabulary and tokenizer instead of the synthetic 1024.
    a.retain(|s| s != "vocab_size=1024" && s != "dataset_type=synthetic");
    a.extend([
        "dataset_type=hf".to_string(),
        "hf_path=text".into(),
        format!("hf_train_files={}", text.display()),
        "tokenizer_type=huggingface".into(),
        "tokenizer_path=assets/tokenizers/qwen3-tokenizer".into(),
        "packing=true".into(),
    ]);
    let (ok, log) = maxtext(&a);
    assert!(ok, "{log}");
    let l = losses(&out);
    let first: f64 = (0..5).map(|s| l[&s]).sum::<f64>() / 5.0;
    let last: f64 = (75..80).map(|s| l[&s]).sum::<f64>() / 5.0;
    eprintln!("fine-tuning on Hamlet: mean loss of steps 0-4 {first:.3}, of steps 75-79 {last:.3}");
    assert!(last < first - 3.0, "loss {first:.3} -> {last:.3}: not clearly lower");
}
