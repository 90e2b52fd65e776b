//! Sharded state: boxes read from Orbax checkpoints (every fixture orbax or MaxText wrote, every codec
//! variant) and from HF safetensors equal the same slice of a whole read; sharded uploads put each
//! device's box on it; the train state saved from 4 devices restores bit-exactly on 1 and vice versa.

use std::path::{Path, PathBuf};

use maxtext::checkpoint::hf::{self, HfCheckpoint, ParamLoader};
use maxtext::checkpoint::orbax::OrbaxCheckpoint;
use maxtext::config::Config;
use maxtext::sharding::extract_region;

mod common;

/// Boxes that exercise chunk edges: each half along each dim, an interior box, a single element at the
/// end, and the whole array.
pub fn boxes(dims: &[i64]) -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut out = vec![(vec![0; dims.len()], dims.to_vec())];
    if dims.contains(&0) {
        return out;
    }
    for d in 0..dims.len() {
        if dims[d] >= 2 {
            let h = dims[d] / 2;
            let mut o = vec![0; dims.len()];
            let mut s = dims.to_vec();
            s[d] = h;
            out.push((o.clone(), s.clone()));
            o[d] = h;
            s[d] = dims[d] - h;
            out.push((o, s));
        }
    }
    let inner: (Vec<i64>, Vec<i64>) = dims.iter().map(|&d| (d / 3, (d / 2).max(1).min(d - d / 3))).unzip();
    out.push(inner);
    out.push((dims.iter().map(|d| d - 1).collect(), vec![1; dims.len()]));
    out
}

/// Item directories under a folder of Orbax fixtures (any directory holding `_METADATA`).
fn item_dirs(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(root) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.join("_METADATA").is_file() {
                out.push(p.clone());
            }
            item_dirs(&p, out);
        }
    }
}

#[test]
fn orbax_boxes_equal_slices_of_whole_reads() {
    let root = common::shipped("orbax");
    let mut dirs = Vec::new();
    item_dirs(&root, &mut dirs);
    // MaxText's checkpoint: the leaves its trimmed copy keeps (the others fail to read and are passed over).
    item_dirs(&common::maxtext_checkpoint(), &mut dirs);
    let (mut checked, mut arrays) = (0, 0);
    for dir in &dirs {
        let Ok(ck) = OrbaxCheckpoint::open(dir) else { continue }; // deliberately broken fixtures
        for leaf in ck.leaves().iter().filter(|l| l.is_array()) {
            let Ok(whole) = ck.read_array(&leaf.name) else { continue };
            arrays += 1;
            let dims: Vec<i64> = whole.shape.iter().map(|d| *d as i64).collect();
            let elem = whole.dtype.size();
            for (o, d) in boxes(&dims) {
                let u = |v: &[i64]| v.iter().map(|x| *x as u64).collect::<Vec<_>>();
                let got = ck.read_region(&leaf.name, &u(&o), &u(&d)).unwrap_or_else(|e| panic!("{}: {}: {e}", dir.display(), leaf.name));
                let want = extract_region(&whole.data, &dims, &o, &d, elem);
                assert!(got.data == want, "{}: {} box {o:?}+{d:?} differs", dir.display(), leaf.name);
                checked += 1;
            }
        }
    }
    eprintln!("{checked} boxes of {arrays} arrays in {} checkpoints", dirs.len());
    assert!(arrays > 50, "only {arrays} arrays found under {}", root.display());
}

fn maxtext_config(extra: &[&str]) -> Config {
    let mut args: Vec<String> = "model_name=qwen3-next-80b-a3b override_model_config=true \
        base_emb_dim=128 base_num_decoder_layers=4 base_num_query_heads=4 base_num_kv_heads=2 head_dim=32 \
        base_mlp_dim=64 base_moe_mlp_dim=64 num_experts=8 num_experts_per_tok=2 shared_experts=1 vocab_size=1024 \
        gdn_key_head_dim=32 gdn_value_head_dim=32 gdn_num_key_heads=2 gdn_num_value_heads=4 gdn_chunk_size=64 \
        per_device_batch_size=1 max_target_length=128 attention=dot_product dtype=float32 weight_dtype=float32 \
        megablox=false sparse_matmul=false"
        .split_whitespace()
        .map(str::to_string)
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml"), &args).unwrap()
}

