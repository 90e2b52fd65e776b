//! The typed config sections other than the model architecture: run, numerics, parallelism, data,
//! training, checkpointing, decoding and the conversion / check tools.

use std::path::PathBuf;

use crate::ir::DType;
// The storage layer's path syntax (a leaf: it imports nothing of this crate); path keys are parsed with it
// so that `gs://` is taken and other URL schemes are refused when the config loads.
use crate::storage::Location;

use super::error::{ConfigError, Origin};
use super::raw::RawConfig;
use super::types::*;

/// Which program to run where, and where outputs go.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// `run_name`, or `<model_name>_<YYYY-mm-dd-HH-MM>` (UTC) / `$JOBSET_NAME` when it was empty.
    pub run_name: String,
    pub model_name: String,
    pub override_model_config: bool,
    pub hardware: Hardware,
    pub pjrt_plugin_path: Option<PathBuf>,
    pub cpu_device_count: usize,
    /// AOT target such as `v5p-128`.
    pub compile_topology: Option<String>,
    pub compile_topology_num_slices: i64,
    pub compile_xla_flags: String,
    /// Persistent compilation cache (`~` expanded; local or `gs://`); `None` = off.
    pub jax_cache_dir: Option<Location>,
    pub log_config: bool,
    pub log_period: u64,
    pub metrics_file: Option<Location>,
    pub enable_tensorboard: bool,
    /// `base_output_directory`, or `./maxtext_output` made absolute when it was empty (MaxText's inference).
    pub base_output_directory: Location,
    pub program: Program,
    pub out_dir: Option<PathBuf>,
    /// `maxtext compile`: where the serialized executable goes.
    pub compiled_trainstep_file: Option<PathBuf>,
    pub skip_jax_distributed_system: bool,
    /// Seconds to wait for the coordinator and every process to join.
    pub jax_distributed_initialization_timeout: u64,
    /// `num_processes` (0: from the environment), `process_id` (-1: from the environment) and
    /// `coordinator_address` ("": from the environment); resolved by `crate::config::processes`.
    pub num_processes: usize,
    pub process_id: i64,
    pub coordinator_address: Option<String>,
}

/// Dtypes, precision, layer scanning, rematerialisation and kernel choices.
#[derive(Clone, Debug, PartialEq)]
pub struct ComputeConfig {
    /// Activation / compute dtype.
    pub dtype: DType,
    /// Parameter storage dtype.
    pub weight_dtype: DType,
    pub grad_dtype: DType,
    pub activations_in_float32: bool,
    pub matmul_precision: MatmulPrecision,
    pub float32_qk_product: bool,
    pub float32_logits: bool,
    pub float32_weight_sum: bool,
    pub float32_gate_logits: bool,
    pub cast_logits_to_fp32: bool,
    pub logits_dot_in_fp32: bool,
    pub scan_layers: bool,
    pub param_scan_axis: usize,
    pub remat_policy: RematPolicy,
    /// The `checkpoint_name` tags the backward pass keeps (the policy's names; for `custom`, the tensors
    /// whose key says `device`, MaxText's `tensors_on_device`); the rest of each layer is recomputed.
    pub remat_saved: Vec<String>,
    /// `attention`: `autoselected`, `dot_product` or `flash` (the key table refuses the cuDNN and paged
    /// kernels).
    pub attention: AttentionKind,
    /// `sa_block_q`, `sa_block_kv`: block sizes of `attention=flash` (MaxText's splash-attention keys).
    pub sa_block_q: usize,
    pub sa_block_kv: usize,
    pub megablox: bool,
    pub sparse_matmul: bool,
    pub use_tokamax_gmm: bool,
    /// MoE capacity factor; `<= 0` = dropless.
    pub capacity_factor: f64,
}

/// How routed MoE experts are computed (MaxText's `sparse_matmul` / `capacity_factor`, reference §5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MoeStrategy {
    /// `sparse_matmul=false`, `capacity_factor<=0`: every expert on every token (exact, E/k times the work).
    Dense,
    /// `sparse_matmul=false`, `capacity_factor>0`: per-expert capacity, copies over it dropped.
    Dropping { capacity_factor: f64 },
    /// `sparse_matmul=true` (MaxText's default; `megablox` / `use_tokamax_gmm` pick its kernel): sorted copies,
    /// a grouped matmul over the experts' groups, nothing dropped.
    Dropless { kernel: GroupedMatmul },
}

