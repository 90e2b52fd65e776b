//! MaxText's training keys through the `maxtext train` binary on the real XLA CPU plugin (tiny model,
//! synthetic or JSON token-id data, a few steps): `opt_type` (adamw, adam_pax, sgd; muon refused),
//! `lr_schedule_type=wsd`, evaluation (`eval_interval`, `eval_steps`, `target_eval_loss`, `hf_eval_files`),
//! and the checkpoint keys (`max_num_checkpoints_to_keep`, `save_checkpoint_on_start`,
//! `abort_on_nan_loss` / `abort_on_inf_loss`).

use maxtext::checkpoint::orbax::OrbaxCheckpoint;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("maxtext_trainkeys_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tiny model on synthetic data under `out` (run name `r`), plus `extra` keys.
fn keys(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "model_name=qwen3-next-tiny",
        "override_model_config=true",
        "vocab_size=1024",
        "run_name=r",
        "dataset_type=synthetic",
        "per_device_batch_size=2",
        "max_target_length=32",
        "max_prefill_predict_length=32",
        "dtype=float32",
        "learning_rate=1e-3",
        "checkpoint_period=10",
        "async_checkpointing=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(format!("base_output_directory={}", out.display()));
    a.push(format!("metrics_file={}", out.join("metrics.jsonl").display()));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn train(out: &Path, extra: &[&str]) -> (bool, String) {
    let mut a = vec!["train".to_string(), "configs/base.yml".to_string()];
    a.extend(keys(out, extra));
    let o = Command::new(env!("CARGO_BIN_EXE_maxtext")).args(&a).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// The metrics-file lines: train lines (with `learning/loss`) and eval lines (with `eval/avg_loss`).
fn lines(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// step -> `tag` over the lines that have it.
fn series(out: &Path, tag: &str) -> BTreeMap<u64, f64> {
    lines(out).iter().filter(|v| v.get(tag).is_some()).map(|v| (v["step"].as_f64().unwrap() as u64, v[tag].as_f64().unwrap_or(f64::NAN))).collect()
}

fn step_dirs(out: &Path) -> Vec<u64> {
    let mut s: Vec<u64> = std::fs::read_dir(out.join("r/checkpoints")).map(|rd| rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()).unwrap_or_default();
    s.sort_unstable();
    s
}

fn checkpoint(out: &Path, step: u64) -> OrbaxCheckpoint {
    OrbaxCheckpoint::open(out.join(format!("r/checkpoints/{step}/items"))).unwrap()
}

fn leaf_f32(ck: &OrbaxCheckpoint, name: &str) -> Vec<f32> {
    ck.read(name).unwrap().to_f32()
}

/// sgd and adam_pax train with their own update and checkpoint layout. Step 0's loss is the same for all
/// three (same init, same batch); afterwards sgd's differ from adamw's. adam_pax is adamw's algebra with the
/// bias correction folded into the stored moments, so its losses stay within rounding of adamw's while its
/// checkpointed moments are adamw's divided by (1 − β^t). A restart under another optimizer is refused.
#[test]
fn optimizers_update_and_checkpoint_their_own_state() {
    let run = |name: &str, opt: &str| {
        let out = scratch(name);
        let (ok, log) = train(&out, &["steps=3", &format!("opt_type={opt}")]);
        assert!(ok, "opt_type={opt}: {log}");
        out
    };
    let (adamw, sgd, pax) = (run("adamw", "adamw"), run("sgd", "sgd"), run("pax", "adam_pax"));
    let (la, ls, lp) = (series(&adamw, "learning/loss"), series(&sgd, "learning/loss"), series(&pax, "learning/loss"));
    assert_eq!((la.len(), ls.len(), lp.len()), (3, 3, 3));
    assert!((la[&0] - ls[&0]).abs() < 1e-6 * la[&0] && (la[&0] - lp[&0]).abs() < 1e-6 * la[&0], "step 0: {la:?} {ls:?} {lp:?}");
    for s in 1..3 {
        assert!((la[&s] - ls[&s]).abs() > 1e-4 * la[&s], "step {s}: sgd {} equals adamw {}", ls[&s], la[&s]);
        assert!((la[&s] - lp[&s]).abs() < 1e-4 * la[&s], "step {s}: adam_pax {} vs adamw {}", lp[&s], la[&s]);
    }

    // Checkpoints (step 2, the last): optax's layouts.
    let (ca, cs, cp) = (checkpoint(&adamw, 2), checkpoint(&sgd, 2), checkpoint(&pax, 2));
    let norm = "params.decoder.decoder_norm.scale";
    assert_eq!(cs.read("opt_state.1.count").unwrap().to_i64(), vec![3]);
    assert!(cs.leaf(&format!("opt_state.0.mu.{norm}")).is_none() && cs.leaf("opt_state.0.count").is_none(), "sgd keeps no moments");
    assert_eq!(cp.read("opt_state.count").unwrap().to_i64(), vec![3]);
    assert_eq!(ca.read("opt_state.0.count").unwrap().to_i64(), vec![3]);
    for (moment, beta) in [("mu", 0.9f64), ("nu", 0.95)] {
        let a = leaf_f32(&ca, &format!("opt_state.0.{moment}.{norm}"));
        let p = leaf_f32(&cp, &format!("opt_state.{moment}.{norm}"));
        let corr = 1.0 - beta.powi(3);
        let scale = a.iter().fold(0f64, |m, v| m.max((*v as f64 / corr).abs()));
        let worst = a.iter().zip(&p).fold(0f64, |m, (x, y)| m.max((*x as f64 / corr - *y as f64).abs()));
        assert!(worst < 1e-3 * scale, "adam_pax {moment} is not adamw's / (1 - {beta}^3): off by {worst:.3e} of {scale:.3e}");
    }

    // Resuming the sgd run with adamw: a clear error naming both.
    let (ok, log) = train(&sgd, &["steps=4", "opt_type=adamw"]);
    assert!(!ok, "{log}");
    assert!(log.contains("opt_type=sgd") && log.contains("opt_type=adamw"), "{log}");
}

#[test]
fn muon_is_refused() {
    let out = scratch("muon");
    let (ok, log) = train(&out, &["steps=1", "opt_type=muon"]);
    assert!(!ok, "{log}");
    assert!(log.contains("opt_type") && log.contains("muon") && log.contains("adam_pax"), "{log}");
}

/// The logged learning rate of every step is MaxText's wsd schedule (the host formula, itself checked
/// by hand in `optim::schedule`).
#[test]
fn wsd_learning_rate_per_step() {
    for style in ["linear", "cosine"] {
        let out = scratch(&format!("wsd_{style}"));
        let extra = ["steps=12", "learning_rate_schedule_steps=10", "lr_schedule_type=wsd", &format!("wsd_decay_style={style}"), "warmup_steps_fraction=0.2", "wsd_decay_steps_fraction=0.4", "learning_rate_final_fraction=0.1", "enable_checkpointing=false"];
        let (ok, log) = train(&out, &extra);
        assert!(ok, "{log}");
        let mut o: Vec<String> = keys(&out, &extra);
        o.retain(|k| !k.starts_with("base_output_directory") && !k.starts_with("metrics_file"));
        let cfg = maxtext::config::Config::load(Path::new("configs/base.yml"), &o).unwrap();
        let schedule = maxtext::optim::Schedule::from_config(&cfg.train);
        let lr = series(&out, "learning/current_learning_rate");
        assert_eq!(lr.len(), 12);
        for (step, got) in &lr {
            let want = schedule.at(*step);
            assert!((got - want).abs() <= 1e-6 * want.max(1e-9), "{style} step {step}: lr {got} vs MaxText's {want}");
        }
        // The shape: warmup 0, 5e-4; stable 1e-3 for steps 2..5; decay to 1e-4 at step 9; 0 after.
        assert_eq!(lr[&0], 0.0);
        assert!((lr[&4] - 1e-3).abs() < 1e-9 && (lr[&9] - 1e-4).abs() < 1e-9 && lr[&10] == 0.0, "{style}: {lr:?}");
    }
}

/// eval_step computes the train loss: with synthetic data every batch is the same, so the eval after
/// train step s (params after s+1 updates) equals the train loss logged at step s+1.
#[test]
fn eval_loss_is_the_train_loss_of_the_next_step() {
    let out = scratch("eval_synthetic");
    let (ok, log) = train(&out, &["steps=4", "eval_interval=1", "eval_steps=1", "enable_checkpointing=false"]);
    assert!(ok, "{log}");
    let (train_loss, eval_loss) = (series(&out, "learning/loss"), series(&out, "eval/avg_loss"));
    assert_eq!(eval_loss.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3], "{log}");
    for s in 0..3 {
        assert!((eval_loss[&s] - train_loss[&(s + 1)]).abs() < 1e-5 * train_loss[&(s + 1)], "eval after step {s}: {} vs train loss of step {}: {}", eval_loss[&s], s + 1, train_loss[&(s + 1)]);
    }
    assert!(log.contains("Completed eval after train step 2, loss="), "{log}");
    let files = maxtext::metrics::event_files(&out.join("r/tensorboard")).unwrap();
    let tb = maxtext::metrics::read_scalars(&files[0]).unwrap();
    let steps: Vec<i64> = tb.iter().filter(|s| s.tag == "eval/avg_loss").map(|s| s.step).collect();
    assert_eq!(steps, vec![0, 1, 2, 3], "TensorBoard eval/avg_loss steps");
}

/// JSON lines of token ids: `docs` documents of `len` ids each below 1024, seeded.
fn write_ids(path: &Path, docs: usize, len: usize, seed: u64) {
    let mut x = seed;
    let mut text = String::new();
    for _ in 0..docs {
        let ids: Vec<String> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 33) % 1000 + 1).to_string()
            })
            .collect();
        text.push_str(&format!("{{\"text\": [{}]}}\n", ids.join(", ")));
    }
    std::fs::write(path, text).unwrap();
}

