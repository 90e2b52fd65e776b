//! Checkpoints written by `write_checkpoint` read back bitwise with our reader, have the byte structure of
//! orbax 0.12.8's own MaxText-style save (`tests/fixtures/orbax/c_manager_maxtext`), and fail safely:
//! damaged files give errors naming the array or file, and an interrupted save leaves nothing a restore
//! accepts.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use maxtext::checkpoint::orbax::ocdbt::{OcdbtDatabase, ValueRef};
use maxtext::checkpoint::orbax::{
    list_steps, write_checkpoint, write_checkpoint_with, OrbaxCheckpoint, PathKey, ShardingRecord, WriteLeaf,
    WriteOptions,
};
use maxtext::ir::DType;
use maxtext::runtime::HostTensor;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn f32s(n: usize, f: impl Fn(usize) -> f32) -> Vec<f32> {
    (0..n).map(f).collect()
}

/// The fixtures' base tree T (README "Base tree T").
fn tree_t() -> Vec<(String, HostTensor)> {
    vec![
        ("params.dense.kernel".into(), HostTensor::from_f32(&f32s(12, |i| i as f32 * 0.5), &[3, 4])),
        ("params.dense.bias".into(), HostTensor::from_f32_as(&[1.0, -2.0, 3.5, 0.25], &[4], DType::BF16)),
        ("params.embed".into(), HostTensor::from_f32(&f32s(24, |i| i as f32), &[2, 3, 4])),
        ("params.scale".into(), HostTensor::from_f32(&[3.25], &[])),
        ("step".into(), HostTensor::from_i32(&[7], &[])),
        ("counts".into(), HostTensor::from_i32(&[1, 2, 3, 4, 5, 6], &[2, 3])),
        ("bf3d".into(), HostTensor::from_f32_as(&f32s(12, |i| i as f32 / 4.0), &[2, 2, 3], DType::BF16)),
    ]
}

/// Several dtypes and shapes: 0-d, bf16, f16, f64, ints, bool, an empty array, and a random array large
/// enough to be stored out of line.
fn mixed_tree() -> Vec<(String, HostTensor)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let big: Vec<f32> = (0..64 * 64).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
    vec![
        ("params.big".into(), HostTensor::from_f32(&big, &[64, 64])),
        ("params.bf16".into(), HostTensor::from_f32_as(&f32s(30, |i| i as f32 * 0.37 - 3.0), &[5, 6], DType::BF16)),
        ("params.f16".into(), HostTensor::from_f32_as(&f32s(7, |i| i as f32 / 3.0), &[7], DType::F16)),
        ("params.f64".into(), HostTensor::from_f64(&[std::f64::consts::PI, -1e300, 0.0], &[3])),
        ("params.scalar".into(), HostTensor::from_f32(&[-2.5], &[])),
        ("params.empty".into(), HostTensor::from_f32(&[], &[0, 3])),
        ("opt_state.0.count".into(), HostTensor::from_i32(&[3], &[])),
        ("opt_state.0.mu.w".into(), HostTensor::from_i64(&[i64::MIN, 0, i64::MAX], &[3])),
        ("rng.key".into(), HostTensor::from_u32(&[1, 2, 0xdead_beef, u32::MAX], &[1, 4])),
        ("mask".into(), HostTensor::from_bool(&[true, false, true, true], &[2, 2])),
        ("bytes".into(), HostTensor::from_u8(&[0, 255, 7], &[3])),
        ("small_ints".into(), HostTensor::from_bytes(DType::S8, &[2], vec![0x80, 0x7f])),
    ]
}

