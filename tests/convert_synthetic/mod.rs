//! Synthetic HuggingFace Qwen3-Next checkpoints of any size, for the convert tests and the convert
//! benchmark: `config.json` from a MaxText config, random weights written shard by shard with
//! `hf::write_safetensors` (so generating a multi-GB checkpoint needs one shard of memory).
#![allow(dead_code)]

use std::path::Path;

use maxtext::checkpoint::hf::{self, hf_sources};
use maxtext::config::Config;
use maxtext::ir::DType;
use maxtext::runtime::HostTensor;

/// The config of a scaled Qwen3-Next (the tiny fixture's architecture with the given sizes).
pub fn scaled_config(emb: usize, layers: usize, experts: usize, moe_mlp: usize, vocab: usize, extra: &[&str]) -> Config {
    let mut args: Vec<String> = [
        "model_name=qwen3-next-tiny".to_string(),
        "override_model_config=true".into(),
        format!("base_emb_dim={emb}"),
        format!("base_num_decoder_layers={layers}"),
        format!("num_experts={experts}"),
        format!("base_moe_mlp_dim={moe_mlp}"),
        format!("base_mlp_dim={moe_mlp}"),
        format!("shared_expert_mlp_dim={moe_mlp}"),
        format!("vocab_size={vocab}"),
    ]
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml");
    Config::load(&base, &args).expect("synthetic config")
}

/// A fast reproducible generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `n` random values of `dtype` (bf16 or f32) with magnitudes in [2^-8, 2^-1): finite, like weights.
fn random_bytes(rng: &mut Rng, n: usize, dtype: DType) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * dtype.size_bytes());
    match dtype {
        DType::BF16 => {
            while out.len() < n * 2 {
                let r = rng.next();
                for k in 0..4 {
                    if out.len() >= n * 2 {
                        break;
                    }
                    let b = (r >> (16 * k)) as u16;
                    // sign | exponent 119..126 | 7 mantissa bits
                    let bits = (b & 0x8000) | ((119 + ((b >> 7) & 7)) << 7) | (b & 0x7f);
                    out.extend_from_slice(&bits.to_le_bytes());
                }
            }
        }
        DType::F32 => {
            for _ in 0..n {
                let b = rng.next() as u32;
                let bits = (b & 0x8000_0000) | ((119 + ((b >> 23) & 7)) << 23) | (b & 0x7f_ffff);
                out.extend_from_slice(&bits.to_le_bytes());
            }
        }
        other => panic!("synthetic weights in {other} are not supported"),
    }
    out
}

/// Writes a synthetic HF checkpoint for `cfg` into `dir`: `config.json`, shards of about `shard_bytes`
/// (`model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`). Returns the total tensor bytes.
pub fn write_synthetic_hf(dir: &Path, cfg: &Config, dtype: DType, shard_bytes: u64, seed: u64) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let decls = maxtext::program::param_decls(cfg);
    let mut names: Vec<(String, Vec<i64>)> = Vec::new();
    for d in &decls {
        let src = hf_sources(d, &cfg.model).expect("every decl has HF tensors");
        names.extend(src.hf_names.iter().map(|n| (n.clone(), src.hf_shape.clone())));
    }
    // Shards: consecutive tensors up to shard_bytes.
    let mut shards: Vec<Vec<(String, Vec<i64>)>> = vec![vec![]];
    let mut filled = 0u64;
    for (name, shape) in names {
        let bytes = shape.iter().product::<i64>() as u64 * dtype.size_bytes() as u64;
        if filled > 0 && filled + bytes > shard_bytes {
            shards.push(vec![]);
            filled = 0;
        }
        filled += bytes;
        shards.last_mut().unwrap().push((name, shape));
    }
    let mut rng = Rng(seed);
    let mut weight_map = serde_json::Map::new();
    let mut total = 0u64;
    let count = shards.len();
    for (i, shard) in shards.into_iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, count);
        let tensors: Vec<(String, HostTensor)> = shard
            .into_iter()
            .map(|(name, shape)| {
                let n = shape.iter().product::<i64>() as usize;
                let t = HostTensor::from_bytes(dtype, &shape, random_bytes(&mut rng, n, dtype));
                total += t.data.len() as u64;
                weight_map.insert(name.clone(), serde_json::Value::String(file.clone()));
                (name, t)
            })
            .collect();
        hf::write_safetensors(&dir.join(&file), &tensors).unwrap();
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string(&index).unwrap()).unwrap();
    let config = hf::config_json(&cfg.model, dtype);
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    total
}