/// The grouped matmul of the dropless MoE.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GroupedMatmul {
    /// Each expert's copies padded to blocks, one batched matmul with each block's expert weights: the
    /// fast formulation on plugins without a ragged dot (CPU, GPU), standing in for MaxText's megablox /
    /// tokamax kernels there.
    Blocks,
    /// XLA's ragged dot per shard of the tokens (MaxText's `megablox=false`: `jax.lax.ragged_dot`).
    /// `native` on TPU, which compiles it (and stands in for the Pallas megablox kernel there); elsewhere
    /// an exact dense formulation (every expert on every copy), as slow as `sparse_matmul=false`.
    RaggedDot { native: bool },
}

/// The full-attention kernel of whole-sequence passes (training, forward, prefill). A decode step of one
/// token always uses dot product, as MaxText does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttentionKernel {
    /// softmax(q kᵀ + mask) v over the whole [seq, seq] score matrix.
    DotProduct,
    /// Blockwise with an online softmax (`src/nn/flash_attention.rs`) for sequences of at least `min_seq`
    /// tokens; shorter ones use dot product.
    Flash { block_q: usize, block_kv: usize, min_seq: usize },
}

impl ComputeConfig {
    /// The kernel `attention` selects on `hardware`. MaxText's `autoselected` is dot product in decode and
    /// below 128 tokens, else its flash kernel (splash on TPU, Pallas on GPU); on CPU, where MaxText has no
    /// flash kernel, it is dot product here.
    pub fn attention_kernel(&self, hardware: Hardware) -> AttentionKernel {
        let flash = |min_seq| AttentionKernel::Flash { block_q: self.sa_block_q, block_kv: self.sa_block_kv, min_seq };
        match (self.attention, hardware) {
            (AttentionKind::Flash, _) => flash(0),
            (AttentionKind::Autoselected, Hardware::Tpu | Hardware::Gpu) => flash(128),
            // dot_product, autoselected on CPU; the cuDNN and paged kinds never get here (the key table refuses them).
            _ => AttentionKernel::DotProduct,
        }
    }

    /// The MoE strategy on `hardware`.
    pub fn moe_strategy(&self, hardware: Hardware) -> MoeStrategy {
        let kernel = match hardware {
            Hardware::Tpu => GroupedMatmul::RaggedDot { native: true },
            _ if !self.megablox && !self.use_tokamax_gmm => GroupedMatmul::RaggedDot { native: false },
            _ => GroupedMatmul::Blocks,
        };
        match (self.sparse_matmul, self.capacity_factor > 0.0) {
            (true, _) => MoeStrategy::Dropless { kernel },
            (false, true) => MoeStrategy::Dropping { capacity_factor: self.capacity_factor },
            (false, false) => MoeStrategy::Dense,
        }
    }
}

/// Input data, tokenizer, batch and sequence lengths.
#[derive(Clone, Debug, PartialEq)]
pub struct DataConfig {
    pub dataset_type: DatasetType,
    pub dataset_path: Option<String>,
    pub dataset_name: String,
    pub eval_dataset_name: String,
    pub train_split: String,
    pub eval_split: String,
    pub hf_path: Option<String>,
    pub hf_name: Option<String>,
    pub hf_data_dir: Option<String>,
    pub hf_train_files: Option<String>,
    pub hf_eval_split: Option<String>,
    pub hf_eval_files: Option<String>,
    pub hf_access_token: Option<String>,
    pub grain_train_files: Option<String>,
    pub grain_eval_files: Option<String>,
    pub grain_file_type: GrainFileType,
    pub grain_worker_count: i64,
    pub train_data_columns: Vec<String>,
    pub eval_data_columns: Vec<String>,
    pub tokenize_train_data: bool,
    pub tokenize_eval_data: bool,
    pub tokenizer_type: TokenizerType,
    /// `tokenizer_path`, or the model's HF id when empty (MaxText's `HF_IDS`); `None` when neither exists.
    pub tokenizer_path: Option<String>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub use_truncation: bool,
    pub use_chat_template: bool,
    pub packing: bool,
    pub max_segments_per_seq: i64,
    pub enable_data_shuffling: bool,
    pub data_shuffle_seed: u64,
    pub num_epoch: usize,
    pub use_sft: bool,
    pub sft_train_on_completion_only: bool,
    pub per_device_batch_size: f64,
    /// `eval_per_device_batch_size`, or `per_device_batch_size` when 0.
    pub eval_per_device_batch_size: f64,
    pub expansion_factor_real_data: f64,
    pub reuse_example_batch: i64,
    pub max_target_length: usize,
    pub max_prefill_predict_length: usize,
}

