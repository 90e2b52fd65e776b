//! Interop with the real orbax-checkpoint 0.12.8 (`scripts/orbax_interop.py` in the venv that
//! `scripts/setup_orbax_venv.sh` builds under `.cache/`):
//! (a) orbax restores checkpoints our writer saved, through `PyTreeCheckpointer`, `StandardCheckpointer` and
//!     `CheckpointManager(..., item_names=('items',))` (targetless, with a MaxText-style target, and bare),
//!     each array compared with the values the script recomputes;
//! (b) orbax saves checkpoints (MaxText's manager layout, OCDBT + zarr v2, plain chunked zarr3) and our reader
//!     restores them bitwise equal to the values the script dumped.
//!
//! Without python3 the test prints SKIP. With python3 it needs PyPI once, to build the venv.

mod common;

use common::orbax::{orbax_dump, orbax_python};
use std::path::Path;
use std::process::Command;

use maxtext::checkpoint::orbax::{
    write_checkpoint, write_checkpoint_with, LeafKind, OrbaxCheckpoint, PathKey, ShardingRecord, WriteLeaf,
    WriteOptions,
};
use maxtext::ir::DType;
use maxtext::runtime::HostTensor;
use serde_json::{json, Value};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run_script(py: &Path, args: &[&str]) -> String {
    let t = std::time::Instant::now();
    let out = Command::new(py).arg(repo().join("scripts/orbax_interop.py")).args(args).output().expect("run python");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "orbax_interop.py {args:?} failed:\n{stdout}\n{stderr}");
    eprintln!("orbax_interop.py {} ({:.1} s):\n{stdout}", args[0], t.elapsed().as_secs_f64());
    stdout.into_owned()
}

/// Must match `written_by_rust()` in scripts/orbax_interop.py value for value.
fn rust_tree() -> Vec<(String, HostTensor)> {
    let f32s = |n: usize, f: &dyn Fn(usize) -> f32| (0..n).map(f).collect::<Vec<f32>>();
    let big = f32s(64 * 64, &|i| ((i as i64 * 7919) % 10007) as f32 / 10007f32);
    vec![
        ("params.dense.kernel".into(), HostTensor::from_f32(&f32s(12, &|i| i as f32 * 0.5), &[3, 4])),
        ("params.dense.bias".into(), HostTensor::from_f32_as(&[1.0, -2.0, 3.5, 0.25], &[4], DType::BF16)),
        ("params.embed".into(), HostTensor::from_f32(&f32s(24, &|i| i as f32), &[2, 3, 4])),
        ("params.scale".into(), HostTensor::from_f32(&[3.25], &[])),
        ("params.big".into(), HostTensor::from_f32(&big, &[64, 64])),
        ("params.half".into(), HostTensor::from_f32_as(&f32s(7, &|i| i as f32 / 3.0), &[7], DType::F16)),
        ("params.bf".into(), HostTensor::from_f32_as(&f32s(30, &|i| i as f32 * 0.37 - 3.0), &[5, 6], DType::BF16)),
        ("step".into(), HostTensor::from_i32(&[7], &[])),
        ("counts".into(), HostTensor::from_i32(&[1, 2, 3, 4, 5, 6], &[2, 3])),
        ("opt_state.0.count".into(), HostTensor::from_i32(&[3], &[])),
        ("opt_state.0.mu.w".into(), HostTensor::from_f32(&[0.5; 4], &[4])),
        ("wide.f64".into(), HostTensor::from_f64(&[std::f64::consts::PI, -1e300, 0.0], &[3])),
        ("wide.i64".into(), HostTensor::from_i64(&[i64::MIN, 0, i64::MAX], &[3])),
        ("rng.key".into(), HostTensor::from_u32(&[1, 2, 0xdead_beef, u32::MAX], &[1, 4])),
        ("mask".into(), HostTensor::from_bool(&[true, false, true, true], &[2, 2])),
        ("bytes".into(), HostTensor::from_u8(&[0, 255, 7], &[3])),
        ("small".into(), HostTensor::from_bytes(DType::S8, &[2], vec![0x80, 0x7f])),
        ("empty".into(), HostTensor::from_f32(&[], &[0, 3])),
    ]
}

#[test]
fn orbax_restores_what_we_write() {
    let Some(py) = orbax_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("checkpoints");
    let tree = rust_tree();
    // Step 1: the defaults (MaxText's layout, orbax-identical _sharding).
    write_checkpoint(&root, 1, &tree, json!({"scan_layers": true})).unwrap();
    // Step 2: chunked arrays, several data files, the portable 1-device NamedSharding.
    let leaves: Vec<WriteLeaf> = tree
        .iter()
        .map(|(n, t)| WriteLeaf {
            path: n.split('.').map(|s| s.parse().map(PathKey::Index).unwrap_or(PathKey::Key(s.into()))).collect(),
            tensor: t,
        })
        .collect();
    let opts = WriteOptions {
        chunk_byte_size: 4096,
        target_data_file_size: 5000,
        sharding: ShardingRecord::NamedDevice0,
        ..WriteOptions::default()
    };
    write_checkpoint_with(&root, 2, &leaves, &opts).unwrap();
    let out = run_script(py, &["restore", root.to_str().unwrap(), "1", "2"]);
    assert_eq!(out.lines().filter(|l| l.starts_with("OK ")).count(), 10, "{out}");
}

