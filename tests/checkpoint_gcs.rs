//! Orbax checkpoints on `gs://` against the real GCS emulator (fake-gcs-server) on loopback, through the
//! `maxtext` binary: convert to a bucket (by one process, and by two together) and check logits from it,
//! train with `base_output_directory` in a bucket and resume from it exactly, the same objects as a local
//! checkpoint, and unfinished saves never restorable.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::gcs::{shared_emulator, Emulator};
use common::strings;
use common::gcs_faults::{Fault, FaultProxy};
use maxtext::checkpoint::orbax::{list_steps, OrbaxCheckpoint, OrbaxError};
use maxtext::storage::Location;

fn emulator(bucket: &str) -> &'static Emulator {
    let emu = shared_emulator();
    emu.create_bucket(bucket);
    emu
}

/// Runs `maxtext <args>` against the emulator; returns (success, stdout + stderr).
fn maxtext(args: &[String]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STORAGE_EMULATOR_HOST", format!("127.0.0.1:{}", shared_emulator().port))
        .output()
        .expect("running maxtext");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn work(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("checkpoint_gcs_{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn golden_logits_jsonl() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = work("golden").join("golden_logits.jsonl");
        common::write_golden_jsonl(&common::golden_lines(&common::shipped("hf/qwen3-next-tiny"), "golden_logits"), &path);
        path
    })
    .clone()
}