/// Optimizer, learning-rate schedule, losses and the step count.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// `steps`, or `learning_rate_schedule_steps` when -1.
    pub steps: u64,
    pub learning_rate: f64,
    pub lr_schedule_type: LrSchedule,
    pub learning_rate_final_fraction: f64,
    pub warmup_steps_fraction: f64,
    pub wsd_decay_steps_fraction: f64,
    pub wsd_decay_style: WsdDecayStyle,
    /// `learning_rate_schedule_steps`, or `steps` when -1.
    pub learning_rate_schedule_steps: u64,
    pub opt_type: OptType,
    pub adam_b1: f64,
    pub adam_b2: f64,
    pub adam_eps: f64,
    pub adam_eps_root: f64,
    pub adam_weight_decay: f64,
    pub adamw_mask: Vec<String>,
    /// `mu_dtype`, or `weight_dtype` when empty.
    pub mu_dtype: DType,
    pub gradient_clipping_threshold: f64,
    pub gradient_accumulation_steps: usize,
    pub z_loss_multiplier: f64,
    pub load_balance_loss_weight: f64,
    pub init_weights_seed: u64,
    pub eval_interval: i64,
    pub eval_steps: i64,
    pub target_eval_loss: f64,
    pub abort_on_nan_loss: bool,
    pub abort_on_inf_loss: bool,
}

/// Checkpoint restore and save.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointConfig {
    pub load_parameters_path: Option<Location>,
    pub load_full_state_path: Option<Location>,
    pub enable_checkpointing: bool,
    pub async_checkpointing: bool,
    pub checkpoint_period: u64,
    pub save_checkpoint_on_start: bool,
    pub save_checkpoint_on_completion: bool,
    pub max_num_checkpoints_to_keep: Option<usize>,
    pub use_ocdbt: bool,
    pub use_zarr3: bool,
    pub target_data_file_size_bytes: u64,
    pub concurrent_gb: u64,
    /// `<base_output_directory>/<run_name>/checkpoints` (steps go in `<dir>/<step>/items`).
    pub checkpoint_dir: Location,
    /// `<base_output_directory>/<run_name>/metrics`.
    pub metrics_dir: Location,
    /// `<base_output_directory>/<run_name>/tensorboard`.
    pub tensorboard_dir: Location,
}

/// Decoding settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeConfig {
    pub prompt: String,
    /// Token ids to use instead of tokenizing `prompt` (empty = tokenize `prompt`).
    pub prompt_token_ids: Vec<i64>,
    pub sampling_strategy: SamplingStrategy,
    /// Nucleus threshold; `<= 0` = off.
    pub nucleus_p: f64,
    /// Top-k; 0 = off.
    pub top_k: usize,
    pub temperature: f64,
    pub decode_output_path: Option<Location>,
    pub autoregressive_decode_assert: Option<String>,
    pub return_log_prob: bool,
}

/// `convert` / `check-logits` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolConfig {
    pub hf_model_path: Option<Location>,
    pub golden_logits_path: Option<PathBuf>,
    pub max_kl_div: Option<f64>,
    pub atol: Option<f64>,
    pub rtol: f64,
    pub skip_first_token: bool,
}

/// MaxText's `HF_IDS` for the models this program knows: the default `tokenizer_path`.
pub fn hf_id(model_name: &str) -> Option<&'static str> {
    match model_name.replace("-Instruct", "").as_str() {
        "qwen3-next-80b-a3b" => Some("Qwen/Qwen3-Next-80B-A3B-Instruct"),
        _ => None,
    }
}

fn opt_path(raw: &RawConfig, key: &str) -> Result<Option<PathBuf>, ConfigError> {
    Ok(raw.opt_string(key)?.map(PathBuf::from))
}

