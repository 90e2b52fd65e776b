//! Several `maxtext` processes on this machine as one run (what every host of a TPU slice does), through
//! the coordinator process 0 serves on loopback:
//! - `convert`: two processes agree on their indices, each reads and writes its share of every parameter
//!   into its own `ocdbt.process_<i>` database, and process 0 merges and commits one checkpoint, which the
//!   real orbax restores whole and bit-exact (equal to a one-process conversion);
//! - `train`: each process reads a disjoint share of the data (every other document), then stops where the
//!   XLA CPU plugin stops: it cannot run a program across processes;
//! - the errors of a bad process setup.

mod common;

use common::orbax::{orbax_dump, orbax_python};
use common::strings;
use maxtext::checkpoint::orbax::OrbaxCheckpoint;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_maxtext"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// A free loopback port for a coordinator.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `maxtext <args>` as process `index` of `count` with the coordinator at `port`.
fn spawn(args: &[String], index: usize, count: usize, port: u16) -> Child {
    bin()
        .args(args)
        .args([format!("num_processes={count}"), format!("process_id={index}"), format!("coordinator_address=127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting maxtext")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `args` as `count` processes at once; their outputs in index order.
fn run_processes(args: &[String], count: usize) -> Vec<Output> {
    let port = free_port();
    let children: Vec<Child> = (0..count).map(|i| spawn(args, i, count, port)).collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

fn convert_args(out: &Path) -> Vec<String> {
    let hf = common::shipped("hf/qwen3-next-tiny");
    let mut a = strings(&["convert", "configs/base.yml", "weight_dtype=float32", "jax_distributed_initialization_timeout=60"]);
    a.push(format!("hf_model_path={}", hf.display()));
    a.push(format!("base_output_directory={}", out.display()));
    a
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|r| r.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

#[test]
fn two_processes_convert_into_one_checkpoint_that_orbax_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let o = bin().args(convert_args(&one)).output().unwrap();
    assert!(o.status.success(), "one-process convert failed:\n{}", text(&o));
    let outs = run_processes(&convert_args(&two), 2);
    for (i, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "process {i} of the two-process convert failed:\n{}", text(o));
        assert!(text(o).contains(&format!("process {i} of 2: all 2 processes joined")), "{}", text(o));
    }
    let items = two.join("0/items");
    // orbax's multi-process layout: a database and array metadata per process, one merged root.
    for p in 0..2 {
        let db = items.join(format!("ocdbt.process_{p}"));
        assert!(db.join("manifest.ocdbt").is_file(), "no {}/manifest.ocdbt", db.display());
        let data: u64 = files_under(&db.join("d")).iter().map(|f| f.metadata().unwrap().len()).sum();
        assert!(data > 100_000, "process {p} wrote only {data} bytes of data");
        assert!(items.join(format!("array_metadatas/process_{p}")).is_file());
    }
    assert!(items.join("manifest.ocdbt").is_file() && two.join("0/commit_success.txt").is_file());
    assert!(files_under(&two).iter().all(|f| !f.to_string_lossy().contains(".orbax-checkpoint-tmp")), "a temporary directory was left");

    // Our reader: every array equals the one-process conversion's.
    let (a, b) = (OrbaxCheckpoint::open(one.join("0/items")).unwrap(), OrbaxCheckpoint::open(&items).unwrap());
    let arrays = |c: &OrbaxCheckpoint| -> Vec<String> { c.leaves().iter().filter(|l| l.is_array()).map(|l| l.name.clone()).collect() };
    let names = arrays(&a);
    assert_eq!(names, arrays(&b));
    for n in &names {
        assert!(a.read(n).unwrap().data == b.read(n).unwrap().data, "{n} differs from the one-process conversion");
    }
    // The real orbax restores it whole, bit for bit the one-process conversion.
    let Some(py) = orbax_python() else { return };
    let (da, db) = (tmp.path().join("dump_one"), tmp.path().join("dump_two"));
    orbax_dump(py, &one.join("0/items"), &da, 1);
    orbax_dump(py, &items, &db, 1);
    let index = |d: &Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(d.join("restored.json")).unwrap()).unwrap() };
    let (ia, ib) = (index(&da), index(&db));
    assert_eq!(ia.as_array().unwrap().len(), names.len());
    for e in ia.as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let f = format!("{name}.bin");
        assert!(std::fs::read(da.join(&f)).unwrap() == std::fs::read(db.join(&f)).unwrap(), "orbax restored {name} differently");
        let other = ib.as_array().unwrap().iter().find(|x| x["name"] == e["name"]).unwrap();
        assert_eq!((&e["dtype"], &e["shape"]), (&other["dtype"], &other["shape"]), "{name}");
    }
    eprintln!("orbax restored all {} arrays of the two-process checkpoint, bit-exact", names.len());
}