fn max_kl(out: &str) -> f64 {
    let line = out.lines().find(|l| l.starts_with("all ")).unwrap_or_else(|| panic!("no summary line in:\n{out}"));
    line.split("max KL ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

fn check_logits(load_parameters_path: &str) -> (bool, String) {
    let mut a = strings(&["check-logits", "configs/base.yml", "model_name=qwen3-next-tiny", "override_model_config=true", "vocab_size=1024"]);
    a.push(format!("load_parameters_path={load_parameters_path}"));
    a.push(format!("golden_logits_path={}", golden_logits_jsonl().display()));
    a.extend(strings(&["dtype=float32", "weight_dtype=float32"]));
    maxtext(&a)
}

fn convert(base_output_directory: &str) -> (bool, String) {
    let mut a = strings(&["convert", "configs/base.yml", "scan_layers=true", "weight_dtype=float32"]);
    a.push(format!("hf_model_path={}", common::shipped("hf/qwen3-next-tiny").display()));
    a.push(format!("base_output_directory={base_output_directory}"));
    maxtext(&a)
}

#[test]
fn convert_to_a_bucket_then_check_logits_from_it() {
    let _emu = emulator("conv");
    let local = work("conv_local");
    let (ok, out) = convert(&local.display().to_string());
    assert!(ok, "{out}");
    let (ok, out) = convert("gs://conv/qwen3-next-tiny");
    assert!(ok, "{out}");
    assert!(out.contains("wrote gs://conv/qwen3-next-tiny/0/items"), "{out}");
    // A second convert to the same place is refused, as locally.
    let (ok, out) = convert("gs://conv/qwen3-next-tiny");
    assert!(!ok && out.contains("already exists"), "{out}");

    let (ok, from_bucket) = check_logits("gs://conv/qwen3-next-tiny/0/items");
    assert!(ok, "{from_bucket}");
    let (ok, from_disk) = check_logits(&local.join("0/items").display().to_string());
    assert!(ok, "{from_disk}");
    let (kl_bucket, kl_disk) = (max_kl(&from_bucket), max_kl(&from_disk));
    println!("check-logits max KL: from gs:// {kl_bucket:e}, from the local copy {kl_disk:e}");
    assert!(kl_bucket < 2e-4);
    assert_eq!(kl_bucket, kl_disk, "the same checkpoint read from the bucket and from disk must give the same logits");
}

/// Two processes convert into one bucket checkpoint (each its own `ocdbt.process_<i>` objects, process 0
/// merging and writing `commit_success.txt` last): every array equals a one-process local conversion.
#[test]
fn two_processes_convert_into_one_bucket_checkpoint() {
    let emu = emulator("multi");
    let local = work("multi_local");
    let (ok, out) = convert(&local.display().to_string());
    assert!(ok, "{out}");
    let port = common::gcs::free_port();
    let mut a = strings(&["convert", "configs/base.yml", "scan_layers=true", "weight_dtype=float32", "num_processes=2", "jax_distributed_initialization_timeout=60"]);
    a.push(format!("hf_model_path={}", common::shipped("hf/qwen3-next-tiny").display()));
    a.push("base_output_directory=gs://multi/80b".into());
    a.push(format!("coordinator_address=127.0.0.1:{port}"));
    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_maxtext"))
                .args(&a)
                .arg(format!("process_id={i}"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("STORAGE_EMULATOR_HOST", format!("127.0.0.1:{}", emu.port))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "process {i}:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    let names: Vec<String> = emu.objects("multi", "80b/0/").into_iter().map(|(n, _)| n).collect();
    for want in ["commit_success.txt", "items/manifest.ocdbt", "items/ocdbt.process_0/manifest.ocdbt", "items/ocdbt.process_1/manifest.ocdbt", "items/array_metadatas/process_1"] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    let remote = OrbaxCheckpoint::open(Location::parse("gs://multi/80b/0/items").unwrap()).unwrap();
    let disk = OrbaxCheckpoint::open(local.join("0/items")).unwrap();
    let arrays: Vec<String> = disk.leaves().iter().filter(|l| l.is_array()).map(|l| l.name.clone()).collect();
    assert_eq!(arrays.len(), 36);
    for n in &arrays {
        assert!(remote.read(n).unwrap().data == disk.read(n).unwrap().data, "{n} differs from the local one-process conversion");
    }
}

/// A tiny synthetic-data training run (run name `r`) under `base`, plus `extra` keys.
fn train_args(base: &str, metrics: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = common::tiny_train_args(&[
        "dataset_type=synthetic",
        "per_device_batch_size=2",
        "dtype=float32",
        "learning_rate=1e-3",
        "checkpoint_period=2",
        // The schedule's length fixed, so that a run of fewer steps follows the same learning rates.
        "learning_rate_schedule_steps=8",
        "enable_tensorboard=false",
    ]);
    a.push(format!("base_output_directory={base}"));
    a.push(format!("metrics_file={}", metrics.display()));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// step -> loss (the last line of a step wins: a resumed run logs it again).
fn losses(metrics: &Path) -> BTreeMap<u64, f64> {
    std::fs::read_to_string(metrics)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| (v["step"].as_f64().unwrap() as u64, v["learning/loss"].as_f64().unwrap()))
        .collect()
}

/// A file of a checkpoint with what may differ between two saves of the same state taken out: the
/// timestamps of `_CHECKPOINT_METADATA` and the path in `commit_success.txt`. OCDBT files (random
/// database ids and data file names) are compared through their decoded keys and values instead.
fn comparable(name: &str, bytes: &[u8]) -> Vec<u8> {
    if name.ends_with("_CHECKPOINT_METADATA") {
        let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        v["init_timestamp_nsecs"] = 0.into();
        v["commit_timestamp_nsecs"] = 0.into();
        return v.to_string().into_bytes();
    }
    if name.ends_with("commit_success.txt") {
        return b"Checkpoint commit was successful".to_vec();
    }
    bytes.to_vec()
}

/// A file name with the random parts of OCDBT's layout (`d/<32 hex>`) replaced by their order.
fn normalised(names: &[String]) -> Vec<String> {
    let mut seen = BTreeMap::new();
    names
        .iter()
        .map(|n| match n.rsplit_once("/d/") {
            Some((dir, file)) if file.len() == 32 && file.bytes().all(|b| b.is_ascii_hexdigit()) => {
                let k = seen.entry(dir.to_string()).or_insert(0);
                *k += 1;
                format!("{dir}/d/#{k}")
            }
            _ => n.clone(),
        })
        .collect()
}

#[test]
fn training_in_a_bucket_checkpoints_like_local_and_resumes_exactly() {
    let emu = emulator("train");
    let dir = work("train");
    // Uninterrupted, locally: the losses to match, and the checkpoint layout to compare with.
    let (ok, log) = maxtext(&train_args(&dir.join("local").display().to_string(), &dir.join("local.jsonl"), &["steps=5"]));
    assert!(ok, "{log}");
    let want = losses(&dir.join("local.jsonl"));
    assert_eq!(want.len(), 5, "{log}");

    // The same run into the bucket, stopped after 3 steps (checkpoints 0 and 2), then continued to 5 steps.
    let gcs_metrics = dir.join("gcs.jsonl");
    let (ok, log) = maxtext(&train_args("gs://train/runs", &gcs_metrics, &["steps=3"]));
    assert!(ok, "{log}");
    let root = Location::parse("gs://train/runs/r/checkpoints").unwrap();
    assert_eq!(list_steps(&root).unwrap(), vec![0, 2]);
    let (ok, log) = maxtext(&train_args("gs://train/runs", &gcs_metrics, &["steps=5"]));
    assert!(ok, "{log}");
    assert!(log.contains("resuming from checkpoint gs://train/runs/r/checkpoints/2"), "{log}");
    let got = losses(&gcs_metrics);
    assert_eq!(got, want, "the run resumed from the bucket must log the uninterrupted run's losses");

    // Step 4 in the bucket against step 4 on disk: same object names (random OCDBT file ids aside), same
    // bytes (timestamps and paths aside), same OCDBT keys and values.
    let local_step = dir.join("local/r/checkpoints/4");
    let local: Vec<(String, u64)> = Location::Local(local_step.clone()).walk().unwrap();
    let bucket = emu.objects("train", "runs/r/checkpoints/4");
    let local_names: Vec<String> = local.iter().map(|(n, _)| n.clone()).collect();
    let bucket_names: Vec<String> = bucket.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(normalised(&bucket_names), normalised(&local_names));
    for (name, bytes) in &bucket {
        if name.contains("/d/") || name.ends_with("manifest.ocdbt") {
            continue;
        }
        let ours = std::fs::read(local_step.join(name)).unwrap();
        assert_eq!(comparable(name, bytes), comparable(name, &ours), "{name} differs between the bucket and disk");
    }
    // A new run from checkpoint 2's full state in the bucket (load_full_state_path=gs://...) takes up after
    // step 2, as the resumed run did.
    let from_full = dir.join("from_full.jsonl");
    let (ok, log) = maxtext(&train_args("gs://train/other", &from_full, &["steps=5", "load_full_state_path=gs://train/runs/r/checkpoints/2/items"]));
    assert!(ok, "{log}");
    assert_eq!(losses(&from_full), want.range(3..).map(|(k, v)| (*k, *v)).collect::<BTreeMap<_, _>>(), "{log}");
    let (a, b) = (OrbaxCheckpoint::open(root.join("4/items")).unwrap(), OrbaxCheckpoint::open(local_step.join("items")).unwrap());
    let names = |c: &OrbaxCheckpoint| c.leaves().iter().map(|l| l.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    for leaf in a.leaves().iter().filter(|l| l.is_array()) {
        assert!(a.read_array(&leaf.name).unwrap() == b.read_array(&leaf.name).unwrap(), "{} differs", leaf.name);
    }
}

#[test]
fn killed_mid_save_into_a_bucket_resumes_bit_exactly() {
    let emu = emulator("killed");
    let dir = work("killed");
    let a = |metrics: &Path| train_args("gs://killed/runs", metrics, &["steps=7", "async_checkpointing=true"]);
    let local = train_args(&dir.join("local").display().to_string(), &dir.join("local.jsonl"), &["steps=7"]);
    let (ok, log) = maxtext(&local);
    assert!(ok, "{log}");
    let want = losses(&dir.join("local.jsonl"));
    assert_eq!(want.len(), 7, "{log}");

    // The run talks to the bucket through a slow link (every request held 150 ms), so that a save takes
    // seconds; it is killed once step 4's first objects are in the bucket and before its commit marker.
    let proxy = FaultProxy::start(emu, Fault::Slow { ms: 150 });
    let metrics = dir.join("gcs.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .args(a(&metrics))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STORAGE_EMULATOR_HOST", proxy.host())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let names: Vec<String> = emu.objects("killed", "runs/r/checkpoints/4").into_iter().map(|(n, _)| n).collect();
        if !names.is_empty() {
            assert!(!names.iter().any(|n| n == "commit_success.txt"), "step 4 committed before it could be killed: {names:?}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "the run did not start saving step 4");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL, mid-save
    child.wait().unwrap();
    let root = Location::parse("gs://killed/runs/r/checkpoints").unwrap();
    let steps = list_steps(&root).unwrap();
    assert!(!steps.contains(&4) && steps.contains(&2), "step 4 must not count as saved: {steps:?}");
    assert!(root.join("4").is_dir().unwrap(), "the killed save left objects behind (what this test is about)");

    // The same command again, straight to the emulator: resumes from the last committed step and logs the
    // uninterrupted run's losses bit for bit.
    let (ok, log) = maxtext(&a(&metrics));
    assert!(ok, "{log}");
    assert!(log.contains("resuming from checkpoint gs://killed/runs/r/checkpoints/2"), "{log}");
    let got = losses(&metrics);
    assert_eq!(got.len(), 7, "{got:?}");
    for (step, w) in &want {
        assert_eq!(got[step].to_bits(), w.to_bits(), "step {step}: resumed run logs {} but the uninterrupted run {w}", got[step]);
    }
    assert_eq!(list_steps(&root).unwrap().last(), Some(&6));
}

#[test]
fn an_unfinished_save_in_a_bucket_is_never_restored() {
    let emu = emulator("partial");
    let dir = work("partial");
    let (ok, log) = maxtext(&train_args("gs://partial/runs", &dir.join("m.jsonl"), &["steps=4"]));
    assert!(ok, "{log}");
    let root = Location::parse("gs://partial/runs/r/checkpoints").unwrap();
    assert_eq!(list_steps(&root).unwrap(), vec![0, 2, 3]);
    // What a save killed before its commit leaves: every object of step 3 but the commit markers.
    for marker in ["3/commit_success.txt", "3/items/commit_success.txt"] {
        root.join(marker).remove_all().unwrap();
    }
    assert!(root.join("3/items/_METADATA").is_file().unwrap());
    assert_eq!(list_steps(&root).unwrap(), vec![0, 2], "a step without commit_success.txt is not a step");
    let e = OrbaxCheckpoint::open(root.join("3/items")).unwrap_err();
    assert!(matches!(e, OrbaxError::Incomplete { .. }), "{e}");
    assert!(e.to_string().contains("incomplete checkpoint") && e.to_string().contains("commit_success.txt"), "{e}");
    let (ok, out) = check_logits("gs://partial/runs/r/checkpoints/3/items");
    assert!(!ok && out.contains("incomplete checkpoint"), "{out}");

    // The run resumes from step 2 and saves step 3 again over the leftovers.
    let (ok, log) = maxtext(&train_args("gs://partial/runs", &dir.join("m.jsonl"), &["steps=4"]));
    assert!(ok, "{log}");
    assert!(log.contains("resuming from checkpoint gs://partial/runs/r/checkpoints/2"), "{log}");
    assert!(log.contains("holds an unfinished save"), "{log}");
    assert_eq!(list_steps(&root).unwrap(), vec![0, 2, 3]);
    // And goes on from it, keeping the newest two steps (older ones lose their marker first).
    let (ok, log) = maxtext(&train_args("gs://partial/runs", &dir.join("m.jsonl"), &["steps=6", "max_num_checkpoints_to_keep=2"]));
    assert!(ok, "{log}");
    assert!(log.contains("resuming from checkpoint gs://partial/runs/r/checkpoints/3"), "{log}");
    assert_eq!(list_steps(&root).unwrap(), vec![4, 5], "max_num_checkpoints_to_keep=2 keeps the newest two");
    let names: Vec<String> = emu.objects("partial", "runs/r/checkpoints").into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().all(|n| n.starts_with("4/") || n.starts_with("5/")), "older steps were removed: {names:?}");
}

#[test]
fn missing_bucket_and_missing_checkpoint_are_explained() {
    let _emu = emulator("present");
    let (ok, out) = check_logits("gs://no-such-bucket/ckpt/0/items");
    assert!(!ok && out.contains("bucket gs://no-such-bucket does not exist"), "{out}");
    let (ok, out) = check_logits("gs://present/nothing/0/items");
    assert!(!ok && out.contains("gs://present/nothing/0/items") && out.contains("does not exist"), "{out}");
    let (ok, out) = convert("s3://elsewhere/ckpt");
    assert!(!ok && out.contains("s3:// is not supported"), "{out}");
}

/// Off an emulator, requests carry the access token of Google's credential chain; here its last link,
/// the GCE / TPU VM metadata server (a real HTTP server on loopback named by `GCE_METADATA_HOST`, as on a
/// TPU VM), with the endpoint moved to a proxy in front of the emulator that records what arrives.
#[test]
fn credentials_from_the_vm_metadata_server_sign_every_request() {
    let emu = emulator("creds");
    let metadata = common::gcs_faults::MetadataServer::start("ya29.test-token-from-metadata");
    let proxy = FaultProxy::start(emu, Fault::None);
    let home = work("creds_home"); // no gcloud application-default credentials file in it
    let mut a = strings(&["convert", "configs/base.yml", "scan_layers=true", "weight_dtype=float32"]);
    a.push(format!("hf_model_path={}", common::shipped("hf/qwen3-next-tiny").display()));
    a.push("base_output_directory=gs://creds/ckpt".into());
    let out = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .args(&a)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("STORAGE_EMULATOR_HOST")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env("HOME", &home)
        .env("GCE_METADATA_HOST", format!("127.0.0.1:{}", metadata.port))
        .env("MAXTEXT_GCS_ENDPOINT", format!("http://{}", proxy.host()))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(metadata.requests() >= 1, "no token was asked of the metadata server");
    let log = proxy.log();
    let signed = log.lines().filter(|l| *l == "authorization: Bearer ya29.test-token-from-metadata").count();
    // Chunks of a resumable upload go to its session URI, which is the credential (GCS needs no token there).
    let requests = log.lines().filter(|l| !l.starts_with("authorization:") && !l.contains("upload_id=")).count();
    assert!(signed > 0 && signed == requests, "every request must carry the token ({signed} signed of {requests}):\n{log}");
    assert!(emu.objects("creds", "ckpt/0").iter().any(|(n, _)| n == "commit_success.txt"));
}