/// A path key that may name a local path or `gs://bucket/prefix`; another URL scheme (`s3://`, `http://`)
/// is refused naming the key, instead of being taken as a local directory called `s3:`.
fn opt_location(raw: &RawConfig, key: &str) -> Result<Option<Location>, ConfigError> {
    raw.opt_string(key)?.map(|s| parse_location(raw, key, &s)).transpose()
}

fn parse_location(raw: &RawConfig, key: &str, value: &str) -> Result<Location, ConfigError> {
    Location::parse(value).map_err(|e| ConfigError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        expected: match e {
            crate::storage::StorageError::BadPath { reason, .. } => format!("a local path or gs://bucket/prefix ({reason})"),
            other => other.to_string(),
        },
        origin: raw.origin(key).cloned().unwrap_or(Origin::Default),
    })
}

/// Checks that a string path key (a glob, a tokenizer id) is a local path or `gs://`; see [`opt_location`].
fn check_scheme(raw: &RawConfig, key: &str) -> Result<Option<String>, ConfigError> {
    let v = raw.opt_string(key)?;
    if let Some(s) = &v {
        parse_location(raw, key, s)?;
    }
    Ok(v)
}

fn nonneg(raw: &RawConfig, key: &str) -> Result<u64, ConfigError> {
    Ok(raw.int_at_least(key, 0)? as u64)
}

/// A float dtype key (MaxText allows bfloat16, float32, float16).
pub(crate) fn float_dtype(raw: &RawConfig, key: &str) -> Result<DType, ConfigError> {
    let s = raw.string(key)?;
    match DType::from_name(&s) {
        Some(d @ (DType::F32 | DType::BF16 | DType::F16)) => Ok(d),
        _ => Err(ConfigError::BadValue {
            key: key.to_string(),
            value: s,
            expected: "one of `bfloat16`, `float32`, `float16`".into(),
            origin: raw.origin(key).cloned().unwrap_or(Origin::Default),
        }),
    }
}

fn expand_home(p: Location) -> Location {
    if let (Location::Local(l), Some(home)) = (&p, std::env::var_os("HOME")) {
        if let Ok(rest) = l.strip_prefix("~") {
            return Location::Local(PathBuf::from(home).join(rest));
        }
    }
    p
}

impl RunConfig {
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<RunConfig, ConfigError> {
        let model_name = raw.string("model_name")?;
        let run_name = match raw.string("run_name")? {
            s if !s.is_empty() => s,
            _ => std::env::var("JOBSET_NAME")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("{model_name}_{}", utc_minute_stamp())),
        };
        let base_output_directory = match opt_location(raw, "base_output_directory")? {
            Some(d) => d,
            None => {
                let dir = std::env::current_dir().unwrap_or_default().join("maxtext_output");
                tracing::info!("base_output_directory is not set; using {}", dir.display());
                Location::Local(dir)
            }
        };
        Ok(RunConfig {
            run_name,
            model_name,
            override_model_config: raw.bool("override_model_config")?,
            hardware: raw.enumeration("hardware")?,
            pjrt_plugin_path: opt_path(raw, "pjrt_plugin_path")?,
            cpu_device_count: raw.int_at_least("cpu_device_count", 1)? as usize,
            compile_topology: raw.opt_string("compile_topology")?,
            compile_topology_num_slices: raw.i64("compile_topology_num_slices")?,
            compile_xla_flags: raw.string("compile_xla_flags")?,
            jax_cache_dir: opt_location(raw, "jax_cache_dir")?.map(expand_home),
            log_config: raw.bool("log_config")?,
            log_period: raw.int_at_least("log_period", 1)? as u64,
            metrics_file: opt_location(raw, "metrics_file")?,
            enable_tensorboard: raw.bool("enable_tensorboard")?,
            base_output_directory,
            program: raw.enumeration("program")?,
            out_dir: opt_path(raw, "out_dir")?,
            compiled_trainstep_file: opt_path(raw, "compiled_trainstep_file")?,
            skip_jax_distributed_system: raw.bool("skip_jax_distributed_system")?,
            jax_distributed_initialization_timeout: raw.int_at_least("jax_distributed_initialization_timeout", 1)? as u64,
            num_processes: raw.int_at_least("num_processes", 0)? as usize,
            process_id: raw.int_at_least("process_id", -1)?,
            coordinator_address: raw.opt_string("coordinator_address")?,
        })
    }
}