/// Documents of 40 tokens, document `k` all `100 + k`, so a row's tokens say which documents it holds.
fn marked_documents(dir: &Path) -> PathBuf {
    let path = dir.join("docs.jsonl");
    let lines: Vec<String> = (0..24).map(|k| format!("{{\"ids\": {:?}}}", vec![100 + k; 40])).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn two_processes_train_on_disjoint_shares_and_stop_where_the_cpu_plugin_does() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = marked_documents(tmp.path());
    let mut a = common::tiny_train_args(&[
        "steps=2",
        "per_device_batch_size=1",
        "cpu_device_count=2",
        "enable_checkpointing=false",
        "log_config=false",
        "dataset_type=hf",
        "hf_path=json",
        "train_data_columns=ids",
        "enable_data_shuffling=false",
        "jax_distributed_initialization_timeout=60",
    ]);
    a.push(format!("hf_train_files={}", docs.display()));
    a.push(format!("base_output_directory={}", tmp.path().join("out").display()));
    let outs = run_processes(&a, 2);
    let mut seen = Vec::new();
    for (i, o) in outs.iter().enumerate() {
        let t = text(o);
        assert!(!o.status.success(), "process {i} should stop at the cross-process train step:\n{t}");
        assert!(t.contains(&format!("data: process {i} of 2 reads rows {}..{} of each global batch of 4 rows", 2 * i, 2 * i + 2)), "{t}");
        assert!(t.contains("the train step spans 2 processes x 2 devices") && t.contains("No matching device found"), "{t}");
        let rows: Vec<Vec<i64>> = t
            .lines()
            .filter_map(|l| l.strip_prefix("data: row ")?.split_once(" begins ").map(|(_, v)| serde_json::from_str(v).unwrap()))
            .collect();
        assert_eq!(rows.len(), 2, "{t}");
        for r in &rows {
            // Process i holds documents i, i+2, ...: every token of its rows is 100 + (k ≡ i mod 2).
            assert!(r.iter().all(|v| (v - 100) % 2 == i as i64), "process {i} read a document of the other share: {r:?}");
        }
        seen.extend(rows.into_iter().flatten());
    }
    seen.sort();
    seen.dedup();
    assert!(seen.len() >= 4, "the two shares hold too few documents: {seen:?}");
}

#[test]
fn bad_process_setups_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let base = convert_args(&tmp.path().join("x"));
    let run = |extra: &[&str]| -> String {
        let o = bin().args(&base).args(extra).output().unwrap();
        assert!(!o.status.success(), "{extra:?} should fail");
        text(&o)
    };
    let t = run(&["num_processes=2"]);
    assert!(t.contains("process_id=0..1"), "{t}");
    let t = run(&["num_processes=2", "process_id=0"]);
    assert!(t.contains("coordinator_address=HOST:PORT"), "{t}");
    let t = run(&["num_processes=2", "process_id=2", "coordinator_address=127.0.0.1:1"]);
    assert!(t.contains("process_id") || t.contains("index"), "{t}");
    // Process 1 with nobody at the coordinator's address.
    let port = free_port();
    let t = run(&["num_processes=2", "process_id=1", &format!("coordinator_address=127.0.0.1:{port}"), "jax_distributed_initialization_timeout=2"]);
    assert!(t.contains("coordinator"), "{t}");
    // Two processes claiming index 0.
    let outs = {
        let port = free_port();
        let mut extra = base.clone();
        extra.push("jax_distributed_initialization_timeout=5".into());
        let c: Vec<Child> = (0..2).map(|_| spawn(&extra, 0, 2, port)).collect();
        c.into_iter().map(|c| c.wait_with_output().unwrap()).collect::<Vec<_>>()
    };
    assert!(outs.iter().all(|o| !o.status.success()));
    assert!(outs.iter().any(|o| text(o).contains("taken") || text(o).contains("already")), "{}\n{}", text(&outs[0]), text(&outs[1]));
    // Commands that run on one process's devices refuse the process keys rather than run once per host.
    for (cmd, args) in [("decode", vec!["decode"]), ("check-logits", vec!["check-logits"]), ("serve", vec!["serve"]), ("eval", vec!["eval", "mmlu"])] {
        let keys = ["configs/base.yml", "model_name=qwen3-next-tiny", "prompt=hi", "golden_logits_path=x", "num_processes=2", "process_id=0"];
        let o = bin().args(&args).args(keys).output().unwrap();
        assert!(!o.status.success() && text(&o).contains(&format!("`maxtext {cmd}` runs in one process")), "{cmd}: {}", text(&o));
    }
}

/// A process that stops before finishing its part of a save tells the others: process 0 does not commit,
/// says which process failed, and leaves nothing behind (two processes as threads, real coordinator).
#[test]
fn a_process_that_abandons_a_save_fails_it_for_all_and_leaves_nothing() {
    use maxtext::checkpoint::orbax::{CheckpointWriter, PathKey, WriteOptions};
    use maxtext::distributed::ProcessGroup;
    use maxtext::ir::DType;
    use std::sync::Arc;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ckpt");
    let address = format!("127.0.0.1:{}", free_port());
    let run = |index: usize| {
        let (root, address) = (root.clone(), address.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let group = Arc::new(ProcessGroup::join(&address, 2, index, Duration::from_secs(30)).map_err(|e| e.to_string())?);
            let mut w = CheckpointWriter::create_shared(&root, 3, WriteOptions::default(), group).map_err(|e| e.to_string())?;
            let array = w.begin_array(vec![PathKey::Key("w".into())], DType::F32, &[4], &[2], None).map_err(|e| e.to_string())?;
            if index == 1 {
                return Err("process 1 stops here".into()); // drops its writer unfinished
            }
            w.put_shard(&array, &[0], &[0u8; 8]).map_err(|e| e.to_string())?;
            w.end_array(array).map_err(|e| e.to_string())?;
            w.finish().map(|_| ()).map_err(|e| e.to_string())
        })
    };
    let (p0, p1) = (run(0), run(1));
    let (r0, r1) = (p0.join().unwrap(), p1.join().unwrap());
    assert_eq!(r1, Err("process 1 stops here".into()));
    let e = r0.expect_err("process 0 must not commit without process 1's shards");
    assert!(e.contains("process 1 could not write its shards") && e.contains("nothing was committed"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "the failed save left {left:?}");
}