fn assert_reads_back(item_dir: &Path, leaves: &[(String, HostTensor)]) {
    let ckpt = OrbaxCheckpoint::open(item_dir).unwrap();
    assert_eq!(ckpt.leaves().len(), leaves.len());
    for (name, t) in leaves {
        let got = ckpt.read(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((&got.dtype, &got.dims), (&t.dtype, &t.dims), "{name}");
        assert!(got.data == t.data, "{name}: values differ");
    }
}

fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The same file list with data file names (`d/<32 hex>`) replaced by `d/<hex>`.
fn layout(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = files_under(dir)
        .keys()
        .filter(|k| !k.contains("expected."))
        .map(|k| match k.rsplit_once("d/") {
            Some((head, h)) if h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()) => format!("{head}d/<hex>"),
            _ => k.clone(),
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn mixed_dtypes_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let leaves = mixed_tree();
    let step_dir = write_checkpoint(tmp.path(), 5, &leaves, json!({"scan_layers": true})).unwrap().as_local().unwrap().to_path_buf();
    assert_eq!(step_dir, tmp.path().join("5"));
    assert_reads_back(&step_dir.join("items"), &leaves);
    let ckpt = OrbaxCheckpoint::open_step(tmp.path(), 5).unwrap();
    let leaf = ckpt.leaf("opt_state.0.count").unwrap();
    assert_eq!(leaf.path, vec![PathKey::Key("opt_state".into()), PathKey::Index(0), PathKey::Key("count".into())]);
    assert_eq!(ckpt.checkpoint_metadata().unwrap()["custom_metadata"], json!({"scan_layers": true}));
    assert_eq!(list_steps(tmp.path()).unwrap(), vec![5]);
    // The big array is out of line in the process database, reached through base path ocdbt.process_0/.
    let db = OcdbtDatabase::open(&step_dir.join("items")).unwrap();
    match db.location(b"params.big/c/0/0").unwrap() {
        ValueRef::Indirect { file, .. } => assert!(file.starts_with("ocdbt.process_0/d/"), "{file}"),
        v => panic!("expected an indirect value, got {v:?}"),
    }
    assert!(matches!(db.location(b"params.scalar/c").unwrap(), ValueRef::Inline(_)));
    // Only what was asked is read.
    let params: Vec<_> = ckpt.read_selected("params.").map(|r| r.unwrap().0).collect();
    assert_eq!(params, ["params.bf16", "params.big", "params.empty", "params.f16", "params.f64", "params.scalar"]);
}

#[test]
fn chunked_arrays_and_several_data_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let w: Vec<f32> = (0..12 * 100).map(|_| rng.gen()).collect();
    let leaves = vec![
        ("w".to_string(), HostTensor::from_f32(&w, &[12, 100])),
        ("e".to_string(), HostTensor::from_f32(&f32s(24, |i| i as f32), &[2, 3, 4])),
    ];
    let refs: Vec<WriteLeaf> =
        leaves.iter().map(|(n, t)| WriteLeaf { path: vec![PathKey::Key(n.clone())], tensor: t }).collect();
    let opts = WriteOptions {
        chunk_byte_size: 1700, // w: [12,100] f32 -> 4 chunks [12,25] of 1200 bytes, out of line; e stays whole
        target_data_file_size: 2000,
        sharding: ShardingRecord::NamedDevice0,
        ..WriteOptions::default()
    };
    let step = write_checkpoint_with(tmp.path(), 0, &refs, &opts).unwrap().as_local().unwrap().to_path_buf();
    assert_reads_back(&step.join("items"), &leaves);
    let data_files = std::fs::read_dir(step.join("items/ocdbt.process_0/d")).unwrap().count();
    assert!(data_files >= 3, "{data_files} data files");
    let am = std::fs::read_to_string(step.join("items/array_metadatas/process_0")).unwrap();
    assert!(am.contains("\"chunk_shape\": [12, 25]"), "{am}");
}

/// Zarr chunks carry no checksum of their own (orbax writes zstd without one), but the shard index does.
#[test]
fn corrupt_shard_index_names_the_array() {
    let tmp = tempfile::tempdir().unwrap();
    let step = write_mixed(tmp.path(), 1);
    let db = OcdbtDatabase::open(&step.join("items")).unwrap();
    let Some(ValueRef::Indirect { file, offset, length }) = db.location(b"params.big/c/0/0").cloned() else { panic!() };
    let path = step.join("items").join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(offset + length) as usize - 10] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = OrbaxCheckpoint::open(step.join("items")).unwrap().read("params.big").unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("array params.big") && err.contains("params.big/c/0/0") && err.contains("crc32c"), "{err}");
}

/// Our save of tree T and orbax's (`c_manager_maxtext/checkpoints/0`) have the same files, the same
/// metadata bytes and the same OCDBT keys and values; only random ids, timestamps and paths differ.
#[test]
fn same_structure_as_orbax_manager_save() {
    let fixture = common::shipped("orbax/c_manager_maxtext/checkpoints/0");
    let tmp = tempfile::tempdir().unwrap();
    let step = write_checkpoint(tmp.path(), 0, &tree_t(), json!({})).unwrap().as_local().unwrap().to_path_buf();
    assert_eq!(layout(&step), layout(&fixture));
    for f in ["items/_METADATA", "items/_sharding", "items/array_metadatas/process_0"] {
        let (ours, theirs) = (std::fs::read(step.join(f)).unwrap(), std::fs::read(fixture.join(f)).unwrap());
        assert!(
            ours == theirs,
            "{f} differs:\n{}\n{}",
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }
    let ours = OcdbtDatabase::open(&step.join("items")).unwrap();
    let theirs = OcdbtDatabase::open(&fixture.join("items")).unwrap();
    assert_eq!(ours.config.max_inline_value_bytes, theirs.config.max_inline_value_bytes);
    assert_eq!(ours.config.max_decoded_node_bytes, theirs.config.max_decoded_node_bytes);
    assert_eq!(ours.config.version_tree_arity_log2, theirs.config.version_tree_arity_log2);
    assert_eq!(ours.config.zstd_level, theirs.config.zstd_level);
    let keys: Vec<&[u8]> = ours.keys().collect();
    assert_eq!(keys, theirs.keys().collect::<Vec<_>>());
    for k in keys {
        let (a, b) = (ours.location(k).unwrap(), theirs.location(k).unwrap());
        assert_eq!(a, b, "value of {}", String::from_utf8_lossy(k));
    }
    let md: serde_json::Value =
        serde_json::from_slice(&std::fs::read(step.join("_CHECKPOINT_METADATA")).unwrap()).unwrap();
    let their_md: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("_CHECKPOINT_METADATA")).unwrap()).unwrap();
    assert_eq!(md["item_handlers"], their_md["item_handlers"]);
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&md), keys(&their_md));
}

