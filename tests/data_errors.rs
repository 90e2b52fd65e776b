//! Data pipeline errors a user can act on: each names the key, file, record or column to fix.

use std::fs;
use std::path::PathBuf;

use maxtext::config::Config;
use maxtext::data::{DataError, DataIterator};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cfg(args: &[String]) -> Config {
    // Qwen3's tokenizer is a HuggingFace tokenizer.json (MaxText's commands pass tokenizer_type=huggingface).
    let mut a = vec!["max_prefill_predict_length=1".to_string(), "tokenizer_type=huggingface".to_string()];
    a.extend_from_slice(args);
    Config::load_with_env(&root().join("configs/base.yml"), &a, &|_| None).unwrap()
}

fn hf(format: &str, files: &str, extra: &[&str]) -> Config {
    let mut a = vec![
        "dataset_type=hf".to_string(),
        format!("hf_path={format}"),
        format!("hf_train_files={files}"),
        "per_device_batch_size=2".into(),
        "max_target_length=8".into(),
        format!("tokenizer_path={}", root().join("assets/tokenizers/qwen3-tokenizer").display()),
        "vocab_size=151936".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    cfg(&a)
}

fn err(c: &Config) -> String {
    DataIterator::new(c, 0, 1).err().expect("an error").to_string()
}

#[test]
fn settings_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = format!("{}/*.jsonl", dir.path().display());
    let e = err(&hf("json", &pattern, &[]));
    assert!(e.contains("matches no files") && e.contains(&pattern), "{e}");

    let e = err(&hf("csv", &pattern, &[]));
    assert!(e.contains("hf_path=\"csv\"") && e.contains("json|parquet|text"), "{e}");
    let e = err(&hf("allenai/c4", &pattern, &[]));
    assert!(e.contains("hub"), "{e}");
    let e = err(&hf("json", "", &[]));
    assert!(e.contains("needs hf_train_files"), "{e}");
    let e = err(&cfg(&["dataset_type=tfds".into()]));
    assert!(e.contains("dataset_type=tfds needs dataset_path=DIR"), "{e}");
    let e = err(&hf("json", &pattern, &["train_data_columns=[a,b]"]));
    assert!(e.contains("exactly one column"), "{e}");
    // use_sft is refused when the config loads (the key table), before the pipeline starts.
    let mut a = vec!["tokenizer_type=huggingface".to_string(), "use_sft=true".to_string()];
    a.push(format!("hf_train_files={pattern}"));
    let e = Config::load_with_env(&root().join("configs/base.yml"), &a, &|_| None).err().unwrap().to_string();
    assert!(e.contains("use_sft=true") && e.contains("not supported"), "{e}");

    let syn = cfg(&["dataset_type=synthetic".into(), "per_device_batch_size=3".into()]);
    let e = DataIterator::new(&syn, 0, 2).err().unwrap().to_string();
    assert!(e.contains("does not split evenly over process_count=2"), "{e}");
    let e = DataIterator::new(&syn, 2, 2).err().unwrap().to_string();
    assert!(e.contains("process_index=2"), "{e}");
}

#[test]
fn record_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.jsonl");
    let files = f.display().to_string();

    fs::write(&f, "{\"content\": \"hi there\"}\n").unwrap();
    let e = err(&hf("json", &files, &[]));
    assert!(e.contains("d.jsonl") && e.contains("line 1") && e.contains("no column \"text\"") && e.contains("content"), "{e}");

    fs::write(&f, "{\"text\": 3.5}\n").unwrap();
    let e = err(&hf("json", &files, &[]));
    assert!(e.contains("d.jsonl") && e.contains("column \"text\" holds a number (3.5)"), "{e}");

    fs::write(&f, "{\"text\": [\"a\", \"b\"]}\n").unwrap();
    let e = err(&hf("json", &files, &[]));
    assert!(e.contains("not all non-negative integers"), "{e}");

    fs::write(&f, "{\"text\": \"fine\"}\n{\"text\": \"broken\"\n").unwrap();
    let mut it = DataIterator::new(&hf("json", &files, &["enable_data_shuffling=false"]), 0, 1).unwrap();
    let e = it.next_batch().err().unwrap().to_string();
    assert!(e.contains("d.jsonl") && e.contains("line 2") && e.contains("not valid JSON"), "{e}");
    let again = it.next_batch().err().unwrap().to_string();
    assert!(again.contains("earlier error") && again.contains("line 2"), "{again}");

    fs::write(&f, "{\"text\": \"tokenize me\"}\n").unwrap();
    let e = err(&hf("json", &files, &["tokenize_train_data=false"]));
    assert!(e.contains("tokenize_train_data=false") && e.contains("d.jsonl"), "{e}");

    fs::write(&f, "{\"ids\": [1, 2, 999999]}\n").unwrap();
    let mut it = DataIterator::new(&hf("json", &files, &["train_data_columns=ids"]), 0, 1).unwrap();
    let e = it.next_batch().err().unwrap().to_string();
    assert!(e.contains("999999") && e.contains("vocab_size=151936") && e.contains("line 1"), "{e}");

    let t = dir.path().join("t.txt");
    fs::write(&t, b"ok\n\xff\xfe bad\n").unwrap();
    let mut it = DataIterator::new(&hf("text", &t.display().to_string(), &["enable_data_shuffling=false"]), 0, 1).unwrap();
    let e = it.next_batch().err().unwrap().to_string();
    assert!(e.contains("t.txt") && e.contains("line 2") && e.contains("UTF-8"), "{e}");
    let e = err(&hf("text", &t.display().to_string(), &["train_data_columns=body"]));
    assert!(e.contains("no column \"body\""), "{e}");

    fs::write(&f, "{\"text\": \"x\"}\n").unwrap();
    let e = err(&hf("json", &files, &["tokenizer_path=/no/such/tokenizer"]));
    assert!(e.contains("/no/such/tokenizer"), "{e}");

    // Documents too short for any example.
    fs::write(&f, "{\"ids\": [5]}\n{\"ids\": []}\n").unwrap();
    let mut it = DataIterator::new(&hf("json", &files, &["train_data_columns=ids"]), 0, 1).unwrap();
    assert!(matches!(it.next_batch(), Err(DataError::NoExamples { .. })));
}
