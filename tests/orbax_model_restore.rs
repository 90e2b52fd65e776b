//! The checkpoint MaxText 0.2.5 itself wrote (`tests/fixtures/maxtext_qwen3next_tiny_trimmed/`: every
//! parameter as MaxText wrote it, most optimizer moments left out; see its README) restores
//! into our model, and our forward pass on MaxText's input ids reproduces MaxText's own logits; the older
//! per-slot scanned layout (`decoder/layers/layer_{i}`) restores to the same parameters; damaged
//! checkpoints, a checkpoint for another model and a `scan_layers` mismatch give errors naming the leaf or
//! file.

use std::path::{Path, PathBuf};

use maxtext::checkpoint::hf::StackLayout;
use maxtext::checkpoint::orbax::{write_checkpoint, OrbaxCheckpoint};
use maxtext::checkpoint::params::{leaf_name, LayerLayout, ModelCheckpoint, RestoreError};
use maxtext::config::Config;
use maxtext::ir::DType;
use maxtext::nn::ParamDecl;
use maxtext::pjrt::{open_client, Hardware};
use maxtext::program::forward_program;
use maxtext::runtime::{HostTensor, Runtime};
use serde_json::json;

mod common;

/// The checkpoints root of MaxText's run (holding `0/items`).
fn fixture() -> PathBuf {
    common::maxtext_checkpoint()
}

/// The model of the fixture's README command (MaxText's 80B yml shrunk), float32 everywhere.
fn maxtext_config(extra: &[&str]) -> Config {
    let mut args: Vec<String> = "model_name=qwen3-next-80b-a3b override_model_config=true \
        base_emb_dim=128 base_num_decoder_layers=4 base_num_query_heads=4 base_num_kv_heads=2 head_dim=32 \
        base_mlp_dim=64 base_moe_mlp_dim=64 num_experts=8 num_experts_per_tok=2 shared_experts=1 vocab_size=1024 \
        gdn_key_head_dim=32 gdn_value_head_dim=32 gdn_num_key_heads=2 gdn_num_value_heads=4 gdn_chunk_size=64 \
        per_device_batch_size=1 max_target_length=128 attention=dot_product dtype=float32 weight_dtype=float32 \
        megablox=false sparse_matmul=false"
        .split_whitespace()
        .map(str::to_string)
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml"), &args).unwrap()
}

fn decls(cfg: &Config) -> Vec<ParamDecl> {
    maxtext::program::param_decls(cfg)
}

#[test]
fn maxtext_checkpoint_reproduces_maxtext_logits() {
    let dir = fixture();
    let cfg = maxtext_config(&[]);
    let fp = forward_program(&cfg, 1, 128).unwrap();
    // The checkpoints root resolves to its latest (only) step.
    let ckpt = ModelCheckpoint::open(&dir).unwrap();
    assert_eq!(ckpt.dir().as_local().unwrap(), dir.join("0/items"));
    assert_eq!(ckpt.layout(), LayerLayout::Scanned);
    assert_eq!(ckpt.scan_layers(), Some(true));
    assert_eq!(ckpt.state_step().unwrap(), Some(1));
    let params = ckpt.restore_params(&fp.decls, &cfg.model).unwrap();
    assert_eq!(params.len(), 36);

    // The rest of the train state reads by name, as stored.
    let mu = ckpt.read_leaf("opt_state.0.mu.params.decoder.decoder_norm.scale").unwrap();
    assert_eq!(mu.dims, vec![128]);

    let bytes = std::fs::read(dir.join("maxtext_forward_step0.safetensors")).unwrap();
    let golden = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids_view = golden.tensor("input_ids").unwrap();
    assert_eq!(ids_view.dtype(), safetensors::Dtype::I32);
    let ids = HostTensor::from_bytes(DType::S32, &[1, 128], ids_view.data().to_vec());
    let logits_view = golden.tensor("logits").unwrap();
    assert_eq!(logits_view.dtype(), safetensors::Dtype::F32);
    let want = HostTensor::from_bytes(DType::F32, &[1, 128, 1024], logits_view.data().to_vec()).to_f32();
    assert_eq!(ids.dims, vec![1, 128]);
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(1)).unwrap());
    let positions: Vec<i32> = (0..128).collect();
    let mut inputs = vec![ids, HostTensor::from_i32(&positions, &[1, 128])];
    inputs.extend(params);
    let got = rt.run(&fp.program, &inputs).unwrap()[0].to_f32();
    assert_eq!(got.len(), want.len());
    let max_abs = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let max_ref = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
    println!("MaxText checkpoint -> our forward: max |logit - MaxText logit| = {max_abs:.3e} (max |logit| {max_ref:.2})");
    assert!(max_abs < 2e-4, "max abs logit diff {max_abs} vs MaxText");
    let argmax = |row: &[f32]| row.iter().enumerate().fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
    for t in 0..128 {
        assert_eq!(argmax(&got[t * 1024..(t + 1) * 1024]), argmax(&want[t * 1024..(t + 1) * 1024]), "position {t}");
    }
}