impl ComputeConfig {
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<ComputeConfig, ConfigError> {
        Ok(ComputeConfig {
            dtype: float_dtype(raw, "dtype")?,
            weight_dtype: float_dtype(raw, "weight_dtype")?,
            grad_dtype: float_dtype(raw, "grad_dtype")?,
            activations_in_float32: raw.bool("activations_in_float32")?,
            matmul_precision: raw.enumeration("matmul_precision")?,
            float32_qk_product: raw.bool("float32_qk_product")?,
            float32_logits: raw.bool("float32_logits")?,
            float32_weight_sum: raw.bool("float32_weight_sum")?,
            float32_gate_logits: raw.bool("float32_gate_logits")?,
            cast_logits_to_fp32: raw.bool("cast_logits_to_fp32")?,
            logits_dot_in_fp32: raw.bool("logits_dot_in_fp32")?,
            scan_layers: raw.bool("scan_layers")?,
            param_scan_axis: raw.int_at_least("param_scan_axis", 0)? as usize,
            remat_policy: remat_policy(raw)?,
            remat_saved: remat_saved(raw)?,
            attention: raw.enumeration("attention")?,
            sa_block_q: raw.int_at_least("sa_block_q", 1)? as usize,
            sa_block_kv: raw.int_at_least("sa_block_kv", 1)? as usize,
            megablox: raw.bool("megablox")?,
            sparse_matmul: raw.bool("sparse_matmul")?,
            use_tokamax_gmm: raw.bool("use_tokamax_gmm")?,
            capacity_factor: capacity_factor(raw)?,
        })
    }
}

/// `remat_policy`; the offloading policies need host memory spaces, which the programs do not use.
fn remat_policy(raw: &RawConfig) -> Result<RematPolicy, ConfigError> {
    let policy: RematPolicy = raw.enumeration("remat_policy")?;
    if policy.offloads() {
        return Err(ConfigError::Invalid(format!(
            "remat_policy={policy} offloads saved activations to host memory (pinned_host), which is not built: \
             the traced programs use device memory only. Use a policy that saves on the device instead \
             (full, minimal, minimal_with_context, save_dot_with_context_except_mlp, save_dot_except_mlpwi, \
             save_dot_except_mlp, save_qkv_proj, save_out_proj, or custom with `device`/`remat` per tensor)"
        )));
    }
    Ok(policy)
}

/// The tags `remat_policy` keeps. The per-tensor keys ([`REMAT_TENSOR_KEYS`]) choose them under
/// `custom` and mean nothing under the other policies, so changing one from its default there is an error.
fn remat_saved(raw: &RawConfig) -> Result<Vec<String>, ConfigError> {
    let policy: RematPolicy = raw.enumeration("remat_policy")?;
    let mut on_device = Vec::new();
    for key in REMAT_TENSOR_KEYS {
        let location: RematLocation = raw.enumeration(key)?;
        let default = if key == "decoder_layer_input" { RematLocation::Device } else { RematLocation::Remat };
        if policy != RematPolicy::Custom {
            if location != default {
                return Err(ConfigError::Invalid(format!(
                    "{key}={location} takes effect only with remat_policy=custom (remat_policy is {policy}); \
                     set remat_policy=custom, or leave {key} at `{default}`"
                )));
            }
            continue;
        }
        match location {
            RematLocation::Offload => {
                return Err(ConfigError::Invalid(format!(
                    "{key}=offload (remat_policy=custom) moves `{key}` to host memory (pinned_host), which is not \
                     built; set it to `device` (keep it in device memory) or `remat` (recompute it)"
                )))
            }
            RematLocation::Device => on_device.push(key.to_string()),
            RematLocation::Remat => {}
        }
    }
    Ok(if policy == RematPolicy::Custom { on_device } else { policy.saved_names().iter().map(|n| n.to_string()).collect() })
}

/// `capacity_factor`, which drops tokens only on the mask path (`sparse_matmul=false`), as in MaxText.
fn capacity_factor(raw: &RawConfig) -> Result<f64, ConfigError> {
    let cf = raw.f64("capacity_factor")?;
    if cf > 0.0 && raw.bool("sparse_matmul")? {
        return Err(ConfigError::Invalid(format!(
            "capacity_factor={cf} with sparse_matmul=true: token dropping is the dispatch-mask path; \
             set sparse_matmul=false to drop tokens over capacity, or capacity_factor=-1 for dropless"
        )));
    }
    Ok(cf)
}

