//! `dataset_type=synthetic` gives MaxText 0.2.5's batch, id for id: every case of
//! tests/fixtures/synthetic/maxtext_0.2.5.json (MaxText's own `SyntheticDataIterator` run by real JAX 0.11.1 on
//! CPU, both key implementations; scripts/make_synthetic_reference.py) through `synthetic_batch` and through
//! the data iterator; the token ids of a real MaxText training run (the input of
//! tests/fixtures/maxtext_qwen3next_tiny_trimmed); and `maxtext train` from that run's parameters, whose
//! first loss is MaxText's own cross-entropy on its batch only if the step sees MaxText's batch.

use std::path::{Path, PathBuf};
use std::process::Command;

use maxtext::config::Config;
use maxtext::data::prng::{PrngImpl, PRNG_IMPL_ENV};
use maxtext::data::synthetic::synthetic_batch;
use maxtext::data::{Batch, DataIterator};
use serde_json::Value;

mod common;

const FIELDS: [&str; 6] = ["inputs", "targets", "inputs_position", "targets_position", "inputs_segmentation", "targets_segmentation"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("tests/fixtures/synthetic/maxtext_0.2.5.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((doc["maxtext"].as_str(), doc["backend"].as_str()), (Some("0.2.5"), Some("cpu")));
    doc["cases"].as_array().unwrap().clone()
}

fn field(b: &Batch, name: &str) -> Vec<i32> {
    let rows = b.dims()[0] as usize;
    (0..rows).flat_map(|r| b.row(name, r).to_vec()).collect()
}

/// Panics naming the case, the field and the first differing element (row, position).
fn assert_is_reference(case: &Value, b: &Batch, via: &str) {
    let name = case["name"].as_str().unwrap();
    let len = case["max_target_length"].as_u64().unwrap() as usize;
    for f in FIELDS {
        let want: Vec<i32> = case[f].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect();
        let got = field(b, f);
        assert_eq!(got.len(), want.len(), "{name} ({via}): {f} has {} values, JAX {}", got.len(), want.len());
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!("{name} ({via}): {f}[{}, {}] = {}, JAX/MaxText has {}", i / len, i % len, got[i], want[i]);
        }
    }
}

fn imp_of(case: &Value) -> PrngImpl {
    case["prng_impl"].as_str().unwrap().parse().unwrap()
}

#[test]
fn every_reference_case_is_drawn_exactly() {
    let cases = cases();
    assert!(cases.len() >= 10);
    for imp in [PrngImpl::UnsafeRbg, PrngImpl::Threefry2x32] {
        assert!(cases.iter().filter(|c| imp_of(c) == imp).count() >= 4, "{imp:?}: too few cases");
    }
    for case in &cases {
        let n = |k: &str| case[k].as_u64().unwrap() as usize;
        let b = synthetic_batch(
            imp_of(case),
            n("global_batch_size_to_load"),
            n("max_target_length"),
            n("vocab_size"),
            case["packing"].as_bool().unwrap(),
            case["max_segments_per_seq"].as_i64().unwrap(),
        )
        .unwrap();
        assert_is_reference(case, &b, "synthetic_batch");
    }
}

#[test]
fn data_iterator_yields_the_reference_batch_every_step() {
    // The iterator reads the key implementation from the environment (unsafe_rbg when unset).
    assert!(std::env::var_os(PRNG_IMPL_ENV).is_none(), "unset {PRNG_IMPL_ENV} to run this test (it checks the default)");
    let mut checked = 0;
    for case in cases().iter().filter(|c| imp_of(c) == PrngImpl::UnsafeRbg && c["max_target_length"].as_u64().unwrap() >= 2) {
        let args: Vec<String> = vec![
            "dataset_type=synthetic".into(),
            format!("per_device_batch_size={}", case["global_batch_size_to_load"]),
            format!("max_target_length={}", case["max_target_length"]),
            "max_prefill_predict_length=1".into(),
            format!("vocab_size={}", case["vocab_size"]),
            format!("packing={}", case["packing"]),
            format!("max_segments_per_seq={}", case["max_segments_per_seq"]),
        ];
        let cfg = Config::load_with_env(&root().join("configs/base.yml"), &args, &|_| None).unwrap();
        let mut it = DataIterator::new(&cfg, 0, 1).unwrap();
        for step in 0..2 {
            assert_is_reference(case, &it.next_batch().unwrap(), &format!("DataIterator step {step}"));
        }
        checked += 1;
    }
    assert!(checked >= 4);
}

