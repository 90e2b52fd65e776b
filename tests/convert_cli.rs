//! `maxtext convert` end to end through the binary: HF -> Orbax -> `check-logits` / `decode` with
//! `load_parameters_path` on the HF tiny reference (scanned and unscanned, `scan_layers` taken from the
//! checkpoint or explained), Orbax -> HF -> Orbax bit for bit (from MaxText's own checkpoint and from a bf16
//! conversion), refusing to overwrite, and a `convert` killed mid-write leaving nothing a restore accepts.

mod common;
mod convert_synthetic;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use maxtext::checkpoint::orbax::{list_steps, write_checkpoint, OrbaxCheckpoint, OrbaxError, TMP_MARKER};
use maxtext::checkpoint::params::{ModelCheckpoint, PARAMS_PREFIX};
use maxtext::ir::DType;
use maxtext::runtime::HostTensor;

/// The HF tiny reference (HF transformers' weights and golden logits / greedy tokens).
fn hf_fixture() -> PathBuf {
    common::shipped("hf/qwen3-next-tiny")
}

/// Its golden logits as the JSONL file `golden_logits_path` takes, written once per test binary.
fn golden_logits_jsonl() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = work("golden_logits").with_extension("jsonl");
        common::write_golden_jsonl(&common::golden_lines(&hf_fixture(), "golden_logits"), &path);
        path
    })
    .clone()
}

/// Runs `maxtext <args>`; returns (success, stdout, stderr).
fn maxtext(args: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running maxtext");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A directory for this test binary's outputs (under the target dir; recreated per run).
fn work(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("convert_cli_{}", std::process::id())).join(name);
    if d.exists() {
        std::fs::remove_dir_all(&d).unwrap();
    }
    std::fs::create_dir_all(d.parent().unwrap()).unwrap();
    d
}

/// Converts the HF fixture once per (scan_layers, weight_dtype) and returns the output root.
fn converted(scan: bool, dtype: &str) -> PathBuf {
    static DONE: OnceLock<std::sync::Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let key = format!("{scan}_{dtype}");
    let mut done = DONE.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = done.get(&key) {
        return p.clone();
    }
    let hf = hf_fixture();
    let out = work(&format!("hf_to_orbax_{key}"));
    let mut a = args(&["convert", "configs/base.yml"]);
    a.push(format!("hf_model_path={}", hf.display()));
    a.push(format!("base_output_directory={}", out.display()));
    a.push(format!("scan_layers={scan}"));
    if !dtype.is_empty() {
        a.push(format!("weight_dtype={dtype}"));
    }
    let (ok, stdout, stderr) = maxtext(&a);
    assert!(ok, "convert failed:\n{stdout}{stderr}");
    assert!(stdout.contains("wrote ") && stderr.contains("MB/s"), "{stdout}{stderr}");
    assert!(out.join("0/items/_METADATA").is_file());
    done.insert(key, out.clone());
    out
}

/// The tiny model's keys without HF's config.json (so the weights can only come from the checkpoint).
fn tiny_model() -> Vec<String> {
    args(&["model_name=qwen3-next-tiny", "override_model_config=true", "vocab_size=1024"])
}

fn check_logits(ckpt: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut a = args(&["check-logits", "configs/base.yml"]);
    a.extend(tiny_model());
    a.push(format!("load_parameters_path={}", ckpt.display()));
    a.push(format!("golden_logits_path={}", golden_logits_jsonl().display()));
    a.extend(args(&["dtype=float32", "weight_dtype=float32"]));
    a.extend(args(extra));
    maxtext(&a)
}

fn max_kl(out: &str) -> f64 {
    let line = out.lines().find(|l| l.starts_with("all ")).unwrap_or_else(|| panic!("no summary line in:\n{out}"));
    line.split("max KL ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn hf_to_orbax_scanned_passes_check_logits() {
    let out = converted(true, "float32");
    let md: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("0/_CHECKPOINT_METADATA")).unwrap()).unwrap();
    assert_eq!(md["custom_metadata"]["scan_layers"], serde_json::json!(true));
    let (ok, stdout, stderr) = check_logits(&out.join("0/items"), &[]);
    assert!(ok, "{stdout}{stderr}");
    let kl = max_kl(&stdout);
    println!("HF -> Orbax (scanned, f32) -> check-logits: max KL {kl:e}");
    assert!(kl < 2e-4 && stdout.contains("scan_layers=true"), "{stdout}");
}