#[test]
fn we_restore_what_orbax_writes() {
    let Some(py) = orbax_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    run_script(py, &["write", tmp.path().to_str().unwrap()]);
    let expected: Value = serde_json::from_slice(&std::fs::read(tmp.path().join("expected.json")).unwrap()).unwrap();
    let items: Vec<&str> = expected["items"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(items.len(), 3);
    for item in items {
        let ckpt = OrbaxCheckpoint::open(tmp.path().join(item)).unwrap_or_else(|e| panic!("{item}: {e}"));
        let leaves = expected["leaves"].as_array().unwrap();
        assert_eq!(ckpt.leaves().len(), leaves.len(), "{item}");
        for want in leaves {
            let name = want["name"].as_str().unwrap();
            let leaf = ckpt.leaf(name).unwrap_or_else(|| panic!("{item}: no leaf {name}"));
            match want["kind"].as_str().unwrap() {
                "none" => {
                    assert_eq!(leaf.kind, LeafKind::Empty("None".into()), "{item}: {name}");
                    continue;
                }
                "scalar" => assert_eq!(leaf.kind, LeafKind::Scalar, "{item}: {name}"),
                _ => assert_eq!(leaf.kind, LeafKind::Array, "{item}: {name}"),
            }
            let a = ckpt.read_array(name).unwrap_or_else(|e| panic!("{item}: {e}"));
            let shape: Vec<u64> = want["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
            assert_eq!((a.dtype.name(), &a.shape), (want["dtype"].as_str().unwrap(), &shape), "{item}: {name}");
            let bytes = std::fs::read(tmp.path().join(want["file"].as_str().unwrap())).unwrap();
            assert!(a.data == bytes, "{item}: {name}: values differ");
        }
        // The list `layers` keeps its sequence keys.
        assert_eq!(ckpt.leaf("layers.1.k").unwrap().path[1], PathKey::Index(1));
    }
    let manager = OrbaxCheckpoint::open_step(&tmp.path().join("manager"), 3).unwrap();
    assert!(manager.use_ocdbt() && manager.use_zarr3());
}

/// A checkpoint written shard by shard from a (data=2, fsdp=2) mesh, as orbax writes a sharded jax.Array
/// (chunks = shards, `NamedSharding` records), restores targetless in orbax on 4 host devices: whole,
/// bit-exact, with the recorded shardings.
#[test]
fn orbax_restores_our_sharded_save() {
    use maxtext::checkpoint::orbax::{named_sharding_record, CheckpointWriter};
    use maxtext::ir::{Mesh, Sharding};
    use maxtext::sharding::{extract_region, shard_dims, unique_shards};
    let Some(py) = orbax_python() else { return };
    let mesh = Mesh::new(&[("data", 2), ("fsdp", 2)]);
    let axes: Vec<(String, i64)> = mesh.axes.clone();
    let f32s = |n: usize, k: usize| (0..n).map(|i| ((i * 7919 + k) % 1009) as f32 / 7.0).collect::<Vec<f32>>();
    let leaves: Vec<(&str, HostTensor, Sharding)> = vec![
        ("params.emb", HostTensor::from_f32(&f32s(64, 1), &[8, 8]), Sharding::new(&[&["fsdp"], &[]])),
        ("params.two_d", HostTensor::from_f32_as(&f32s(48, 2), &[4, 12], DType::BF16), Sharding::new(&[&["data"], &["fsdp"]])),
        ("params.both", HostTensor::from_f32(&f32s(16, 3), &[16]), Sharding::new(&[&["data", "fsdp"]])),
        ("params.repl", HostTensor::from_f32(&f32s(6, 4), &[2, 3]), Sharding::new(&[&[], &[]])),
        ("step", HostTensor::from_i32(&[9], &[]), Sharding::new(&[])),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut w = CheckpointWriter::create(&tmp.path().join("ckpt"), 0, WriteOptions::default()).unwrap();
    for (name, t, s) in &leaves {
        let path: Vec<PathKey> = name.split('.').map(|k| PathKey::Key(k.into())).collect();
        let sd = shard_dims(&t.dims, s, &mesh);
        let record = named_sharding_record(&axes, &[0, 1, 2, 3], &s.dims);
        let array = w.begin_array(path, t.dtype, &t.dims, &sd, Some(record)).unwrap();
        for (o, _) in unique_shards(&t.dims, s, &mesh) {
            w.put_shard(&array, &o, &extract_region(&t.data, &t.dims, &o, &sd, t.dtype.size_bytes())).unwrap();
        }
        w.end_array(array).unwrap();
    }
    let step = w.finish().unwrap();
    let out = tmp.path().join("dump");
    orbax_dump(py, step.join("items").as_local().unwrap(), &out, 4);
    let index: Value = serde_json::from_slice(&std::fs::read(out.join("restored.json")).unwrap()).unwrap();
    let index = index.as_array().unwrap();
    assert_eq!(index.len(), leaves.len());
    for (name, t, s) in &leaves {
        let got = std::fs::read(out.join(format!("{name}.bin"))).unwrap();
        assert!(got == t.data, "{name}: orbax restored other values");
        let entry = index.iter().find(|e| e["name"] == *name).unwrap();
        assert_eq!(entry["devices"], json!(4), "{name}: {entry}");
        let spec: Vec<Value> = s.dims.iter().map(|a| match a.len() { 0 => Value::Null, 1 => json!(a[0]), _ => json!(a) }).collect();
        let got_spec = entry["spec"].as_array().cloned().unwrap_or_default();
        // jax may drop trailing unsharded dims from a PartitionSpec.
        let trimmed: Vec<Value> = spec.iter().cloned().rev().skip_while(Value::is_null).collect::<Vec<_>>().into_iter().rev().collect();
        assert!(got_spec == spec || got_spec == trimmed, "{name}: restored with spec {got_spec:?}, written {spec:?}");
    }
}