impl DataConfig {
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<DataConfig, ConfigError> {
        let per_device_batch_size = raw.f64("per_device_batch_size")?;
        if per_device_batch_size <= 0.0 {
            return Err(ConfigError::Invalid(format!(
                "per_device_batch_size={per_device_batch_size} must be > 0"
            )));
        }
        let eval = raw.f64("eval_per_device_batch_size")?;
        let model_name = raw.string("model_name")?;
        Ok(DataConfig {
            dataset_type: raw.enumeration("dataset_type")?,
            dataset_path: check_scheme(raw, "dataset_path")?,
            dataset_name: raw.string("dataset_name")?,
            eval_dataset_name: raw.string("eval_dataset_name")?,
            train_split: raw.string("train_split")?,
            eval_split: raw.string("eval_split")?,
            hf_path: raw.opt_string("hf_path")?,
            hf_name: raw.opt_string("hf_name")?,
            hf_data_dir: raw.opt_string("hf_data_dir")?,
            hf_train_files: check_scheme(raw, "hf_train_files")?,
            hf_eval_split: raw.opt_string("hf_eval_split")?,
            hf_eval_files: check_scheme(raw, "hf_eval_files")?,
            hf_access_token: raw.opt_string("hf_access_token")?,
            grain_train_files: raw.opt_string("grain_train_files")?,
            grain_eval_files: raw.opt_string("grain_eval_files")?,
            grain_file_type: raw.enumeration("grain_file_type")?,
            grain_worker_count: raw.i64("grain_worker_count")?,
            train_data_columns: raw.string_list("train_data_columns")?,
            eval_data_columns: raw.string_list("eval_data_columns")?,
            tokenize_train_data: raw.bool("tokenize_train_data")?,
            tokenize_eval_data: raw.bool("tokenize_eval_data")?,
            tokenizer_type: raw.enumeration("tokenizer_type")?,
            tokenizer_path: check_scheme(raw, "tokenizer_path")?.or_else(|| hf_id(&model_name).map(str::to_string)),
            add_bos: raw.bool("add_bos")?,
            add_eos: raw.bool("add_eos")?,
            use_truncation: raw.bool("use_truncation")?,
            use_chat_template: raw.bool("use_chat_template")?,
            packing: raw.bool("packing")?,
            max_segments_per_seq: raw.i64("max_segments_per_seq")?,
            enable_data_shuffling: raw.bool("enable_data_shuffling")?,
            data_shuffle_seed: nonneg(raw, "data_shuffle_seed")?,
            num_epoch: raw.int_at_least("num_epoch", 1)? as usize,
            use_sft: raw.bool("use_sft")?,
            sft_train_on_completion_only: raw.bool("sft_train_on_completion_only")?,
            per_device_batch_size,
            eval_per_device_batch_size: if eval == 0.0 { per_device_batch_size } else { eval },
            expansion_factor_real_data: raw.f64("expansion_factor_real_data")?,
            reuse_example_batch: raw.i64("reuse_example_batch")?,
            max_target_length: raw.int_at_least("max_target_length", 1)? as usize,
            max_prefill_predict_length: raw.int_at_least("max_prefill_predict_length", 1)? as usize,
        })
    }
}

