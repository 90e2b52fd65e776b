//! Unit tests of the writer (kept apart so that writer.rs stays readable).
use super::*;

#[test]
fn chunk_shape_matches_orbax_example() {
    assert_eq!(choose_chunk_shape(&[8, 6], 4, 32), vec![2, 3]);
    assert_eq!(choose_chunk_shape(&[8, 6], 4, 1 << 31), vec![8, 6]);
    assert_eq!(choose_chunk_shape(&[], 4, 1), Vec::<u64>::new());
    assert_eq!(choose_chunk_shape(&[0, 3], 4, 1 << 31), vec![1, 3]);
}

#[test]
fn dotted_names() {
    use PathKey::*;
    assert_eq!(parse_dotted("opt_state.0.mu").unwrap(), vec![Key("opt_state".into()), Index(0), Key("mu".into())]);
    assert_eq!(parse_dotted("a.01").unwrap(), vec![Key("a".into()), Key("01".into())]);
    assert!(parse_dotted("a..b").is_err());
}

/// Leaves added one by one (out of order, chunks above the streaming threshold, a chunked array) read
/// back bitwise; an abandoned writer leaves nothing behind.
#[test]
fn streaming_writer_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<f32> = (0..(3u64 << 18)).map(|i| ((i * 7919) % 1000) as f32 * 0.25).collect();
    let big = HostTensor::from_f32(&big, &[3, 1 << 18]);
    let small = HostTensor::from_i32(&[1, 2, 3], &[3]);
    let opts = WriteOptions { chunk_byte_size: 3 << 19, ..WriteOptions::default() };
    let mut w = CheckpointWriter::create(dir.path(), 3, opts.clone()).unwrap();
    assert!(w.tmp_dir().is_dir().unwrap());
    w.add("params.z", &small).unwrap();
    w.add("params.big", &big).unwrap();
    assert!(w.add("params.z", &small).is_err());
    assert_eq!(w.bytes_written(), 12 + (3 << 20));
    let step = w.finish().unwrap();
    let ckpt = crate::checkpoint::orbax::OrbaxCheckpoint::open(step.join("items")).unwrap();
    let names: Vec<&str> = ckpt.leaves().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["params.big", "params.z"]);
    assert_eq!(ckpt.read("params.big").unwrap(), big);
    assert_eq!(ckpt.read("params.z").unwrap(), small);

    let w = CheckpointWriter::create(dir.path(), 4, opts).unwrap();
    let tmp = w.tmp_dir().clone();
    drop(w);
    assert!(!tmp.is_dir().unwrap() && !dir.path().join("4").exists());
    assert!(CheckpointWriter::create(dir.path(), 3, WriteOptions::default()).is_err());
}

#[test]
fn extract_pads_edge_chunks() {
    // 3x5 u8 array 0..15, chunk (1,1) of 2x3 chunks = rows 2, cols 3..5, padded.
    let data: Vec<u8> = (0..15).collect();
    assert_eq!(extract_block(&data, &[3, 5], &[1, 1], &[2, 3], 1).into_owned(), vec![13, 14, 0, 0, 0, 0]);
}