#[test]
fn hf_to_orbax_unscanned_passes_check_logits_with_scan_layers_from_the_checkpoint() {
    let out = converted(false, "float32");
    // The checkpoints root (latest step), scan_layers not given: taken from the checkpoint, said on stderr.
    let (ok, stdout, stderr) = check_logits(&out, &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stderr.contains("was written with scan_layers=false; using scan_layers=false"), "{stderr}");
    let kl = max_kl(&stdout);
    println!("HF -> Orbax (unscanned, f32) -> check-logits: max KL {kl:e}");
    assert!(kl < 2e-4 && stdout.contains("scan_layers=false"), "{stdout}");
    // Given explicitly and wrong: explained, before anything is compiled.
    let (ok, stdout, stderr) = check_logits(&out.join("0"), &["scan_layers=true"]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("was written with scan_layers=false") && stderr.contains("pass scan_layers=false"), "{stderr}");
}

#[test]
fn decode_restores_from_load_full_state_path() {
    let out = converted(false, "float32");
    let golden = common::golden_lines(&hf_fixture(), "golden_greedy").swap_remove(1);
    let tokens: Vec<i64> = serde_json::from_value(golden["tokens"].clone()).unwrap();
    let want: Vec<i64> = serde_json::from_value(golden["new_tokens"].clone()).unwrap();
    let ids = tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let out_path = work("decode").with_extension("jsonl");
    let mut a = args(&["decode", "configs/base.yml"]);
    a.extend(tiny_model());
    // load_full_state_path restores the params of a (here params-only) checkpoint too.
    a.push(format!("load_full_state_path={}", out.join("0/items").display()));
    a.push(format!("prompt_token_ids={ids}"));
    a.extend(args(&["per_device_batch_size=1", "dtype=float32", "weight_dtype=float32", "max_target_length=23", "max_prefill_predict_length=16"]));
    a.push(format!("decode_output_path={}", out_path.display()));
    let (ok, stdout, stderr) = maxtext(&a);
    assert!(ok, "{stdout}{stderr}");
    let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&out_path).unwrap().lines().next().unwrap()).unwrap();
    let got: Vec<i64> = serde_json::from_value(line["generated_tokens"].clone()).unwrap();
    assert_eq!(got, want, "greedy tokens from the converted checkpoint vs HF");
}

/// Every `params.params.*` array of two item directories: same names, dtypes, shapes and bytes.
fn assert_params_bit_identical(a: &Path, b: &Path) -> usize {
    let (a, b) = (OrbaxCheckpoint::open(a).unwrap(), OrbaxCheckpoint::open(b).unwrap());
    let names = |c: &OrbaxCheckpoint| -> Vec<String> {
        c.leaves().iter().filter(|l| l.name.starts_with(PARAMS_PREFIX)).map(|l| l.name.clone()).collect()
    };
    assert_eq!(names(&a), names(&b));
    for n in names(&a) {
        assert_eq!(a.read_array(&n).unwrap(), b.read_array(&n).unwrap(), "{n} differs after the round trip");
    }
    names(&a).len()
}

const MAXTEXT_MODEL: &str = "model_name=qwen3-next-80b-a3b override_model_config=true base_emb_dim=128 \
    base_num_decoder_layers=4 base_num_query_heads=4 base_num_kv_heads=2 head_dim=32 base_mlp_dim=64 \
    base_moe_mlp_dim=64 num_experts=8 num_experts_per_tok=2 shared_experts=1 vocab_size=1024 gdn_key_head_dim=32 \
    gdn_value_head_dim=32 gdn_num_key_heads=2 gdn_num_value_heads=4 gdn_chunk_size=64";

#[test]
fn maxtext_checkpoint_to_hf_and_back_is_bit_identical() {
    // The checkpoint MaxText wrote (its parameters are all in the trimmed copy).
    let mt = common::maxtext_checkpoint();
    let hf = work("maxtext_to_hf");
    let mut a = args(&["convert", "configs/base.yml", "direction=to_hf"]);
    a.extend(MAXTEXT_MODEL.split_whitespace().map(str::to_string));
    a.push(format!("load_parameters_path={}", mt.join("0/items").display()));
    a.push(format!("out_dir={}", hf.display()));
    let (ok, stdout, stderr) = maxtext(&a);
    assert!(ok, "{stdout}{stderr}");
    assert!(hf.join("config.json").is_file() && hf.join("model.safetensors").is_file());
    // Writing it again is refused.
    let (ok, _, stderr) = maxtext(&a);
    assert!(!ok && stderr.contains("refusing to overwrite"), "{stderr}");

    // Back to Orbax with the architecture from the exported config.json, in the stored float32.
    let back = work("maxtext_back");
    let mut a = args(&["convert", "configs/base.yml", "weight_dtype=float32"]);
    a.push(format!("hf_model_path={}", hf.display()));
    a.push(format!("base_output_directory={}", back.display()));
    let (ok, stdout, stderr) = maxtext(&a);
    assert!(ok, "{stdout}{stderr}");
    let n = assert_params_bit_identical(&mt.join("0/items"), &back.join("0/items"));
    assert_eq!(n, 36);
}