/// Re-lays the fixture's 0.2.5 parameters as the older per-slot layout (`layer_0..layer_2` = the local
/// slots, `layer_3` = the global layer) and writes them as a params-only checkpoint.
fn write_per_slot(src: &ModelCheckpoint, decls: &[ParamDecl], root: &Path) -> PathBuf {
    let mut leaves = Vec::new();
    for d in decls {
        let t = src.read_leaf(&leaf_name(&d.path)).unwrap();
        if let Some(rest) = d.path.strip_prefix("decoder/layers/local_layers/") {
            let at = if d.dims.len() - 2 == 0 { 0 } else { 1 };
            let elem = t.dtype.size_bytes();
            let g = StackLayout {
                outer: d.dims[..=at].iter().product::<i64>() as usize,
                stack_total: d.dims[at + 1] as usize,
                inner_bytes: d.dims[at + 2..].iter().product::<i64>() as usize * elem,
            };
            let mut slot_dims = d.dims.clone();
            slot_dims.remove(at + 1);
            for i in 0..d.dims[at + 1] as usize {
                let slot = HostTensor::from_bytes(t.dtype, &slot_dims, g.take(&t.data, i));
                leaves.push((leaf_name(&format!("decoder/layers/layer_{i}/{rest}")), slot));
            }
        } else if let Some(rest) = d.path.strip_prefix("decoder/layers/global_layer/") {
            leaves.push((leaf_name(&format!("decoder/layers/layer_3/{rest}")), t));
        } else {
            leaves.push((leaf_name(&d.path), t));
        }
    }
    leaves.push(("step".into(), HostTensor::from_i32(&[5], &[])));
    write_checkpoint(root, 5, &leaves, json!({"scan_layers": true})).unwrap().as_local().unwrap().to_path_buf()
}

#[test]
fn per_slot_layout_restores_to_the_same_parameters() {
    let dir = fixture();
    let cfg = maxtext_config(&[]);
    let decls32 = decls(&cfg);
    let src = ModelCheckpoint::open(&dir.join("0/items")).unwrap();
    let want = src.restore_params(&decls32, &cfg.model).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let step_dir = write_per_slot(&src, &decls32, tmp.path());
    let names: Vec<String> = OrbaxCheckpoint::open(step_dir.join("items")).unwrap().leaves().iter().map(|l| l.name.clone()).collect();
    assert!(names.iter().any(|n| n.starts_with("params.params.decoder.layers.layer_2.attention.")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("local_layers")));

    // A step directory works as load_parameters_path too.
    let ckpt = ModelCheckpoint::open(&step_dir).unwrap();
    assert_eq!(ckpt.layout(), LayerLayout::PerSlot);
    let got = ckpt.restore_params(&decls32, &cfg.model).unwrap();
    for ((d, g), w) in decls32.iter().zip(&got).zip(&want) {
        assert_eq!(g, w, "{} differs after restacking the per-slot layout", d.path);
    }
    // Boxes (what a sharded load reads) restack the same way: halves of the first two dims.
    let sources = ckpt.plan(&decls32, &cfg.model).unwrap();
    for ((d, src), w) in decls32.iter().zip(&sources).zip(&want) {
        for axis in 0..d.dims.len().min(2) {
            let (mut o, mut b) = (vec![0; d.dims.len()], d.dims.clone());
            b[axis] = (d.dims[axis] / 2).max(1);
            o[axis] = d.dims[axis] - b[axis];
            let got = ckpt.read_param_region(d, src, &o, &b).unwrap();
            let slice = maxtext::sharding::extract_region(&w.data, &w.dims, &o, &b, w.dtype.size_bytes());
            assert!(got == slice, "{} box {o:?}+{b:?} of the per-slot layout", d.path);
        }
    }
    // Into bf16 parameters: converted on the way.
    let cfg16 = maxtext_config(&["weight_dtype=bfloat16"]);
    let decls16 = decls(&cfg16);
    let got16 = ckpt.restore_params(&decls16, &cfg16.model).unwrap();
    for ((d, g), w) in decls16.iter().zip(&got16).zip(&want) {
        assert_eq!(g.dtype, d.dtype);
        let close = g.to_f32().iter().zip(w.to_f32()).all(|(a, b)| (a - b).abs() <= b.abs() / 128.0);
        assert!(close, "{} in bf16", d.path);
    }
    // The per-slot checkpoint into an unscanned model: explained.
    let un = maxtext_config(&["scan_layers=false"]);
    let err = ckpt.restore_params(&decls(&un), &un.model).unwrap_err().to_string();
    assert!(err.contains("was written with scan_layers=true") && err.contains("pass scan_layers=true"), "{err}");
}

