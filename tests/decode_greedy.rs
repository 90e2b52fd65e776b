//! Prefill + decode against HF's greedy decoding (`golden_greedy.{safetensors,json}`: 16 new tokens per
//! prompt and the logits of every step), on the real XLA CPU plugin: batch 1 and batched (different prompt
//! lengths in one batch), scanned and unscanned, on the tiny reference `tests/fixtures/hf/qwen3-next-tiny`
//! and on references made with `scripts/make_test_references.sh` (`tiny-8layers-gqa4` is optional).

mod common;

use maxtext::checkpoint::hf;
use maxtext::config::Config;
use maxtext::pjrt::{open_client, Hardware};
use maxtext::runtime::{Generator, Runtime};
use std::path::{Path, PathBuf};

struct Case {
    tokens: Vec<i64>,
    new_tokens: Vec<i64>,
    step_logits: Vec<Vec<f32>>,
}

fn cases(dir: &Path) -> Vec<Case> {
    common::golden_lines(dir, "golden_greedy")
        .into_iter()
        .map(|v| Case {
            tokens: serde_json::from_value(v["tokens"].clone()).unwrap(),
            new_tokens: serde_json::from_value(v["new_tokens"].clone()).unwrap(),
            step_logits: serde_json::from_value(v["step_logits"].clone()).unwrap(),
        })
        .collect()
}

fn config(dir: &Path, extra: &[&str]) -> Config {
    let mut o = hf::read_config_overrides(dir).unwrap();
    for kv in ["dtype=float32", "weight_dtype=float32", "max_target_length=160", "max_prefill_predict_length=160"] {
        o.push(kv.to_string());
    }
    o.extend(extra.iter().map(|s| s.to_string()));
    Config::load(Path::new("configs/base.yml"), &o).unwrap()
}

/// Greedy-decodes the golden prompts `batch` at a time; tokens must match exactly and each step's logits
/// within `tol` (absolute).
fn check(dir: &Path, extra: &[&str], batch: usize, tol: f32) {
    // The global batch is `batch` whatever the device count (per_device_batch_size may be fractional).
    let devices: usize = extra.iter().find_map(|e| e.strip_prefix("cpu_device_count=")).map_or(1, |n| n.parse().unwrap());
    let per_device = format!("per_device_batch_size={}", batch as f64 / devices as f64);
    let mut extra = extra.to_vec();
    extra.push(&per_device);
    let cfg = config(dir, &extra);
    let decls = maxtext::program::param_decls(&cfg);
    let params = hf::load_params(dir, &decls, &cfg.model).unwrap();
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(cfg.run.cpu_device_count as i64)).unwrap());
    let gen = Generator::new(&rt, &cfg, &params).unwrap();
    let all = cases(dir);
    for group in all.chunks(batch) {
        let prompts: Vec<Vec<i64>> = group.iter().map(|c| c.tokens.clone()).collect();
        let out = gen.generate(&prompts, 16, &[], true, |_| {}).unwrap();
        for (r, case) in group.iter().enumerate() {
            assert_eq!(out.generated[r], case.new_tokens, "{} prompt of {} tokens {extra:?}", dir.display(), case.tokens.len());
            for (s, (ours, golden)) in out.logits[r].iter().zip(&case.step_logits).enumerate() {
                let d = ours.iter().zip(golden).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(d < tol, "step {s} logits differ by {d} (prompt of {} tokens, {extra:?})", case.tokens.len());
            }
        }
    }
}

fn tiny() -> PathBuf {
    common::shipped("hf/qwen3-next-tiny")
}

#[test]
fn greedy_matches_hf_batch1_scanned() {
    let dir = tiny();
    check(&dir, &["scan_layers=true"], 1, 2e-4);
}

#[test]
fn greedy_matches_hf_batched_unscanned() {
    let dir = tiny();
    check(&dir, &["scan_layers=false"], 4, 2e-4);
}

/// `attention=flash` in the prefill program (batched, right-padded prompts of 1 to 100 tokens over query
/// blocks of 16 and key blocks of 12); decode steps attend with dot product, as in MaxText.
#[test]
fn greedy_matches_hf_with_flash_prefill() {
    let dir = common::shipped("hf/qwen3-next-tiny");
    check(&dir, &["scan_layers=true", "attention=flash", "sa_block_q=16", "sa_block_kv=12"], 4, 2e-4);
}

#[test]
fn greedy_matches_hf_on_other_shapes() {
    check(&common::shipped("hf/tiny-interval2-ratio1"), &["scan_layers=false"], 2, 5e-4);
    if let Some(dir) = common::reference("hf/tiny-8layers-gqa4") {
        check(&dir, &["scan_layers=true"], 4, 5e-4);
    }
}

/// The model split over 8 devices (fsdp=2 x tensor=2 x expert=2; caches sharded by MaxText's cache rules)
/// decodes HF's tokens.
#[test]
fn greedy_matches_hf_fsdp2_tensor2_expert2() {
    let dir = tiny();
    let mesh = ["cpu_device_count=8", "ici_fsdp_parallelism=2", "ici_tensor_parallelism=2", "ici_expert_parallelism=2"];
    check(&dir, &[&["scan_layers=true"][..], &mesh].concat(), 4, 2e-4);
    check(&dir, &[&["scan_layers=false"][..], &mesh].concat(), 2, 2e-4);
}