#[test]
fn maxtext_checkpoint_param_boxes_equal_slices() {
    let dir = common::maxtext_checkpoint();
    for dtype in ["float32", "bfloat16"] {
        let cfg = maxtext_config(&[&format!("weight_dtype={dtype}")]);
        let decls = maxtext::program::param_decls(&cfg);
        let ck = maxtext::checkpoint::params::ModelCheckpoint::open(&dir).unwrap();
        let whole = ck.restore_params(&decls, &cfg.model).unwrap();
        let sources = ck.plan(&decls, &cfg.model).unwrap();
        for ((d, src), w) in decls.iter().zip(&sources).zip(&whole) {
            for (o, b) in boxes(&d.dims) {
                let got = ck.read_param_region(d, src, &o, &b).unwrap();
                assert!(got == extract_region(&w.data, &w.dims, &o, &b, w.dtype.size_bytes()), "{} box {o:?}+{b:?} ({dtype})", d.path);
            }
        }
    }
}

#[test]
fn hf_param_boxes_equal_slices() {
    let dir = common::shipped("hf/qwen3-next-tiny");
    for extra in [&["scan_layers=true"][..], &["scan_layers=false", "weight_dtype=bfloat16"][..]] {
        let mut o = hf::read_config_overrides(&dir).unwrap();
        o.extend(extra.iter().map(|s| s.to_string()));
        let cfg = Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml"), &o).unwrap();
        let decls = maxtext::program::param_decls(&cfg);
        let ck = HfCheckpoint::open(&dir).unwrap();
        let loader = ParamLoader::new(&ck, &decls, &cfg.model).unwrap();
        for (i, d) in decls.iter().enumerate() {
            let w = loader.load(i).unwrap();
            for (o, b) in boxes(&d.dims) {
                let got = loader.load_region(i, &o, &b).unwrap();
                assert!(got == extract_region(&w.data, &w.dims, &o, &b, w.dtype.size_bytes()), "{} box {o:?}+{b:?} {extra:?}", d.path);
            }
        }
    }
}

mod train_state {
    use super::*;
    use maxtext::checkpoint::orbax::OrbaxCheckpoint;
    use maxtext::checkpoint::train_state::{save_trainer_state, TrainStateReader};
    use maxtext::pjrt::{open_client, Hardware};
    use maxtext::program::train_program;
    use maxtext::runtime::{HostTensor, RunError, Runtime, Trainer};

    fn cfg(devices: usize) -> Config {
        let args: Vec<String> = format!(
            "model_name=qwen3-next-tiny override_model_config=true vocab_size=1024 per_device_batch_size={} \
             max_target_length=32 max_prefill_predict_length=32 dtype=float32 cpu_device_count={devices} ici_fsdp_parallelism=-1",
            4 / devices
        )
        .split_whitespace()
        .map(str::to_string)
        .collect();
        Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml"), &args).unwrap()
    }

