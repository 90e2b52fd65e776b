//! Sharded state: boxes read from Orbax checkpoints (every fixture orbax or MaxText wrote, every codec
//! variant) and from HF safetensors equal the same slice of a whole read; sharded uploads put each
//! device's box on it; the train state saved from 4 devices restores bit-exactly on 1 and vice versa.

use std::path::{Path, PathBuf};

use maxtext::checkpoint::hf::{self, HfCheckpoint, ParamLoader};
use maxtext::checkpoint::orbax::OrbaxCheckpoint;
use maxtext::config::Config;
use maxtext::sharding::extract_region;

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures").join(rel)
}

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

/// Item directories under the shared orbax fixtures (any directory holding `_METADATA`).
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
    let root = shared("orbax");
    if !root.is_dir() {
        eprintln!("SKIP: no shared orbax fixtures at {}", root.display());
        return;
    }
    let mut dirs = Vec::new();
    item_dirs(&root, &mut dirs);
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
    let dir = shared("orbax/maxtext_qwen3next_tiny");
    if !dir.join("0/items/_METADATA").is_file() {
        eprintln!("SKIP: no MaxText fixture at {}", dir.display());
        return;
    }
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
    let dir = shared("hf/qwen3-next-tiny");
    if !dir.join("config.json").is_file() {
        eprintln!("SKIP: no HF fixture at {}", dir.display());
        return;
    }
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
