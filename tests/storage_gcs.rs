//! The storage layer (src/storage) against the real GCS emulator on loopback: the same operations as on
//! local paths, and the errors a user meets.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};

use maxtext::storage::{Entry, Location, StorageError};

fn with_emulator(buckets: &[&str]) -> &'static common::gcs::Emulator {
    let emu = common::gcs::shared_emulator();
    for b in buckets {
        emu.create_bucket(b);
    }
    emu
}

#[test]
fn objects_read_write_list_glob_and_delete() {
    let emu = with_emulator(&["bk"]);
    let root = Location::parse("gs://bk/run").unwrap();
    root.join("a/b.txt").write(b"hello world").unwrap();
    root.join("a/c.jsonl").write(b"{}\n").unwrap();
    root.join("d/e/f.parquet").write(b"PAR1").unwrap();
    assert_eq!(root.join("a/b.txt").read().unwrap(), b"hello world");
    assert_eq!(root.join("a/b.txt").read_range(6, 5).unwrap(), b"world");
    let e = root.join("a/b.txt").read_range(6, 50).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    assert_eq!(root.join("a/b.txt").size().unwrap(), Some(11));
    assert_eq!(root.join("a").size().unwrap(), None);
    assert!(root.join("a").is_dir().unwrap());
    assert!(!root.join("zz").is_dir().unwrap());
    assert_eq!(
        root.list().unwrap(),
        vec![Entry { name: "a".into(), is_dir: true }, Entry { name: "d".into(), is_dir: true }]
    );
    assert_eq!(
        root.walk().unwrap(),
        vec![("a/b.txt".into(), 11), ("a/c.jsonl".into(), 3), ("d/e/f.parquet".into(), 4)]
    );
    assert_eq!(Location::glob("gs://bk/run/a/*.jsonl").unwrap(), vec![root.join("a/c.jsonl")]);
    assert_eq!(Location::glob("gs://bk/run/**/*.parquet").unwrap(), vec![root.join("d/e/f.parquet")]);
    assert_eq!(Location::glob("gs://bk/run/*.parquet").unwrap(), vec![]);

    // A streamed upload of several parts, then a read-ahead reader with seeks.
    let big: Vec<u8> = (0..40_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = root.join("big.bin").create().unwrap();
    for c in big.chunks(3_000_001) {
        w.write_all(c).unwrap();
    }
    assert!(root.join("big.bin").size().unwrap().is_none(), "an unfinished upload must not be visible");
    w.finish().unwrap();
    let mut r = root.join("big.bin").open().unwrap();
    assert_eq!(r.len(), big.len() as u64);
    let mut all = vec![];
    r.read_to_end(&mut all).unwrap();
    assert!(all == big, "streamed object differs");
    r.seek(SeekFrom::Start(33_554_430)).unwrap();
    let mut four = [0u8; 4];
    r.read_exact(&mut four).unwrap();
    assert_eq!(four, big[33_554_430..33_554_434]);
    // The bytes in the bucket, read by the emulator's own API.
    let objs = emu.objects("bk", "run");
    assert_eq!(objs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a/b.txt", "a/c.jsonl", "big.bin", "d/e/f.parquet"]);
    assert!(objs[2].1 == big);

    root.join("a").remove_all().unwrap();
    assert!(!root.join("a").is_dir().unwrap());
    assert!(root.join("d").is_dir().unwrap());
}

#[test]
fn missing_bucket_and_object_are_named() {
    let _emu = with_emulator(&["here"]);
    let e = Location::parse("gs://here/nothing/x.json").unwrap().read().unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("gs://here/nothing/x.json does not exist"), "{e}");
    let e = Location::parse("gs://not-a-bucket/x.json").unwrap().read().unwrap_err();
    assert!(matches!(e, StorageError::NoBucket { .. }), "{e}");
    assert!(e.to_string().contains("bucket gs://not-a-bucket does not exist"), "{e}");
    let e = Location::parse("gs://not-a-bucket/x.json").unwrap().write(b"x").unwrap_err();
    assert!(matches!(e, StorageError::NoBucket { .. }), "{e}");
    let e = Location::parse("gs://not-a-bucket/run").unwrap().list().unwrap_err();
    assert!(matches!(e, StorageError::NoBucket { .. }), "{e}");
    assert_eq!(Location::parse("gs://here/none").unwrap().list().unwrap(), vec![]);
}