impl TrainConfig {
    pub(crate) fn from_raw(raw: &RawConfig, weight_dtype: DType) -> Result<TrainConfig, ConfigError> {
        // MaxText (types.py): schedule_steps -1 -> steps, then steps -1 -> schedule_steps.
        let mut steps = raw.i64("steps")?;
        let mut schedule = raw.i64("learning_rate_schedule_steps")?;
        if schedule == -1 {
            schedule = steps;
        }
        if steps == -1 {
            steps = schedule;
        }
        if steps < 0 || schedule < 0 {
            return Err(ConfigError::Invalid(format!(
                "steps={steps} and learning_rate_schedule_steps={schedule} cannot both be -1; set steps"
            )));
        }
        let lr_schedule_type: LrSchedule = raw.enumeration("lr_schedule_type")?;
        let warmup_steps_fraction = raw.f64("warmup_steps_fraction")?;
        let wsd_decay_steps_fraction = raw.f64("wsd_decay_steps_fraction")?;
        if lr_schedule_type == LrSchedule::Wsd && warmup_steps_fraction + wsd_decay_steps_fraction > 1.0 {
            return Err(ConfigError::Invalid(format!(
                "warmup_steps_fraction ({warmup_steps_fraction}) + wsd_decay_steps_fraction \
                 ({wsd_decay_steps_fraction}) must not exceed 1.0 for lr_schedule_type=wsd"
            )));
        }
        let mu_dtype = match raw.opt_string("mu_dtype")? {
            None => weight_dtype,
            Some(_) => float_dtype(raw, "mu_dtype")?,
        };
        let bad = |key: &str, value: String, expected: &str| ConfigError::BadValue {
            key: key.into(),
            value,
            expected: expected.into(),
            origin: raw.origin(key).cloned().unwrap_or(Origin::Default),
        };
        let opt_type: OptType = raw.enumeration("opt_type")?;
        if opt_type == OptType::Muon {
            return Err(bad("opt_type", "muon".into(), "one of `adamw`, `adam_pax`, `sgd` (muon is not built)"));
        }
        // MaxText searches each entry as a regex in the parameter path.
        let adamw_mask = raw.string_list("adamw_mask")?;
        for m in &adamw_mask {
            if let Err(e) = regex::Regex::new(m) {
                return Err(bad("adamw_mask", m.clone(), &format!("regular expressions ({e})")));
            }
        }
        let eval_interval = raw.i64("eval_interval")?;
        let eval_steps = raw.i64("eval_steps")?;
        if eval_interval > 0 {
            check_eval_data(raw, eval_interval, eval_steps)?;
        }
        Ok(TrainConfig {
            steps: steps as u64,
            learning_rate: raw.f64("learning_rate")?,
            lr_schedule_type,
            learning_rate_final_fraction: raw.f64("learning_rate_final_fraction")?,
            warmup_steps_fraction,
            wsd_decay_steps_fraction,
            wsd_decay_style: raw.enumeration("wsd_decay_style")?,
            learning_rate_schedule_steps: schedule as u64,
            opt_type,
            adam_b1: raw.f64("adam_b1")?,
            adam_b2: raw.f64("adam_b2")?,
            adam_eps: raw.f64("adam_eps")?,
            adam_eps_root: raw.f64("adam_eps_root")?,
            adam_weight_decay: raw.f64("adam_weight_decay")?,
            adamw_mask,
            mu_dtype,
            gradient_clipping_threshold: raw.f64("gradient_clipping_threshold")?,
            gradient_accumulation_steps: raw.int_at_least("gradient_accumulation_steps", 1)? as usize,
            z_loss_multiplier: raw.f64("z_loss_multiplier")?,
            load_balance_loss_weight: raw.f64("load_balance_loss_weight")?,
            init_weights_seed: nonneg(raw, "init_weights_seed")?,
            eval_interval,
            eval_steps,
            target_eval_loss: raw.f64("target_eval_loss")?,
            abort_on_nan_loss: raw.bool("abort_on_nan_loss")?,
            abort_on_inf_loss: raw.bool("abort_on_inf_loss")?,
        })
    }
}

/// With `eval_interval > 0` there must be eval data MaxText's way: `dataset_type=hf` reads local
/// `hf_eval_files` (as split `train`, MaxText's rule); a hub split (`hf_eval_split` alone) cannot be
/// downloaded here. Synthetic eval data never ends, so it needs `eval_steps > 0`.
fn check_eval_data(raw: &RawConfig, eval_interval: i64, eval_steps: i64) -> Result<(), ConfigError> {
    let dataset: DatasetType = raw.enumeration("dataset_type")?;
    match dataset {
        DatasetType::Hf if raw.opt_string("hf_eval_files")?.is_none() => Err(ConfigError::Invalid(match raw.opt_string("hf_eval_split")? {
            Some(split) => format!(
                "eval_interval={eval_interval} with hf_eval_split={split} and no hf_eval_files: reading a split of a hub \
                 dataset is not supported; set hf_eval_files=GLOB to local files (read as split `train`, as MaxText does)"
            ),
            None => format!("eval_interval={eval_interval} needs eval data: set hf_eval_files=GLOB, or eval_interval=-1"),
        })),
        DatasetType::Synthetic if eval_steps <= 0 => Err(ConfigError::Invalid(format!(
            "eval_interval={eval_interval} with dataset_type=synthetic and eval_steps={eval_steps}: synthetic eval data never \
             ends; set eval_steps to the number of eval batches"
        ))),
        _ => Ok(()),
    }
}

