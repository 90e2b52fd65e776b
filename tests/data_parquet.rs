//! Parquet training files (written here with the parquet crate): a text column, a token-id list column,
//! and the errors for a missing or non-text column and an unreadable file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxtext::config::Config;
use maxtext::data::{DataError, DataIterator, Tokenizer};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hf(files: &Path, rows: usize, len: usize, extra: &[&str]) -> Config {
    let mut a = vec![
        "max_prefill_predict_length=1".to_string(),
        "dataset_type=hf".into(),
        "hf_path=parquet".into(),
        format!("hf_train_files={}", files.display()),
        format!("per_device_batch_size={rows}"),
        format!("max_target_length={len}"),
        "vocab_size=151936".into(),
        "enable_data_shuffling=false".into(),
        format!("tokenizer_path={}", root().join("assets/tokenizers/qwen3-tokenizer").display()),
        "tokenizer_type=huggingface".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    Config::load_with_env(&root().join("configs/base.yml"), &a, &|_| None).unwrap()
}

/// A pyarrow-style file: `text: string`, `ids: list<int64>` (3-level LIST), `n: int64`; `row_groups`
/// row groups of the given rows.
fn write_parquet(path: &Path, row_groups: &[&[(&str, Vec<i64>)]]) {
    let schema = parse_message_type(
        "message schema {
            REQUIRED BYTE_ARRAY text (UTF8);
            OPTIONAL group ids (LIST) { REPEATED group list { OPTIONAL INT64 element; } }
            REQUIRED INT64 n;
        }",
    )
    .unwrap();
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut w = SerializedFileWriter::new(File::create(path).unwrap(), Arc::new(schema), Arc::new(props)).unwrap();
    for rows in row_groups {
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let texts: Vec<ByteArray> = rows.iter().map(|(t, _)| ByteArray::from(*t)).collect();
        col.typed::<ByteArrayType>().write_batch(&texts, None, None).unwrap();
        col.close().unwrap();
        let (mut values, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
        for (_, ids) in rows.iter() {
            if ids.is_empty() {
                def.push(1); // list present, empty
                rep.push(0);
            }
            for (j, &id) in ids.iter().enumerate() {
                values.push(id);
                def.push(3);
                rep.push(if j == 0 { 0 } else { 1 });
            }
        }
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>().write_batch(&values, Some(&def), Some(&rep)).unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let ns: Vec<i64> = rows.iter().map(|(_, ids)| ids.len() as i64).collect();
        col.typed::<Int64Type>().write_batch(&ns, None, None).unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    w.close().unwrap();
}

#[test]
fn parquet_text_and_token_id_columns() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(
        &dir.path().join("part-0.parquet"),
        &[&[("Hello world", vec![1, 2, 3]), ("Good night, sweet prince", vec![4, 5])], &[("", vec![])]],
    );
    write_parquet(&dir.path().join("part-1.parquet"), &[&[("And flights of angels", vec![6, 7, 8, 9])]]);
    let files = dir.path().join("part-*.parquet");

    // Token ids, used as is, across row groups and files (sorted), the empty list skipped.
    let c = hf(&files, 1, 8, &["train_data_columns=ids"]);
    let mut it = DataIterator::new(&c, 0, 1).unwrap();
    assert_eq!(it.documents(), (4, 4));
    let b = it.next_batch().unwrap();
    assert_eq!(b.inputs, vec![1, 2, 4, 6, 7, 8, 0, 0]);
    assert_eq!(b.targets, vec![2, 3, 5, 7, 8, 9, 0, 0]);
    assert_eq!(b.inputs_segmentation, vec![1, 1, 2, 3, 3, 3, 0, 0]);
    assert_eq!(b.inputs_position, vec![0, 1, 0, 0, 1, 2, 0, 0]);

    // Text, tokenized with the Qwen3 tokenizer plus EOS.
    let c = hf(&files, 1, 32, &[]);
    let b = DataIterator::new(&c, 0, 1).unwrap().next_batch().unwrap();
    let tok = Tokenizer::load(&root().join("assets/tokenizers/qwen3-tokenizer")).unwrap();
    let mut want = Vec::new();
    for t in ["Hello world", "Good night, sweet prince", "And flights of angels"] {
        let mut ids = tok.encode(t, true).unwrap();
        ids.push(tok.eos_ids()[0]);
        want.extend(ids[..ids.len() - 1].iter().map(|&i| i as i32));
    }
    assert_eq!(&b.inputs[..want.len()], &want[..]);
    assert_eq!(b.inputs_segmentation.iter().max(), Some(&3));
}

#[test]
fn parquet_errors_name_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.parquet");
    write_parquet(&p, &[&[("a b", vec![1, 2])]]);

    let e = DataIterator::new(&hf(&p, 1, 8, &["train_data_columns=content"]), 0, 1).err().unwrap();
    let msg = e.to_string();
    assert!(matches!(e, DataError::MissingColumn { .. }), "{msg}");
    assert!(msg.contains("d.parquet") && msg.contains("\"content\"") && msg.contains("text, ids, n"), "{msg}");

    let e = DataIterator::new(&hf(&p, 1, 8, &["train_data_columns=n"]), 0, 1).err().unwrap();
    let msg = e.to_string();
    assert!(matches!(e, DataError::ColumnType { .. }), "{msg}");
    assert!(msg.contains("\"n\"") && msg.contains("int64") && msg.contains("d.parquet"), "{msg}");

    let bad = dir.path().join("bad.parquet");
    std::fs::write(&bad, b"this is not parquet").unwrap();
    let e = DataIterator::new(&hf(&bad, 1, 8, &[]), 0, 1).err().unwrap();
    assert!(e.to_string().contains("bad.parquet") && e.to_string().contains("not a readable parquet file"), "{e}");
}