#[test]
fn bf16_conversion_round_trips_bit_identically() {
    let hf_src = hf_fixture();
    // weight_dtype not given: bfloat16, as MaxText's to_maxtext.
    let first = work("bf16_first");
    let mut a = args(&["convert", "configs/base.yml"]);
    a.push(format!("hf_model_path={}", hf_src.display()));
    a.push(format!("base_output_directory={}", first.display()));
    let (ok, stdout, stderr) = maxtext(&a);
    assert!(ok && stderr.contains("converting to bfloat16"), "{stdout}{stderr}");
    let ckpt = OrbaxCheckpoint::open(first.join("0/items")).unwrap();
    let emb = ckpt.leaf("params.params.token_embedder.embedding").unwrap();
    assert_eq!(emb.dtype.and_then(|d| d.to_host()), Some(DType::BF16));
    // Converting into an existing step is refused.
    let (ok, _, stderr) = maxtext(&a);
    assert!(!ok && stderr.contains("refusing to overwrite"), "{stderr}");

    let hf = work("bf16_hf");
    let mut a = args(&["convert", "configs/base.yml", "direction=to_hf"]);
    a.extend(tiny_model());
    a.push(format!("load_parameters_path={}", first.display()));
    a.push(format!("out_dir={}", hf.display()));
    let (ok, stdout, stderr) = maxtext(&a);
    assert!(ok, "{stdout}{stderr}");
    let back = work("bf16_back");
    let mut a = args(&["convert", "configs/base.yml"]);
    a.push(format!("hf_model_path={}", hf.display()));
    a.push(format!("base_output_directory={}", back.display()));
    let (ok, stdout, stderr) = maxtext(&a);
    assert!(ok, "{stdout}{stderr}");
    assert_params_bit_identical(&first.join("0/items"), &back.join("0/items"));
}

#[test]
fn hf_to_orbax_to_hf_gives_back_the_hf_tensors() {
    let hf_src = hf_fixture();
    let orbax = converted(false, "float32");
    let hf = work("f32_unscanned_hf");
    let mut a = args(&["convert", "configs/base.yml", "direction=to_hf"]);
    a.extend(tiny_model());
    a.push(format!("load_parameters_path={}", orbax.display()));
    a.push(format!("out_dir={}", hf.display()));
    let (ok, stdout, stderr) = maxtext(&a);
    assert!(ok, "{stdout}{stderr}");
    let (src, ours) = (std::fs::read(hf_src.join("model.safetensors")).unwrap(), std::fs::read(hf.join("model.safetensors")).unwrap());
    let (src, ours) = (safetensors::SafeTensors::deserialize(&src).unwrap(), safetensors::SafeTensors::deserialize(&ours).unwrap());
    let mut names: Vec<String> = src.names().into_iter().filter(|n| !n.starts_with("mtp.")).map(str::to_string).collect();
    names.sort();
    let mut ours_names: Vec<String> = ours.names().into_iter().map(str::to_string).collect();
    ours_names.sort();
    assert_eq!(names, ours_names);
    for n in &names {
        let (a, b) = (src.tensor(n).unwrap(), ours.tensor(n).unwrap());
        assert_eq!((a.dtype(), a.shape(), a.data()), (b.dtype(), b.shape(), b.data()), "{n}");
    }
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    let orig: serde_json::Value = serde_json::from_slice(&std::fs::read(hf_src.join("config.json")).unwrap()).unwrap();
    for k in ["hidden_size", "num_hidden_layers", "layer_types", "moe_intermediate_size", "shared_expert_intermediate_size", "vocab_size", "linear_key_head_dim"] {
        assert_eq!(cfg[k], orig[k], "config.json {k}");
    }
}