    /// A state with distinct values everywhere (random params, mu and nu; step and count 3).
    fn host_state(tp: &maxtext::program::TrainProgram) -> Vec<HostTensor> {
        maxtext::runtime::state_args(&tp.program)
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                let ty = &tp.program.main.params[a];
                if ty.dims.is_empty() {
                    return HostTensor::from_i32(&[3], &[]);
                }
                let n = ty.num_elements() as usize;
                let v: Vec<f32> = (0..n).map(|k| ((k * 7919 + i * 104729) % 10007) as f32 / 10007.0 - 0.5).collect();
                HostTensor::from_f32_as(&v, &ty.dims, ty.dtype)
            })
            .collect()
    }

    fn whole_from(reader: &TrainStateReader, i: usize, dims: &[i64]) -> Vec<u8> {
        reader.read_region(i, &vec![0; dims.len()], dims).unwrap()
    }

    fn downloaded(t: &Trainer, i: usize) -> Vec<(Vec<i64>, Vec<u8>)> {
        let mut out = Vec::new();
        t.for_each_state_shard(i, |o, _, b| -> Result<(), RunError> {
            out.push((o.to_vec(), b));
            Ok(())
        })
        .unwrap();
        out
    }

    /// Saved from 4 devices (fsdp=4): chunks are the shards and `_sharding` names the mesh; it restores
    /// bit-exactly whole and onto 1 device. Saved from 1 device, it restores onto 4.
    #[test]
    fn sharded_state_round_trips_between_4_devices_and_1() {
        let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(4)).unwrap());
        let (cfg4, cfg1) = (cfg(4), cfg(1));
        let (tp4, tp1) = (train_program(&cfg4, 4, 32).unwrap(), train_program(&cfg1, 4, 32).unwrap());
        let state = host_state(&tp4);
        let want: Vec<_> = maxtext::runtime::state_args(&tp4.program).into_iter().map(|a| &tp4.program.main.params[a]).map(|t| (t.dtype, t.dims.clone())).collect();
        let decls = tp4.decls.clone();
        let t4 = Trainer::from_regions(&rt, tp4, |i, o, d| -> Result<Vec<u8>, RunError> {
            Ok(extract_region(&state[i].data, &state[i].dims, o, d, state[i].dtype.size_bytes()))
        })
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let step4 = save_trainer_state(&t4, &tmp.path().join("four"), 3, &[], &serde_json::json!({"pos": 1}), true, None).unwrap();

        // On disk: the embedding is split over fsdp, so its chunks are its shards.
        let emb = "params.params.token_embedder.embedding";
        let ck = OrbaxCheckpoint::open(step4.join("items")).unwrap();
        let sharding = ck.sharding(emb).expect("a _sharding record").to_string();
        assert!(sharding.contains("NamedSharding") && sharding.contains("fsdp"), "{sharding}");
        let params = maxtext::runtime::state_entries(&t4.program().program, "params");
        let spec = t4.state_spec(params.start + decls.iter().position(|d| d.path == "token_embedder/embedding").unwrap());
        let shard = maxtext::sharding::shard_dims(spec.dims, spec.sharding.unwrap(), spec.mesh.unwrap());
        assert_ne!(shard, spec.dims.to_vec(), "the embedding should be sharded on 4 devices");
        let zarr: serde_json::Value = {
            let db = maxtext::checkpoint::orbax::ocdbt::OcdbtDatabase::open(&step4.join("items")).unwrap();
            serde_json::from_slice(&db.get(format!("{emb}/zarr.json").as_bytes()).unwrap().unwrap()).unwrap()
        };
        assert_eq!(zarr["chunk_grid"]["configuration"]["chunk_shape"], serde_json::json!(shard), "{zarr}");

        // Whole, bit-exact.
        let (reader, data) = TrainStateReader::open(ck, &decls, maxtext::config::OptType::AdamW, &want, true).unwrap();
        assert_eq!(data, serde_json::json!({"pos": 1}));
        for (i, t) in state.iter().enumerate() {
            assert!(whole_from(&reader, i, &t.dims) == t.data, "entry {i} ({}) differs", t.dims.len());
        }
        // Onto 1 device, bit-exact; saved from there (unsharded), back onto 4.
        let t1 = Trainer::from_regions(&rt, tp1, |i, o, d| -> Result<Vec<u8>, RunError> { Ok(reader.read_region(i, o, d).unwrap()) }).unwrap();
        for (i, t) in state.iter().enumerate() {
            assert!(downloaded(&t1, i) == vec![(vec![0; t.dims.len()], t.data.clone())], "entry {i} on 1 device");
        }
        let step1 = save_trainer_state(&t1, &tmp.path().join("one"), 3, &[], &serde_json::Value::Null, true, None).unwrap();
        let (reader1, _) = TrainStateReader::open(OrbaxCheckpoint::open(step1.join("items")).unwrap(), &decls, maxtext::config::OptType::AdamW, &want, true).unwrap();
        let tp4b = train_program(&cfg4, 4, 32).unwrap();
        let t4b = Trainer::from_regions(&rt, tp4b, |i, o, d| -> Result<Vec<u8>, RunError> { Ok(reader1.read_region(i, o, d).unwrap()) }).unwrap();
        for (i, t) in state.iter().enumerate() {
            for (o, bytes) in downloaded(&t4b, i) {
                let dims = maxtext::sharding::shard_dims(&t.dims, t4b.state_spec(i).sharding.unwrap_or(&maxtext::ir::Sharding::replicated(t.dims.len())), t4b.state_spec(i).mesh.unwrap());
                assert!(bytes == extract_region(&t.data, &t.dims, &o, &dims, t.dtype.size_bytes()), "entry {i} shard at {o:?} on 4 devices");
            }
        }
        orbax_restores_whole(&step4.as_local().unwrap().join("items"), &decls, &state);
    }

    /// The real orbax (the venv `scripts/setup_orbax_venv.sh` builds, through `common::orbax`)
    /// restores the 4-device checkpoint targetless on 4 host devices, every leaf bit-exact.
    fn orbax_restores_whole(items: &Path, decls: &[maxtext::nn::ParamDecl], state: &[HostTensor]) {
        let Some(py) = super::common::orbax::orbax_python() else { return };
        let out = tempfile::tempdir().unwrap();
        super::common::orbax::orbax_dump(py, items, out.path(), 4);
        let mut names = maxtext::checkpoint::train_state::state_leaf_names(decls, maxtext::config::OptType::AdamW);
        names.push("opt_state.2.count".into());
        for (k, name) in names.iter().enumerate() {
            let t = &state[if k < state.len() { k } else { 1 }];
            let got = std::fs::read(out.path().join(format!("{name}.bin"))).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(got == t.data, "orbax restored {name} with other values");
        }
        eprintln!("orbax restored all {} leaves of the 4-device checkpoint bit-exactly", names.len());
    }
}