fn write_mixed(root: &Path, step: u64) -> PathBuf {
    write_checkpoint(root, step, &mixed_tree(), json!({})).unwrap().as_local().unwrap().to_path_buf()
}

#[test]
fn truncated_data_file_names_the_array() {
    let tmp = tempfile::tempdir().unwrap();
    let step = write_mixed(tmp.path(), 1);
    let d = step.join("items/ocdbt.process_0/d");
    for e in std::fs::read_dir(&d).unwrap().flatten() {
        let f = std::fs::OpenOptions::new().write(true).open(e.path()).unwrap();
        f.set_len(100).unwrap();
    }
    let ckpt = OrbaxCheckpoint::open(step.join("items")).unwrap();
    let err = ckpt.read("params.big").unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("array params.big") && err.contains("truncated"), "{err}");
    // Arrays stored inline in the root are unaffected.
    ckpt.read("params.scalar").unwrap();
}

#[test]
fn corrupt_manifest_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let step = write_mixed(tmp.path(), 1);
    let manifest = step.join("items/manifest.ocdbt");
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[20] ^= 0x40;
    std::fs::write(&manifest, bytes).unwrap();
    let err = OrbaxCheckpoint::open(step.join("items")).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains(&manifest.display().to_string()) && err.contains("corrupt"), "{err}");
}

#[test]
fn missing_metadata_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let step = write_mixed(tmp.path(), 1);
    std::fs::remove_file(step.join("items/_METADATA")).unwrap();
    let err = OrbaxCheckpoint::open(step.join("items")).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("no _METADATA") && err.contains("items"), "{err}");
}

#[test]
fn interrupted_save_leaves_no_step_and_earlier_steps_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let step1 = write_mixed(root, 1);
    let before = files_under(&step1);
    // A writer killed before its rename leaves its complete-looking temporary directory behind.
    let elsewhere = tempfile::tempdir().unwrap();
    let full = write_mixed(elsewhere.path(), 2);
    let dead = root.join("2.orbax-checkpoint-tmp-deadbeef");
    std::fs::rename(&full, &dead).unwrap();
    assert_eq!(list_steps(root).unwrap(), vec![1]);
    assert!(OrbaxCheckpoint::open_step(root, 2).is_err());
    let err = OrbaxCheckpoint::open(dead.join("items")).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("incomplete"), "{err}");
    assert_eq!(files_under(&step1), before);
    assert_reads_back(&step1.join("items"), &mixed_tree());
    // Saving step 2 again works, and an existing step is never overwritten.
    write_mixed(root, 2);
    assert_eq!(list_steps(root).unwrap(), vec![1, 2]);
    let err = write_checkpoint(root, 1, &tree_t(), json!({})).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(files_under(&step1), before);
}

#[test]
fn bad_leaves_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let t = HostTensor::from_f32(&[1.0], &[1]);
    for (leaves, what) in [
        (vec![("a".to_string(), t.clone()), ("a".to_string(), t.clone())], "two leaves"),
        (vec![("a".to_string(), t.clone()), ("a.b".to_string(), t.clone())], "parent"),
        (vec![("a..b".to_string(), t.clone())], "non-empty"),
        (vec![("a".to_string(), HostTensor { dtype: DType::F32, dims: vec![2], data: vec![0; 4] })], "do not fit"),
    ] {
        let err = write_checkpoint(tmp.path(), 0, &leaves, json!({})).unwrap_err().to_string();
        eprintln!("{err}");
        assert!(err.contains(what), "{err}");
    }
    let dotted = [PathKey::Key("a.b".into())];
    let nested = [PathKey::Key("a".into()), PathKey::Key("b".into())];
    let leaves = [WriteLeaf { path: dotted.to_vec(), tensor: &t }, WriteLeaf { path: nested.to_vec(), tensor: &t }];
    let err = write_checkpoint_with(tmp.path(), 0, &leaves, &WriteOptions::default()).unwrap_err().to_string();
    assert!(err.contains("two key paths"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).map(|d| d.count()).unwrap_or(0), 0, "nothing left behind");
}