/// Eval data from `hf_eval_files` at every `eval_interval`-th step, `eval_steps` batches each (or the
/// whole set); `target_eval_loss` stops the run after the first eval that reaches it.
#[test]
fn eval_on_files_and_target_eval_loss() {
    let out = scratch("eval_files");
    let (train_file, eval_file) = (out.join("train.jsonl"), out.join("eval.jsonl"));
    write_ids(&train_file, 64, 40, 1);
    write_ids(&eval_file, 10, 20, 2);
    let files = ["dataset_type=hf".to_string(), "hf_path=json".into(), format!("hf_train_files={}", train_file.display()), format!("hf_eval_files={}", eval_file.display()), "enable_checkpointing=false".into()];
    let mut extra: Vec<&str> = files.iter().map(String::as_str).collect();
    extra.extend(["steps=5", "eval_interval=2", "eval_steps=2"]);
    let (ok, log) = train(&out, &extra);
    assert!(ok, "{log}");
    let eval = lines(&out).into_iter().filter(|v| v.get("eval/avg_loss").is_some()).collect::<Vec<_>>();
    assert_eq!(eval.iter().map(|v| v["step"].as_f64().unwrap() as u64).collect::<Vec<_>>(), vec![0, 2, 4], "{log}");
    for v in &eval {
        let (total, weights, avg) = (v["eval/total_loss"].as_f64().unwrap(), v["eval/total_weights"].as_f64().unwrap(), v["eval/avg_loss"].as_f64().unwrap());
        // 2 eval batches of 2 rows × 32 targets, packed from 20-token documents: all but the padding tail.
        assert!(weights > 64.0 && weights <= 128.0, "{v}");
        assert!(avg.is_finite() && (avg - total / (weights + 1e-8)).abs() < 1e-9 * avg, "{v}");
        assert!((v["eval/avg_perplexity"].as_f64().unwrap() - avg.exp()).abs() < 1e-6 * avg.exp(), "{v}");
    }

    // The whole eval set (eval_steps=-1: 10 documents of 20 tokens, one per row of 32 since two do not fit,
    // so 5 batches of 2 rows) and a target every loss reaches: the run stops after step 0's eval.
    let out2 = scratch("eval_target");
    let mut extra: Vec<&str> = files.iter().map(String::as_str).collect();
    extra.extend(["steps=5", "eval_interval=2", "eval_steps=-1", "target_eval_loss=1000"]);
    let (ok, log) = train(&out2, &extra);
    assert!(ok, "{log}");
    assert!(log.contains("target_eval_loss=1000 is achieved"), "{log}");
    assert_eq!(series(&out2, "learning/loss").keys().copied().collect::<Vec<_>>(), vec![0], "{log}");
    let whole = series(&out2, "eval/total_weights");
    assert_eq!(whole.len(), 1);
    // Every eval document counts once: at most 10 × 20 target tokens, more than the 2 batches above.
    assert!(whole[&0] > 128.0 && whole[&0] <= 200.0, "whole eval set weights {}", whole[&0]);
}