impl CheckpointConfig {
    pub(crate) fn from_raw(raw: &RawConfig, run: &RunConfig) -> Result<CheckpointConfig, ConfigError> {
        let load_parameters_path = opt_location(raw, "load_parameters_path")?;
        let load_full_state_path = opt_location(raw, "load_full_state_path")?;
        if let (Some(p), Some(f)) = (&load_parameters_path, &load_full_state_path) {
            return Err(ConfigError::Invalid(format!(
                "load_parameters_path ({p}) and load_full_state_path ({f}) are mutually exclusive; set one"
            )));
        }
        let run_dir = run.base_output_directory.join(&run.run_name);
        Ok(CheckpointConfig {
            load_parameters_path,
            load_full_state_path,
            enable_checkpointing: raw.bool("enable_checkpointing")?,
            async_checkpointing: raw.bool("async_checkpointing")?,
            checkpoint_period: raw.int_at_least("checkpoint_period", 1)? as u64,
            save_checkpoint_on_start: raw.bool("save_checkpoint_on_start")?,
            save_checkpoint_on_completion: raw.bool("save_checkpoint_on_completion")?,
            max_num_checkpoints_to_keep: match raw.opt_i64("max_num_checkpoints_to_keep")? {
                Some(v) if v < 1 => {
                    return Err(ConfigError::BadValue {
                        key: "max_num_checkpoints_to_keep".into(),
                        value: v.to_string(),
                        expected: "a number of checkpoints >= 1, or null to keep them all".into(),
                        origin: raw.origin("max_num_checkpoints_to_keep").cloned().unwrap_or(Origin::Default),
                    })
                }
                v => v.map(|v| v as usize),
            },
            use_ocdbt: raw.bool("checkpoint_storage_use_ocdbt")?,
            use_zarr3: raw.bool("checkpoint_storage_use_zarr3")?,
            target_data_file_size_bytes: nonneg(raw, "checkpoint_storage_target_data_file_size_bytes")?,
            concurrent_gb: nonneg(raw, "checkpoint_storage_concurrent_gb")?,
            checkpoint_dir: run_dir.join("checkpoints"),
            metrics_dir: run_dir.join("metrics"),
            tensorboard_dir: run_dir.join("tensorboard"),
        })
    }
}

impl DecodeConfig {
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<DecodeConfig, ConfigError> {
        Ok(DecodeConfig {
            prompt: raw.string("prompt")?,
            prompt_token_ids: raw.i64_list("prompt_token_ids")?,
            sampling_strategy: raw.enumeration("decode_sampling_strategy")?,
            nucleus_p: raw.f64("decode_sampling_nucleus_p")?,
            top_k: raw.int_at_least("decode_sampling_top_k", 0)? as usize,
            temperature: raw.f64("decode_sampling_temperature")?,
            decode_output_path: opt_location(raw, "decode_output_path")?,
            autoregressive_decode_assert: raw.opt_string("autoregressive_decode_assert")?,
            return_log_prob: raw.bool("return_log_prob")?,
        })
    }
}

impl ToolConfig {
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<ToolConfig, ConfigError> {
        Ok(ToolConfig {
            hf_model_path: opt_location(raw, "hf_model_path")?,
            golden_logits_path: opt_path(raw, "golden_logits_path")?,
            max_kl_div: raw.opt_f64("max_kl_div")?,
            atol: raw.opt_f64("atol")?,
            rtol: raw.f64("rtol")?,
            skip_first_token: raw.bool("skip_first_token")?,
        })
    }
}

/// `YYYY-mm-dd-HH-MM` in UTC (MaxText's default run-name suffix, which uses local time).
fn utc_minute_stamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}-{:02}-{:02}", rem / 3600, (rem % 3600) / 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamp_shape() {
        let s = super::utc_minute_stamp();
        assert_eq!(s.len(), 16, "{s}");
        assert!(s.starts_with("20"), "{s}");
    }
}