/// One process of a multi-host run holds some partitions of the mesh: it reads and uploads only their
/// shards, owns (writes) only the shards whose first partition is its own, and its batch rows are one
/// block. Emulated on 2 CPU devices standing for partitions 2 and 3 of a 4-device mesh.
#[test]
fn a_process_holding_partitions_2_and_3_of_4_touches_only_their_shards() {
    use maxtext::ir::{DType, Mesh, Sharding};
    use maxtext::pjrt::{open_client, Hardware};
    use maxtext::runtime::{for_each_shard, local_rows, upload_sharded, LocalPartitions, RunError, ShardSpec};
    let client = open_client(Hardware::Cpu, None, Some(2)).unwrap();
    let devices = client.addressable_devices();
    let mesh = Mesh::new(&[("fsdp", 4)]);
    let rows = Sharding::new(&[&["fsdp"], &[]]);
    let dims = [8i64, 4];
    let whole: Vec<f32> = (0..32).map(|v| v as f32).collect();
    let bytes: Vec<u8> = whole.iter().flat_map(|v| v.to_le_bytes()).collect();
    let spec = ShardSpec { dtype: DType::F32, dims: &dims, sharding: Some(&rows), mesh: Some(&mesh) };
    let second = LocalPartitions { partitions: vec![2, 3], multi_process: true };
    let mut read = Vec::new();
    let bufs = upload_sharded(&client, devices, &second, spec, |o, d| -> Result<Vec<u8>, RunError> {
        read.push(o.to_vec());
        Ok(extract_region(&bytes, &dims, o, d, 4))
    })
    .unwrap();
    assert_eq!(read, vec![vec![4, 0], vec![6, 0]], "only partitions 2 and 3's rows are read");
    assert_eq!(bufs[0].to_bytes().unwrap(), bytes[4 * 16..6 * 16], "device 0 holds rows 4..6");
    assert_eq!(bufs[1].to_bytes().unwrap(), bytes[6 * 16..8 * 16], "device 1 holds rows 6..8");
    let refs: Vec<_> = bufs.iter().collect();
    let mut owned = Vec::new();
    for_each_shard(&refs, &second, spec, |o, _, b| -> Result<(), RunError> {
        owned.push((o.to_vec(), b));
        Ok(())
    })
    .unwrap();
    assert_eq!(owned, vec![(vec![4, 0], bytes[64..96].to_vec()), (vec![6, 0], bytes[96..128].to_vec())]);
    assert_eq!(local_rows(spec, &second), Some((4, 8)));
    assert_eq!(local_rows(spec, &LocalPartitions { partitions: vec![1, 3], multi_process: true }), None, "rows 2..4 and 6..8 are not one block");
    // A replicated array: every process uploads it, only the holder of partition 0 writes it.
    let everywhere = ShardSpec { sharding: None, ..spec };
    let bufs = upload_sharded(&client, devices, &second, everywhere, |o, d| -> Result<Vec<u8>, RunError> { Ok(extract_region(&bytes, &dims, o, d, 4)) }).unwrap();
    let refs: Vec<_> = bufs.iter().collect();
    let mut n = 0;
    for_each_shard(&refs, &second, everywhere, |_, _, _| -> Result<(), RunError> {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 0, "partition 0's process writes the replicated array");
    let first = LocalPartitions { partitions: vec![0, 1], multi_process: true };
    for_each_shard(&refs, &first, everywhere, |o, d, _| -> Result<(), RunError> {
        assert_eq!((o, d), (&[0i64, 0][..], &dims[..]));
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 1);
    // Partitions outside the mesh are an error, not a silent skip.
    let stray = LocalPartitions { partitions: vec![3, 4], multi_process: true };
    let err = upload_sharded(&client, devices, &stray, spec, |o, d| -> Result<Vec<u8>, RunError> { Ok(extract_region(&bytes, &dims, o, d, 4)) });
    assert!(matches!(err, Err(RunError::Devices { .. })), "{:?}", err.err());
}
