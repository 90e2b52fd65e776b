//! `dataset_type=tfds` and `dataset_type=grain` on files written by the real Python libraries
//! (tests/fixtures/tfds_grain, made by scripts/make_tfds_grain_fixtures.py with tensorflow-datasets and
//! array-record): the records equal what TensorFlow / array_record read back, tokenized and packed batches,
//! MaxText's per-host split of shards and records, exact resume, errors, and `maxtext train` with
//! MaxText's default `dataset_type=tfds` and a `dataset_path`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use maxtext::config::Config;
use maxtext::data::packing::example_window;
use maxtext::data::{Batch, Corpus, DataError, DataIterator, Doc, FileFormat, Tokenizer};
use maxtext::storage::Location;

const NAME: &str = "dataset_name=shakespeare_lines/tempest:1.0.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/tfds_grain")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

/// The texts expected.json gives for the files whose path contains `part`, in file order.
fn expected_files(part: &str) -> Vec<(String, Vec<String>)> {
    let e = expected();
    let files: BTreeMap<String, Vec<String>> = serde_json::from_value(e["files"].clone()).unwrap();
    files.into_iter().filter(|(k, _)| k.contains(part)).collect()
}

fn cfg(args: &[&str]) -> Config {
    let mut a: Vec<String> = [
        "max_prefill_predict_length=1",
        "tokenizer_type=huggingface",
        "vocab_size=151936",
        "tokenizer_path=assets/tokenizers/qwen3-tokenizer",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(args.iter().map(|s| s.to_string()));
    Config::load_with_env(&root().join("configs/base.yml"), &a, &|_| None).unwrap()
}

fn tfds(dir: &Path, rows: usize, len: usize, extra: &[&str]) -> Config {
    let mut a = vec![format!("dataset_path={}", dir.display()), NAME.into(), format!("per_device_batch_size={rows}"), format!("max_target_length={len}")];
    a.extend(extra.iter().map(|s| s.to_string()));
    cfg(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

fn grain(files: &str, rows: usize, len: usize, extra: &[&str]) -> Config {
    let mut a = vec!["dataset_type=grain".to_string(), format!("grain_train_files={files}"), format!("per_device_batch_size={rows}"), format!("max_target_length={len}")];
    a.extend(extra.iter().map(|s| s.to_string()));
    cfg(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

fn all_batches(it: &mut DataIterator) -> Vec<Batch> {
    let mut out = Vec::new();
    loop {
        match it.next_batch() {
            Ok(b) => out.push(b),
            Err(DataError::Exhausted { .. }) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Per row, per segment, the segment's inputs.
fn segments(b: &Batch) -> Vec<Vec<i32>> {
    let mut out = Vec::new();
    for r in 0..b.rows {
        let (inp, seg) = (b.row("inputs", r), b.row("inputs_segmentation", r));
        let mut t = 0;
        while t < b.len && seg[t] != 0 {
            let start = t;
            while t < b.len && seg[t] == seg[start] {
                t += 1;
            }
            out.push(inp[start..t].to_vec());
        }
    }
    out
}

/// The inputs of the (first, truncated) example of each text: Qwen3 tokens, EOS appended (add_eos=true).
fn example_inputs(texts: &[String], len: usize) -> Vec<Vec<i32>> {
    let tok = Tokenizer::load(&root().join("assets/tokenizers/qwen3-tokenizer")).unwrap();
    texts
        .iter()
        .map(|t| {
            let mut ids = tok.encode(t, true).unwrap();
            ids.push(tok.eos_ids()[0]);
            let w = example_window(&ids, len, 0);
            w[..w.len() - 1].iter().map(|&i| i as i32).collect()
        })
        .collect()
}

#[test]
fn records_equal_what_tensorflow_and_array_record_wrote() {
    let files = expected_files("");
    assert_eq!(files.len(), 9, "6 TFDS shards and 3 ArrayRecord files");
    for (rel, texts) in files {
        let format = if rel.ends_with(".arrayrecord") { FileFormat::ArrayRecord } else { FileFormat::TfRecord };
        let corpus = Corpus::open_files(format, vec![Location::Local(fixtures().join(&rel))], "text", 1).unwrap();
        let got: Vec<Doc> = (0..corpus.len()).map(|i| corpus.get(i).unwrap()).collect();
        assert_eq!(got, texts.into_iter().map(Doc::Text).collect::<Vec<_>>(), "{rel}");
    }
    // The three ArrayRecord files together are every speech, once (zstd, snappy and brotli chunks).
    let ar = Corpus::open_files(
        FileFormat::ArrayRecord,
        (0..3).map(|k| Location::Local(fixtures().join(format!("arrayrecord/tempest-{k:05}-of-00003.arrayrecord")))).collect(),
        "text",
        3,
    )
    .unwrap();
    assert_eq!(ar.len() as u64, expected()["documents"].as_u64().unwrap());
}

#[test]
fn tfds_split_tokenized_and_packed_in_shard_order() {
    let dir = fixtures().join("tfds");
    let len = 256;
    for packing in ["packing=true", "packing=false"] {
        // One row per batch: segments come out in document order (with more rows, packing interleaves them).
        let c = tfds(&dir, 1, len, &["enable_data_shuffling=false", packing]);
        let got: Vec<Vec<i32>> = all_batches(&mut DataIterator::new(&c, 0, 1).unwrap()).iter().flat_map(segments).collect();
        let texts: Vec<String> = expected_files("-train.").into_iter().flat_map(|(_, t)| t).collect();
        assert_eq!(texts.len(), 76);
        assert_eq!(got, example_inputs(&texts, len), "{packing}");
    }
    // The eval split through eval_dataset_name / eval_split.
    let c = tfds(&dir, 2, len, &["eval_dataset_name=shakespeare_lines/tempest", "eval_split=validation", "packing=false"]);
    let e = maxtext::data::eval_data_config(&c);
    let got: Vec<Vec<i32>> = all_batches(&mut DataIterator::new(&e, 0, 1).unwrap()).iter().flat_map(segments).collect();
    let texts: Vec<String> = expected_files("-validation.").into_iter().flat_map(|(_, t)| t).collect();
    assert_eq!(got, example_inputs(&texts, len));
}

fn sorted(mut v: Vec<Vec<i32>>) -> Vec<Vec<i32>> {
    v.sort();
    v
}

/// Each host's documents (first example inputs, packing off), over one epoch.
fn host_docs(c: &Config, host: usize, hosts: usize) -> Vec<Vec<i32>> {
    all_batches(&mut DataIterator::new(c, host, hosts).unwrap()).iter().flat_map(segments).collect()
}

#[test]
fn tfds_shards_split_over_hosts_as_maxtext() {
    let dir = fixtures().join("tfds");
    let len = 256;
    let shard = |k: usize| example_inputs(&expected_files(&format!("-train.tfrecord-{k:05}"))[0].1, len);
    // 2 hosts, 3 shards: host 0 reads shards 0 and 2, host 1 shard 1 (files[host::hosts]).
    let c = tfds(&dir, 2, len, &["enable_data_shuffling=false", "packing=false"]);
    assert_eq!(host_docs(&c, 0, 2), [shard(0), shard(2)].concat());
    assert_eq!(host_docs(&c, 1, 2), shard(1));
    // 4 hosts, 3 shards: hosts 0 and 3 share shard 0 and take alternate records of it.
    let c = tfds(&dir, 4, len, &["enable_data_shuffling=false", "packing=false"]);
    let s0 = shard(0);
    assert_eq!(host_docs(&c, 0, 4), s0.iter().step_by(2).cloned().collect::<Vec<_>>());
    assert_eq!(host_docs(&c, 3, 4), s0.iter().skip(1).step_by(2).cloned().collect::<Vec<_>>());
    assert_eq!(host_docs(&c, 2, 4), shard(2));
    // Shuffled: the same documents per host, in another order.
    let c = tfds(&dir, 2, len, &["packing=false", "data_shuffle_seed=5"]);
    let h1 = host_docs(&c, 1, 2);
    assert_ne!(h1, shard(1));
    assert_eq!(sorted(h1), sorted(shard(1)));
}

#[test]
fn grain_arrayrecord_hosts_are_disjoint_and_cover_everything() {
    let files = fixtures().join("arrayrecord/*.arrayrecord");
    let len = 256;
    let texts: Vec<String> = expected_files(".arrayrecord").into_iter().flat_map(|(_, t)| t).collect();
    let all = example_inputs(&texts, len);
    let c = grain(files.to_str().unwrap(), 2, len, &["enable_data_shuffling=false", "packing=false", "grain_worker_count=2"]);
    assert_eq!(host_docs(&c, 0, 1), all, "one host, no shuffling: file order");
    let c = grain(files.to_str().unwrap(), 2, len, &["packing=false", "data_shuffle_seed=3"]);
    let (h0, h1) = (host_docs(&c, 0, 2), host_docs(&c, 1, 2));
    // Grain's dataset[host::hosts] over the global order: records interleave, sizes differ by at most one.
    assert_eq!((h0.len(), h1.len()), (45, 44));
    // Some speeches repeat ("[Exit.]"): every record once means the two shares add up to all records.
    assert_eq!(sorted([h0, h1].concat()), sorted(all));
}

#[test]
fn grain_tfrecord_reads_the_tfds_shards_like_maxtext() {
    // No grain_train_files: MaxText's construct_tfds_tfrecord_path from dataset_path / dataset_name / split.
    let dir = fixtures().join("tfds");
    let args = [format!("dataset_path={}", dir.display()), "grain_file_type=tfrecord".into(), "enable_data_shuffling=false".into(), "packing=false".into()];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = grain("", 2, 256, &[&refs[..], &[NAME]].concat());
    let t = tfds(&dir, 2, 256, &["enable_data_shuffling=false", "packing=false"]);
    assert_eq!(host_docs(&c, 1, 2), host_docs(&t, 1, 2));
    // MaxText's rule: no more workers than files per host.
    let c = grain("", 2, 256, &[&refs[..], &[NAME, "grain_worker_count=2"]].concat());
    let e = DataIterator::new(&c, 0, 2).err().unwrap().to_string();
    assert!(e.contains("grain_worker_count (2) exceeds") && e.contains("at most 1"), "{e}");
}

/// Every cut of the batch stream restores to the same remaining batches (mirrors data_pipeline.rs).
fn check_exact_resume(c: &Config, host: usize, hosts: usize) {
    let whole = all_batches(&mut DataIterator::new(c, host, hosts).unwrap());
    assert!(whole.len() > 10, "{}", whole.len());
    let mut epochs_crossed = false;
    for cut in (0..whole.len()).step_by(whole.len() / 8) {
        let mut it = DataIterator::new(c, host, hosts).unwrap();
        for b in &whole[..cut] {
            assert_eq!(&it.next_batch().unwrap(), b);
        }
        let saved = serde_json::to_string(&it.state()).unwrap();
        drop(it);
        let state: serde_json::Value = serde_json::from_str(&saved).unwrap();
        epochs_crossed |= state["epoch"].as_u64().unwrap() > 0;
        let mut resumed = DataIterator::restore(c, host, hosts, &state).unwrap();
        assert_eq!(resumed.batches(), cut as u64);
        assert_eq!(all_batches(&mut resumed), whole[cut..], "cut after {cut} batches, state {saved}");
    }
    assert!(epochs_crossed);
}

#[test]
fn tfds_and_grain_resume_exactly() {
    let dir = fixtures().join("tfds");
    check_exact_resume(&tfds(&dir, 2, 48, &["num_epoch=2", "data_shuffle_seed=7", "use_truncation=false"]), 1, 2);
    let files = fixtures().join("arrayrecord/*.arrayrecord");
    check_exact_resume(&grain(files.to_str().unwrap(), 2, 48, &["num_epoch=2", "data_shuffle_seed=7", "max_segments_per_seq=3"]), 0, 2);
    // A state saved under another share of the shards is refused.
    let c = tfds(&dir, 4, 48, &[]);
    let it = DataIterator::new(&c, 3, 4).unwrap();
    let e = DataIterator::restore(&c, 2, 4, &it.state()).err().unwrap().to_string();
    assert!(e.contains("process_index"), "{e}");
}

#[test]
fn clear_errors() {
    let dir = fixtures().join("tfds");
    let err = |c: &Config| DataIterator::new(c, 0, 1).err().expect("an error").to_string();
    let e = err(&tfds(&dir, 1, 32, &["train_split=test"]));
    assert!(e.contains("no split \"test\" (splits: train, validation)") && e.contains("train_split"), "{e}");
    let e = err(&tfds(&dir, 1, 32, &["dataset_name=shakespeare_lines/tempest:2.0.0"]));
    assert!(e.contains("no version 2.0.0") && e.contains("versions found: 1.0.0"), "{e}");
    let e = err(&tfds(&dir, 1, 32, &["dataset_name=c4/en:3.1.0"]));
    assert!(e.contains("versions found: none"), "{e}");
    let e = err(&cfg(&["per_device_batch_size=1", "max_target_length=32"]));
    assert!(e.contains("dataset_type=tfds needs dataset_path=DIR"), "{e}");

    // A damaged TFRecord shard: a flipped byte inside a record fails its CRC.
    let tmp = tempfile::tempdir().unwrap();
    let v = tmp.path().join("shakespeare_lines/tempest/1.0.0");
    std::fs::create_dir_all(&v).unwrap();
    for f in std::fs::read_dir(dir.join("shakespeare_lines/tempest/1.0.0")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), v.join(f.file_name())).unwrap();
    }
    let shard = v.join("shakespeare_lines-train.tfrecord-00001-of-00003");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[40] ^= 0x20;
    std::fs::write(&shard, &bytes).unwrap();
    let e = err(&tfds(tmp.path(), 1, 32, &[]));
    assert!(e.contains("tfrecord-00001-of-00003") && e.contains("record 0") && e.contains("CRC-32C does not match"), "{e}");

    // A damaged ArrayRecord file: the chunk's data hash no longer matches.
    let ar = tmp.path().join("bad.arrayrecord");
    let mut bytes = std::fs::read(fixtures().join("arrayrecord/tempest-00000-of-00003.arrayrecord")).unwrap();
    bytes[200] ^= 0x01;
    std::fs::write(&ar, &bytes).unwrap();
    let e = err(&grain(ar.to_str().unwrap(), 1, 32, &[]));
    assert!(e.contains("bad.arrayrecord") && e.contains("hash does not match"), "{e}");

    // Grain: mixtures are refused, grain_file_type is checked when the config loads.
    let e = err(&grain("a*,0.3;b*,0.7", 1, 32, &[]));
    assert!(e.contains("mixtures") && e.contains("use one glob"), "{e}");
    let e = err(&grain("", 1, 32, &[]));
    assert!(e.contains("needs grain_train_files=GLOB"), "{e}");
    let bad_type = Config::load_with_env(&root().join("configs/base.yml"), &["dataset_type=grain".into(), "grain_file_type=csv".into()], &|_| None);
    let e = bad_type.err().expect("grain_file_type=csv is refused").to_string();
    assert!(e.contains("grain_file_type") && e.contains("arrayrecord"), "{e}");
}

#[test]
fn maxtext_train_with_default_dataset_type_and_a_tfds_dataset_path() {
    // MaxText's fine-tuning command shape: no dataset_type (base.yml's tfds), dataset_path + dataset_name.
    let out = std::env::temp_dir().join(format!("maxtext_tfds_train_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let args: Vec<String> = [
        "train",
        "configs/base.yml",
        "model_name=qwen3-next-tiny",
        "override_model_config=true",
        "run_name=tfds",
        "steps=3",
        "per_device_batch_size=2",
        "max_target_length=64",
        "max_prefill_predict_length=64",
        "dtype=float32",
        "enable_checkpointing=false",
        "dataset_path=tests/fixtures/tfds_grain/tfds",
        NAME,
        "tokenizer_type=huggingface",
        "tokenizer_path=assets/tokenizers/qwen3-tokenizer",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("base_output_directory={}", out.display()), format!("metrics_file={}", out.join("metrics.jsonl").display())])
    .collect();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_maxtext")).args(&args).current_dir(root()).output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{log}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["learning/loss"].as_f64())
        .collect();
    assert_eq!(losses.len(), 3, "{metrics}");
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
    let _ = std::fs::remove_dir_all(&out);
}