/// The token ids MaxText 0.2.5 itself trained on (its forward fixture, saved from the run that wrote the
/// checkpoint fixture: 1 row of 128, vocab 1024, `unsafe_rbg` set by MaxText's train.py).
#[test]
fn a_real_maxtext_runs_tokens() {
    let bytes = std::fs::read(root().join("tests/fixtures/maxtext_qwen3next_tiny_trimmed/maxtext_forward_step0.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = |name: &str| -> Vec<i32> {
        st.tensor(name).unwrap().data().chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect()
    };
    let b = synthetic_batch(PrngImpl::UnsafeRbg, 1, 128, 1024, true, -1).unwrap();
    assert_eq!(b.inputs, ids("input_ids"), "inputs vs MaxText's input_ids");
    assert_eq!(b.targets, ids("target_ids"), "targets vs MaxText's target_ids");
    let other = synthetic_batch(PrngImpl::Threefry2x32, 1, 128, 1024, true, -1).unwrap();
    assert!(other.inputs.iter().zip(&b.inputs).filter(|(a, b)| a == b).count() < 8, "threefry2x32 draws other tokens");
}

/// `maxtext train` on the MaxText run's step-0 parameters with the run's config: `prng` is the
/// JAX_DEFAULT_PRNG_IMPL value (None: unset). Returns (success, step-0 lm loss, stderr).
fn train_step0(prng: Option<&str>, out: &Path) -> (bool, Option<f64>, String) {
    let _ = std::fs::remove_dir_all(out);
    let metrics = out.join("m.jsonl");
    let params = common::maxtext_checkpoint().join("0/items");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_maxtext"));
    cmd.args(["train", "configs/base.yml", "run_name=syn", "steps=1", "enable_checkpointing=false", "dataset_type=synthetic"])
        .args(
            "model_name=qwen3-next-80b-a3b override_model_config=true \
            base_emb_dim=128 base_num_decoder_layers=4 base_num_query_heads=4 base_num_kv_heads=2 head_dim=32 \
            base_mlp_dim=64 base_moe_mlp_dim=64 num_experts=8 num_experts_per_tok=2 shared_experts=1 vocab_size=1024 \
            gdn_key_head_dim=32 gdn_value_head_dim=32 gdn_num_key_heads=2 gdn_num_value_heads=4 gdn_chunk_size=64 \
            per_device_batch_size=1 max_target_length=128 attention=dot_product dtype=float32 weight_dtype=float32 \
            megablox=false sparse_matmul=false"
                .split_whitespace(),
        )
        .arg(format!("load_parameters_path={}", params.display()))
        .arg(format!("base_output_directory={}", out.display()))
        .arg(format!("metrics_file={}", metrics.display()))
        .current_dir(root());
    match prng {
        Some(v) => cmd.env(PRNG_IMPL_ENV, v),
        None => cmd.env_remove(PRNG_IMPL_ENV),
    };
    let o = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let loss = std::fs::read_to_string(&metrics).ok().and_then(|t| {
        let line: Value = serde_json::from_str(t.lines().next()?).ok()?;
        line["learning/lm_loss"].as_f64().or(line["learning/loss"].as_f64())
    });
    (o.status.success(), loss, stderr)
}

#[test]
fn train_step_sees_maxtexts_batch() {
    let out = std::env::temp_dir().join(format!("maxtext_synthetic_vs_jax_{}", std::process::id()));
    // A bad value is refused before anything compiles, naming the supported ones.
    let (ok, _, err) = train_step0(Some("philox4x32"), &out);
    assert!(!ok && err.contains("JAX_DEFAULT_PRNG_IMPL=\"philox4x32\"") && err.contains("threefry2x32"), "{err}");

    // The mean next-token cross-entropy of MaxText's own logits for these parameters on its synthetic batch
    // (its forward fixture; computed here in f64). On other tokens (e.g. threefry2x32's) the same
    // parameters give another loss.
    let bytes = std::fs::read(root().join("tests/fixtures/maxtext_qwen3next_tiny_trimmed/maxtext_forward_step0.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let logits: Vec<f64> = st.tensor("logits").unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect();
    let targets: Vec<usize> = st.tensor("target_ids").unwrap().data().chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as usize).collect();
    let want = logits
        .chunks_exact(1024)
        .zip(&targets)
        .map(|(row, &t)| {
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln() - row[t]
        })
        .sum::<f64>()
        / targets.len() as f64;
    let (ok, rbg, err) = train_step0(None, &out);
    assert!(ok, "{err}");
    let rbg = rbg.expect("a step-0 loss in the metrics file");
    println!("step-0 loss on the unsafe_rbg batch {rbg:.6}, MaxText's {want:.6}");
    assert!((rbg - want).abs() < 2e-5 * want, "step-0 loss {rbg} vs MaxText's {want} on its synthetic batch");

    let (ok, threefry, err) = train_step0(Some("threefry2x32"), &out);
    assert!(ok, "{err}");
    let threefry = threefry.unwrap();
    println!("step-0 loss on the threefry2x32 batch {threefry:.6}");
    assert!((threefry - rbg).abs() > 1e-3, "JAX_DEFAULT_PRNG_IMPL=threefry2x32 trained on the same batch ({threefry} vs {rbg})");
    std::fs::remove_dir_all(&out).ok();
}