#[test]
fn eval_without_eval_data_is_refused() {
    let out = scratch("eval_nodata");
    let (ok, log) = train(&out, &["steps=1", "dataset_type=hf", "hf_path=json", "hf_train_files=x.jsonl", "eval_interval=1"]);
    assert!(!ok && log.contains("hf_eval_files"), "{log}");
    let (ok, log) = train(&out, &["steps=1", "eval_interval=1"]);
    assert!(!ok && log.contains("eval_steps"), "synthetic eval with eval_steps=-1 never ends: {log}");
}

/// `max_num_checkpoints_to_keep=1` leaves the newest step only (async saves: pruned once each commits);
/// `save_checkpoint_on_start=false` skips step 0 (the default saves it: see `tests/train_cli.rs`).
#[test]
fn checkpoint_retention_and_start() {
    let out = scratch("keep");
    let (ok, log) = train(&out, &["steps=4", "checkpoint_period=1", "max_num_checkpoints_to_keep=1", "async_checkpointing=true"]);
    assert!(ok, "{log}");
    assert_eq!(step_dirs(&out), vec![3], "{log}");
    // The kept checkpoint resumes.
    let (ok, log) = train(&out, &["steps=5", "checkpoint_period=1", "max_num_checkpoints_to_keep=2"]);
    assert!(ok && log.contains("resuming from checkpoint"), "{log}");
    assert_eq!(step_dirs(&out), vec![3, 4], "{log}");

    let out = scratch("no_start");
    let (ok, log) = train(&out, &["steps=3", "checkpoint_period=2", "save_checkpoint_on_start=false"]);
    assert!(ok, "{log}");
    assert_eq!(step_dirs(&out), vec![2], "{log}");
    let out = scratch("start");
    let (ok, log) = train(&out, &["steps=3", "checkpoint_period=2", "save_checkpoint_on_completion=false"]);
    assert!(ok, "{log}");
    assert_eq!(step_dirs(&out), vec![0, 2], "{log}");
}

/// A diverging run (huge learning rate, no clipping) stops with a nonzero exit and keeps step 0's good
/// checkpoint with `abort_on_nan_loss` (`tests/train_cli.rs` checks the message); with both abort keys false
/// it runs to the end, logging the non-finite losses, as MaxText does.
#[test]
fn abort_keys_off_let_a_diverging_run_continue() {
    let out = scratch("noabort");
    let (ok, log) = train(&out, &["steps=6", "learning_rate=1e15", "gradient_clipping_threshold=0", "enable_checkpointing=false", "abort_on_nan_loss=false", "abort_on_inf_loss=false"]);
    assert!(ok, "{log}");
    let l = series(&out, "learning/loss");
    assert_eq!(l.len(), 6);
    assert!(l.values().any(|v| !v.is_finite()), "the run did not diverge: {l:?}");
    let out = scratch("abort_inf");
    let (ok, log) = train(&out, &["steps=6", "learning_rate=1e15", "gradient_clipping_threshold=0", "enable_checkpointing=false"]);
    assert!(!ok && log.contains("stopping; the last good checkpoint is none"), "{log}");
}