#[test]
fn usage_errors_are_clear() {
    let (ok, _, stderr) = maxtext(&args(&["convert", "configs/base.yml", "model_name=qwen3-next-tiny"]));
    assert!(!ok && stderr.contains("set hf_model_path=DIR"), "{stderr}");
    let (ok, _, stderr) = maxtext(&args(&["convert", "configs/base.yml", "direction=to_hf", "model_name=qwen3-next-tiny"]));
    assert!(!ok && stderr.contains("needs load_parameters_path"), "{stderr}");
    let (ok, _, stderr) = maxtext(&args(&["convert", "configs/base.yml", "direction=sideways"]));
    assert!(!ok && stderr.contains("direction=sideways"), "{stderr}");
    let (ok, _, stderr) = maxtext(&args(&["check-logits", "configs/base.yml", "model_name=qwen3-next-tiny", "load_parameters_path=/nonexistent/ckpt", "golden_logits_path=x"]));
    assert!(!ok && stderr.contains("/nonexistent/ckpt") && stderr.contains("does not exist"), "{stderr}");
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The unfinished step directory `convert` is writing, once a data file has bytes in it.
fn writing_tmp_dir(root: &Path) -> Option<PathBuf> {
    for e in std::fs::read_dir(root).ok()? {
        let p = e.ok()?.path();
        if !p.file_name()?.to_string_lossy().contains(TMP_MARKER) {
            continue;
        }
        let data = p.join("items/ocdbt.process_0/d");
        let has_bytes = std::fs::read_dir(&data).ok()?.flatten().any(|f| f.metadata().is_ok_and(|m| m.len() > 0));
        if has_bytes {
            return Some(p);
        }
    }
    None
}

#[test]
fn killed_convert_leaves_nothing_restorable_and_earlier_steps_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    // ~220 MB of bf16 weights: long enough to be caught mid-write.
    let cfg = convert_synthetic::scaled_config(512, 8, 32, 256, 8192, &[]);
    let hf = tmp.path().join("hf");
    let total = convert_synthetic::write_synthetic_hf(&hf, &cfg, DType::BF16, 64 << 20, 7);
    assert!(total > 150 << 20, "{total}");
    let root = tmp.path().join("out");
    write_checkpoint(&root, 7, &[("params.params.x".into(), HostTensor::from_f32(&[1.0, 2.0], &[2]))], serde_json::json!({})).unwrap();
    let before = snapshot(&root.join("7"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .args(["convert", "configs/base.yml"])
        .arg(format!("hf_model_path={}", hf.display()))
        .arg(format!("base_output_directory={}", root.display()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let writing = loop {
        if let Some(d) = writing_tmp_dir(&root) {
            break d;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("convert ended ({status}) before it could be killed mid-write; make the synthetic checkpoint bigger:\n{err}");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "convert never started writing");
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!root.join("0").exists(), "a killed convert must not leave step 0");

    // What is left is not a checkpoint to any restore path.
    assert_eq!(list_steps(&root).unwrap(), vec![7]);
    assert!(matches!(OrbaxCheckpoint::open(writing.join("items")), Err(OrbaxError::Incomplete { .. })));
    assert!(ModelCheckpoint::open(&writing).is_err());
    assert!(ModelCheckpoint::open(&writing.join("items")).is_err());
    assert_eq!(ModelCheckpoint::open(&root).unwrap().dir().as_local().unwrap(), root.join("7/items"));
    assert_eq!(snapshot(&root.join("7")), before, "the earlier checkpoint changed");
    assert_eq!(OrbaxCheckpoint::open(root.join("7/items")).unwrap().read("params.params.x").unwrap().to_f32(), vec![1.0, 2.0]);

    // A new convert into the same root is not blocked by the leftover and restores.
    let (ok, stdout, stderr) = maxtext(&[
        "convert".into(),
        "configs/base.yml".into(),
        format!("hf_model_path={}", hf.display()),
        format!("base_output_directory={}", root.display()),
    ]);
    assert!(ok, "{stdout}{stderr}");
    let ckpt = ModelCheckpoint::open(&root.join("0")).unwrap();
    let decls = maxtext::program::param_decls(&convert_synthetic::scaled_config(512, 8, 32, 256, 8192, &["weight_dtype=bfloat16"]));
    let params = ckpt.restore_params(&decls, &cfg.model).unwrap();
    assert_eq!(params.len(), decls.len());
}
