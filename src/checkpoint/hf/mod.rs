//! HuggingFace Qwen3-Next checkpoints: `config.json` -> MaxText config keys, safetensors (single file or
//! sharded with `model.safetensors.index.json`) -> one host tensor per [`ParamDecl`], and back.
//!
//! The mapping is MaxText's `QWEN3_NEXT_MAXTEXT_TO_HF_PARAM_MAPPING` + hooks (reference §3.4): every
//! MaxText parameter is a stack (over layers, and over experts for the routed experts) of HF tensors, each
//! transformed by one of `.T`, `.T.reshape(layer dims)`, `transpose(2, 1, 0)` or nothing. Loading streams
//! tensor by tensor out of memory-mapped files; every HF tensor must be consumed (except `mtp.*`, which
//! MaxText does not load either), so a `config.json` that does not match the weights is caught.
//!
//! ```no_run
//! # use std::path::Path;
//! # use maxtext::checkpoint::hf;
//! let overrides = hf::read_config_overrides(Path::new("hf_dir"))?;
//! let cfg = maxtext::config::Config::load(Path::new("configs/base.yml"), &overrides).unwrap();
//! let decls = maxtext::program::param_decls(&cfg);
//! let params = hf::load_params(Path::new("hf_dir"), &decls, &cfg.model)?;
//! # Ok::<(), hf::HfError>(())
//! ```

mod config;
mod convert;
mod files;
mod load;
mod mapping;
mod region;

use std::path::PathBuf;

pub use config::{config_json, config_overrides, read_config_overrides};
pub use files::{write_safetensors, HfCheckpoint, TensorMeta};
pub use convert::{convert_bytes, StackLayout};
pub use load::{hf_tensors_for, load_params, load_params_from, ParamLoader};
pub use mapping::{hf_sources, Source, Transform};

pub type Result<T, E = HfError> = std::result::Result<T, E>;

/// `hf_model_path` as a local directory. A `gs://` checkpoint's files (`*.safetensors`, `*.json`: the
/// config, the shard index, tokenizer files) are copied to a local temporary directory first, once per
/// process, saying so on stderr: the loader memory-maps the safetensors files and reads only the rows a
/// parameter box needs, which wants local files. [`crate::storage::remove_staged`] deletes the copy.
pub fn local_checkpoint_dir(dir: &crate::storage::Location) -> Result<PathBuf> {
    let keep = |n: &str| n.ends_with(".safetensors") || n.ends_with(".json");
    crate::storage::local_dir(dir, "hf_model_path", keep).map_err(|e| match e {
        crate::storage::StorageError::NotFound { .. } => HfError::DirNotFound { dir: PathBuf::from(dir.to_string()) },
        other => HfError::Io { path: PathBuf::from(dir.to_string()), source: other.into() },
    })
}

/// Everything that can go wrong reading a HuggingFace checkpoint; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("HF checkpoint directory {dir} does not exist (hf_model_path should be a directory with config.json and model.safetensors or model.safetensors.index.json)")]
    DirNotFound { dir: PathBuf },

    #[error("{dir} has neither model.safetensors nor model.safetensors.index.json{}", found_hint(.found))]
    NoWeights { dir: PathBuf, found: Vec<String> },

    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path} is not a valid safetensors index: {reason}")]
    BadIndex { path: PathBuf, reason: String },

    #[error("shard {shard} named in {index} is missing (it holds tensor {tensor} and {more} more); download it again or fix the index")]
    MissingShard { shard: String, index: PathBuf, tensor: String, more: usize },

    #[error("{file} is not a valid safetensors file ({reason}); the file is truncated or corrupt, download it again")]
    CorruptHeader { file: PathBuf, reason: String },

    #[error("the index maps tensor {tensor} to shard {shard}, but that shard has no such tensor")]
    TensorNotInShard { tensor: String, shard: String },

    #[error("HF tensor {tensor} (for MaxText parameter {maxtext_path}) is not in the checkpoint; does config.json match the weights?")]
    MissingTensor { tensor: String, maxtext_path: String },

    #[error("HF tensor {tensor} has shape {actual:?}, but the config gives {expected:?} (for MaxText parameter {maxtext_path}); config.json does not match the weights")]
    ShapeMismatch { tensor: String, maxtext_path: String, expected: Vec<i64>, actual: Vec<i64> },

    #[error("{count} HF tensor(s) of the checkpoint are not used by any parameter: {}{}; config.json does not match the weights (e.g. more layers or experts in the files than in the config)", .names.join(", "), if *.count > .names.len() { ", ..." } else { "" })]
    UnusedTensors { count: usize, names: Vec<String> },

    #[error("HF tensor {tensor} has dtype {dtype}, which cannot be converted to {target} (only f32, bf16, f16 and f64 weights are supported)")]
    UnsupportedDtype { tensor: String, dtype: String, target: String },

    #[error("MaxText parameter {maxtext_path} has no HF counterpart in the Qwen3-Next mapping")]
    Unmapped { maxtext_path: String },

    #[error("MaxText parameter {maxtext_path}: {reason}")]
    DeclMismatch { maxtext_path: String, reason: String },

    #[error("{path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    #[error("config.json has model_type {model_type:?}; only Qwen3-Next (\"qwen3_next\") checkpoints can be imported")]
    NotQwen3Next { model_type: String },
}

fn found_hint(found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!(" (found {}; a sharded checkpoint needs its model.safetensors.index.json)", found.join(", "))
    }
}