#[test]
fn scan_layers_mismatch_is_explained() {
    let dir = fixture();
    let cfg = maxtext_config(&["scan_layers=false"]);
    let ckpt = ModelCheckpoint::open(&dir.join("0")).unwrap();
    let err = ckpt.restore_params(&decls(&cfg), &cfg.model).unwrap_err();
    assert!(matches!(err, RestoreError::ScanLayersMismatch { ckpt: true, cfg: false, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("_CHECKPOINT_METADATA says scan_layers=true") && msg.contains("pass scan_layers=true"), "{msg}");
}

#[test]
fn checkpoint_for_another_model_names_leaf_and_shapes() {
    let dir = fixture();
    let cfg = maxtext_config(&["base_num_decoder_layers=8"]);
    let err = ModelCheckpoint::open(&dir).unwrap().restore_params(&decls(&cfg), &cfg.model).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, RestoreError::ShapeMismatch { .. }), "{msg}");
    assert!(msg.contains("params.params.decoder.layers."), "{msg}");
    assert!(msg.contains("[128, 1, 3]") && msg.contains("[128, 2, 3]"), "{msg}");
    assert!(msg.contains("another model") && msg.contains("4 decoder layers") && msg.contains("8 decoder layers"), "{msg}");

    let cfg = maxtext_config(&["base_emb_dim=64"]);
    let msg = ModelCheckpoint::open(&dir).unwrap().restore_params(&decls(&cfg), &cfg.model).unwrap_err().to_string();
    assert!(msg.contains("emb_dim 128") && msg.contains("emb_dim 64"), "{msg}");

    // A parameter missing from the checkpoint; one the model does not have.
    let cfg = maxtext_config(&[]);
    let decls32 = decls(&cfg);
    let src = ModelCheckpoint::open(&dir).unwrap();
    let mut leaves: Vec<(String, HostTensor)> = decls32
        .iter()
        .filter(|d| d.path != "decoder/decoder_norm/scale")
        .map(|d| (leaf_name(&d.path), src.read_leaf(&leaf_name(&d.path)).unwrap()))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    write_checkpoint(tmp.path(), 0, &leaves, json!({"scan_layers": true})).unwrap();
    let err = ModelCheckpoint::open(tmp.path()).unwrap().restore_params(&decls32, &cfg.model).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RestoreError::MissingLeaf { .. }), "{msg}");
    assert!(msg.contains("no leaf params.params.decoder.decoder_norm.scale") && msg.contains("[128]"), "{msg}");
    leaves.push((leaf_name("decoder/decoder_norm/scale"), HostTensor::from_f32(&[1.0; 128], &[128])));
    leaves.push((leaf_name("decoder/extra_norm/scale"), HostTensor::from_f32(&[1.0; 128], &[128])));
    write_checkpoint(tmp.path(), 1, &leaves, json!({"scan_layers": true})).unwrap();
    let err = ModelCheckpoint::open(tmp.path()).unwrap().restore_params(&decls32, &cfg.model).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RestoreError::UnusedLeaves { count: 1, .. }), "{msg}");
    assert!(msg.contains("params.params.decoder.extra_norm.scale"), "{msg}");

    // A checkpoint without parameters.
    let tmp = tempfile::tempdir().unwrap();
    write_checkpoint(tmp.path(), 0, &[("step".into(), HostTensor::from_i32(&[1], &[]))], json!({})).unwrap();
    let cfg = maxtext_config(&[]);
    let msg = ModelCheckpoint::open(tmp.path()).unwrap().restore_params(&decls(&cfg), &cfg.model).unwrap_err().to_string();
    assert!(msg.contains("holds no model parameters") && msg.contains("step"), "{msg}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A damaged copy of the fixture: `damage(items dir)` then restore; returns the error text.
fn restore_damaged(damage: impl FnOnce(&Path)) -> String {
    let dir = fixture();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&dir.join("0"), &tmp.path().join("0"));
    let items = tmp.path().join("0/items");
    damage(&items);
    let cfg = maxtext_config(&[]);
    let result = ModelCheckpoint::open(tmp.path()).and_then(|c| c.restore_params(&decls(&cfg), &cfg.model));
    result.err().expect("a damaged checkpoint must not restore").to_string()
}

#[test]
fn damaged_checkpoints_give_errors_naming_the_file_or_array() {
    // A truncated data file (the largest one: it holds chunks of parameter arrays).
    let msg = restore_damaged(|items| {
        let d = items.join("ocdbt.process_0/d");
        let biggest = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).max_by_key(|p| p.metadata().unwrap().len()).unwrap();
        let len = biggest.metadata().unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&biggest).unwrap().set_len(len / 2).unwrap();
    });
    println!("truncated chunk file: {msg}");
    assert!(msg.contains("ocdbt.process_0/d/") || msg.contains("array params."), "{msg}");

    // A corrupted manifest.
    let msg = restore_damaged(|items| {
        let m = items.join("manifest.ocdbt");
        let mut b = std::fs::read(&m).unwrap();
        let n = b.len();
        b[n / 2] ^= 0x5a;
        std::fs::write(&m, b).unwrap();
    });
    println!("corrupted manifest: {msg}");
    assert!(msg.contains("manifest.ocdbt"), "{msg}");

    // No _METADATA.
    let msg = restore_damaged(|items| std::fs::remove_file(items.join("_METADATA")).unwrap());
    println!("missing _METADATA: {msg}");
    assert!(msg.contains("has no _METADATA"), "{msg}");
}
