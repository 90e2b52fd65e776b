//! The key table: for every key of `configs/base.yml`, whether this program does what MaxText does with
//! it, and for which values. A value that is not built is refused when the config loads, with the key, the
//! value and what is supported — never accepted and ignored (issue 14's rule).
//!
//! Checked against each key's *merged* value when that value differs from base.yml's default. Where
//! base.yml's own default is not built (`decoder_block: llama2`, `tokenizer_type: sentencepiece`), the
//! part that would use it refuses it when it runs (the model, the tokenizer loader), so commands that never touch that part still run with the defaults.
//! `tests/config_keys.rs` walks base.yml against this table and the README's copy of it.

use serde_yaml_ng::Value;

use super::error::{closest, ConfigError};
use super::raw::{value_to_inline, values_equal, RawConfig};

/// What this program builds of a key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Support {
    /// Every value does what it does in MaxText.
    Honoured,
    /// These values (YAML text, compared as MaxText compares values) are built; any other is refused.
    Only(&'static [&'static str]),
    /// Only base.yml's default is built; any other value is refused.
    DefaultOnly,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct KeyRule {
    pub key: &'static str,
    pub support: Support,
    /// What the key does here, or why other values are refused.
    pub note: &'static str,
}

use Support::{DefaultOnly, Honoured, Only};

const fn rule(key: &'static str, support: Support, note: &'static str) -> KeyRule {
    KeyRule { key, support, note }
}

/// Every key of `configs/base.yml`, in its order.
pub const KEY_TABLE: &[KeyRule] = &[
    // Run, hardware, output.
    rule("run_name", Honoured, "run directory name; `<model>_<date>` or `$JOBSET_NAME` when empty"),
    rule("model_name", Honoured, "selects `configs/models/<model_name>.yml`"),
    rule("override_model_config", Honoured, "lets the command line override model-yml keys"),
    rule("override_logical_axis_rules", Honoured, "replaces instead of merging `logical_axis_rules`"),
    rule("hardware", Honoured, "cpu / gpu / tpu PJRT plugin"),
    rule("pjrt_plugin_path", Honoured, "the plugin .so (else found by `hardware`)"),
    rule("cpu_device_count", Honoured, "devices of the XLA CPU plugin"),
    rule("compile_topology", Honoured, "device count and peak FLOP/s of a named TPU slice for export-hlo / compile"),
    rule("compile_topology_num_slices", Honoured, "slices of `compile_topology`"),
    rule("num_slices", Only(&["-1", "1"]), "one slice: multi-slice (DCN) runs are not built"),
    rule("compile_xla_flags", Honoured, "`--xla_*` flags passed to the compiler as debug options"),
    rule("jax_cache_dir", Honoured, "persistent compile cache of serialized executables; local or gs://"),
    rule("skip_jax_distributed_system", Honoured, "one process, no coordinator"),
    rule("jax_distributed_initialization_timeout", Honoured, "seconds to wait for the coordinator and every process to join"),
    rule("num_processes", Honoured, "processes of a multi-host run (else `$NNODES`, else 1)"),
    rule("process_id", Honoured, "this process's index (else `$NODE_RANK`)"),
    rule("coordinator_address", Honoured, "process 0's coordinator, host:port (else `$JAX_COORDINATOR_ADDRESS` or `$JAX_COORDINATOR_IP:$JAX_COORDINATOR_PORT`)"),
    rule("log_config", Honoured, "prints every key (`Config param key: value`) at start"),
    rule("log_period", Honoured, "console line every N steps"),
    rule("metrics_file", Honoured, "JSON lines of the step metrics; local or gs:// (re-uploaded whole on flush)"),
    rule("enable_tensorboard", Honoured, "TensorBoard event file in `<run>/tensorboard`"),
    rule("gcs_metrics", DefaultOnly, "metrics upload to GCS is not built"),
    rule("base_output_directory", Honoured, "root of `<run_name>/checkpoints|metrics|tensorboard`; a local path or gs://bucket/prefix"),
    rule("steps", Honoured, "train steps"),
    rule("program", Honoured, "export-hlo's and compile's program: train, forward, prefill, decode"),
    rule("out_dir", Honoured, "export-hlo's and compile's output directory"),
    rule("compiled_trainstep_file", Honoured, "compile: the serialized executable is written here"),
    // Model architecture (Qwen3-Next).
    rule("decoder_block", Only(&["qwen3_next"]), "the Qwen3-Next hybrid decoder is the one built"),
    rule("global_parameter_scale", Honoured, "MaxText's power-of-two scaling of the base dims"),
    rule("base_emb_dim", Honoured, ""),
    rule("base_num_query_heads", Honoured, ""),
    rule("base_num_kv_heads", Honoured, ""),
    rule("base_mlp_dim", Honoured, ""),
    rule("base_num_decoder_layers", Honoured, ""),
    rule("head_dim", Honoured, ""),
    rule("mlp_activations", Only(&["[silu, linear]"]), "Qwen3-Next's SwiGLU experts"),
    rule("normalization_layer_epsilon", Honoured, ""),
    rule("vocab_size", Honoured, ""),
    rule("logits_via_embedding", DefaultOnly, "tied embeddings are not built (Qwen3-Next unties them)"),
    rule("normalize_embedding_logits", Honoured, "acts only with logits_via_embedding=true (as in MaxText)"),
    rule("use_qk_norm", DefaultOnly, "qwen3_next's attention has its own q/k norms; the generic flag is not built"),
    rule("attention_bias", DefaultOnly, "Qwen3-Next's projections have no bias"),
    rule("num_experts", Honoured, ""),
    rule("num_experts_per_tok", Honoured, ""),
    rule("base_moe_mlp_dim", Honoured, ""),
    rule("shared_experts", Only(&["1"]), "Qwen3-Next has one gated shared expert"),
    rule("shared_expert_mlp_dim", Honoured, ""),
    rule("norm_topk_prob", Honoured, ""),
    rule("routed_score_func", Only(&["", "softmax"]), "softmax routing (sigmoid scoring is not built)"),
    rule("routed_bias", DefaultOnly, "router bias is not built"),
    rule("routed_scaling_factor", DefaultOnly, "routed-weight scaling is not built"),
    rule("inhomogeneous_layer_cycle_interval", Honoured, "full attention every N-th layer"),
    rule("gdn_conv_kernel_dim", Honoured, ""),
    rule("gdn_key_head_dim", Honoured, ""),
    rule("gdn_value_head_dim", Honoured, ""),
    rule("gdn_num_key_heads", Honoured, ""),
    rule("gdn_num_value_heads", Honoured, ""),
    rule("gdn_chunk_size", Honoured, ""),
    rule("use_qk_norm_in_gdn", Honoured, ""),
    rule("partial_rotary_factor", Honoured, ""),
    rule("rope_type", Only(&["default"]), "plain RoPE (llama3.1 / yarn scaling is not built)"),
    rule("rope_min_timescale", Honoured, "RoPE timescales min·(max/min)^(2i/d), as MaxText (HF checkpoints use 1)"),
    rule("rope_max_timescale", Honoured, "RoPE theta"),
    rule("mtp_num_layers", DefaultOnly, "multi-token prediction is not built"),
    rule("enable_dropout", Honoured, "acts only with dropout_rate > 0"),
    rule("dropout_rate", DefaultOnly, "dropout is not built (Qwen3-Next trains without it)"),
    // Numerics and kernels.
    rule("dtype", Honoured, "activation dtype"),
    rule("weight_dtype", Honoured, "parameter dtype"),
    rule("grad_dtype", Only(&["float32"]), "gradients are float32"),
    rule("activations_in_float32", Honoured, ""),
    rule("matmul_precision", Honoured, "precision of every dot"),
    rule("float32_qk_product", Honoured, "q·k in f32 (dot-product and flash)"),
    rule("float32_logits", Honoured, "attention scores and softmax in f32 (flash keeps f32 always)"),
    rule("float32_weight_sum", Only(&["true"]), "expert outputs are weighted in `dtype` (exact at float32; at bfloat16 the rounding differs from MaxText's f32 sum)"),
    rule("float32_gate_logits", Honoured, "router product in f32"),
    rule("cast_logits_to_fp32", Only(&["true"]), "logits are returned in float32"),
    rule("logits_dot_in_fp32", Honoured, "output projection in f32"),
    rule("scan_layers", Honoured, "layers in a counted loop with stacked parameters"),
    rule("param_scan_axis", Only(&["1"]), "stacked parameters carry the layer on axis 1"),
    rule(
        "remat_policy",
        Only(&["full", "minimal", "minimal_with_context", "save_dot_with_context_except_mlp", "save_dot_except_mlpwi", "save_dot_except_mlp", "save_qkv_proj", "save_out_proj", "custom"]),
        "what the backward pass keeps per layer; the offloading policies need host memory spaces, which are not built",
    ),
    rule("decoder_layer_input", Only(&["remat", "device"]), "the region input: always kept"),
    rule("indexer_cutoff_threshold", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("context", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("mlpwi", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("moe_mlpwi_0", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("moe_mlpwi_1", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("moe_mlpwo", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("mlpwi_0", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("mlpwi_1", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("mlpwo", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("query_proj", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("key_proj", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("value_proj", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("kv_proj", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("query_wa_proj", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("kv_wa_proj", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("mla_kv", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("mla_q", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("qkv_proj", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("attention_out", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("out_proj", Only(&["remat", "device"]), "with remat_policy=custom: `device` keeps it, `remat` recomputes it (offload to host memory is not built)"),
    rule("attention", Only(&["autoselected", "dot_product", "flash"]), "dot-product or blockwise flash attention; the cuDNN and paged kernels are not built"),
    rule("sa_block_q", Honoured, "attention=flash: query block"),
    rule("sa_block_kv", Honoured, "attention=flash: key/value block"),
    rule("megablox", Honoured, "with sparse_matmul: false = XLA's ragged dot per token shard (native on TPU, dense formulation elsewhere); true = blocks off TPU, ragged dot on TPU (no Pallas kernel)"),
    rule("sparse_matmul", Honoured, "dropless sorted grouped matmul (true) or dense / dropping (false)"),
    rule("use_tokamax_gmm", Honoured, "with sparse_matmul: as megablox=true (blocks off TPU, ragged dot on TPU)"),
    rule("capacity_factor", Honoured, "> 0 with sparse_matmul=false: token dropping"),
    // Sharding.
    rule("mesh_axes", Honoured, ""),
    rule("logical_axis_rules", Honoured, ""),
    rule("data_sharding", Honoured, "mesh axes the batch is split over"),
    rule("input_data_sharding_logical_axes", Honoured, ""),
    rule("shard_mode", Only(&["auto"]), "sharding by constraints (explicit-sharding mode is not built)"),
    rule("dcn_diloco_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_data_parallelism", Only(&["-1", "1"]), "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_fsdp_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_fsdp_transpose_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_sequence_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_context_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_context_usp_ulysses_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_context_autoregressive_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_tensor_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_tensor_sequence_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_pipeline_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_expert_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("dcn_autoregressive_parallelism", DefaultOnly, "multi-slice (DCN) is not built: one slice only"),
    rule("ici_diloco_parallelism", DefaultOnly, "DiLoCo is not built"),
    rule("ici_data_parallelism", Honoured, ""),
    rule("ici_fsdp_parallelism", Honoured, ""),
    rule("ici_fsdp_transpose_parallelism", DefaultOnly, "fsdp_transpose is not built"),
    rule("ici_sequence_parallelism", DefaultOnly, "sequence parallelism is not built"),
    rule("ici_context_parallelism", DefaultOnly, "context parallelism is not built"),
    rule("ici_context_usp_ulysses_parallelism", DefaultOnly, "context parallelism is not built"),
    rule("ici_context_autoregressive_parallelism", DefaultOnly, "context parallelism is not built"),
    rule("ici_tensor_parallelism", Honoured, ""),
    rule("ici_tensor_sequence_parallelism", DefaultOnly, "tensor-sequence parallelism is not built"),
    rule("ici_autoregressive_parallelism", DefaultOnly, "autoregressive parallelism is not built"),
    rule("ici_pipeline_parallelism", DefaultOnly, "pipeline parallelism is not built"),
    rule("ici_expert_parallelism", Honoured, ""),
    // Data.
    rule("dataset_type", Only(&["synthetic", "hf", "tfds", "grain"]), "synthetic: MaxText's batch id for id (jax.random with unsafe_rbg keys, or threefry2x32 with JAX_DEFAULT_PRNG_IMPL=threefry2x32); local or gs:// JSON / JSONL / parquet / text files (hf), TFDS directories (tfds), ArrayRecord / TFRecord / parquet files (grain)"),
    rule("dataset_path", Honoured, "the TFDS data directory (local or gs://) holding <name>/<config>/<version>/ as tfds writes it; no downloads"),
    rule("dataset_name", Honoured, "name/config:version; without a version the highest one in the directory"),
    rule("eval_dataset_name", Honoured, "as dataset_name, for eval"),
    rule("train_split", Honoured, "a split of dataset_info.json; its shards are split over the hosts as MaxText splits them"),
    rule("eval_split", Honoured, ""),
    rule("hf_path", Honoured, "the file format (json / parquet / text / arrow) of hf_train_files"),
    rule("hf_name", DefaultOnly, "hub dataset configs are not built (local files only)"),
    rule("hf_data_dir", DefaultOnly, "hub datasets are not built (local files only)"),
    rule("hf_train_files", Honoured, "files or globs, local or gs:// (parquet read in ranges, JSONL streamed)"),
    rule("hf_eval_split", Honoured, "ignored when hf_eval_files is set (as in MaxText); a hub split alone is refused (no downloads)"),
    rule("hf_eval_files", Honoured, "eval files or globs, local or gs:// (split `train`, MaxText's rule)"),
    rule("hf_access_token", DefaultOnly, "hub downloads are not built (local files only)"),
    rule("grain_train_files", Honoured, "a glob, local or gs://; weighted mixtures (a*,0.3;b*,0.7) are refused; empty with grain_file_type=tfrecord reads dataset_path's TFDS shards (MaxText's rule)"),
    rule("grain_eval_files", Honoured, ""),
    rule("grain_file_type", Only(&["arrayrecord", "tfrecord", "parquet"]), "records of serialized tf.train.Example (arrayrecord, tfrecord) or parquet rows"),
    rule("grain_worker_count", Honoured, "threads that read and decode whole files when the data opens (0: one, -1: one per core)"),
    rule("train_data_columns", Honoured, "one text or token-id column"),
    rule("eval_data_columns", Honoured, ""),
    rule("tokenize_train_data", Honoured, ""),
    rule("tokenize_eval_data", Honoured, ""),
    rule("tokenizer_type", Only(&["huggingface"]), "tokenizer.json through the tokenizers crate"),
    rule("tokenizer_path", Honoured, "a tokenizer.json file or a directory holding one; local or gs:// (copied to a temporary directory)"),
    rule("add_bos", Honoured, ""),
    rule("add_eos", Honoured, ""),
    rule("use_truncation", Honoured, ""),
    rule("use_chat_template", DefaultOnly, "chat templates in training data are not built (serve applies them)"),
    rule("packing", Honoured, ""),
    rule("max_segments_per_seq", Honoured, ""),
    rule("enable_data_shuffling", Honoured, ""),
    rule("data_shuffle_seed", Honoured, ""),
    rule("num_epoch", Honoured, ""),
    rule("use_sft", DefaultOnly, "supervised fine-tuning data is not built"),
    rule("sft_train_on_completion_only", DefaultOnly, "supervised fine-tuning data is not built"),
    rule("per_device_batch_size", Honoured, ""),
    rule("eval_per_device_batch_size", Honoured, "0 = per_device_batch_size"),
    rule("expansion_factor_real_data", DefaultOnly, "partial host loading is not built"),
    rule("reuse_example_batch", DefaultOnly, "reusing one batch is not built"),
    rule("max_target_length", Honoured, ""),
    rule("max_prefill_predict_length", Honoured, ""),
    // Training.
    rule("learning_rate", Honoured, ""),
    rule("lr_schedule_type", Honoured, "cosine or warmup-stable-decay, as MaxText joins the pieces"),
    rule("learning_rate_final_fraction", Honoured, ""),
    rule("warmup_steps_fraction", Honoured, ""),
    rule("wsd_decay_steps_fraction", Honoured, "read only with lr_schedule_type=wsd"),
    rule("wsd_decay_style", Honoured, "read only with lr_schedule_type=wsd"),
    rule("learning_rate_schedule_steps", Honoured, ""),
    rule("opt_type", Only(&["adamw", "adam_pax", "sgd"]), "muon is not built"),
    rule("adam_b1", Honoured, ""),
    rule("adam_b2", Honoured, ""),
    rule("adam_eps", Honoured, ""),
    rule("adam_eps_root", Honoured, ""),
    rule("adam_weight_decay", Honoured, ""),
    rule("adamw_mask", Honoured, "regexes of parameter paths left out of weight decay"),
    rule("mu_dtype", Honoured, "adamw's first moment dtype"),
    rule("gradient_clipping_threshold", Honoured, ""),
    rule("gradient_accumulation_steps", Honoured, ""),
    rule("z_loss_multiplier", Honoured, ""),
    rule("load_balance_loss_weight", Honoured, ""),
    rule("init_weights_seed", Honoured, ""),
    rule("eval_interval", Honoured, "forward-only eval every N steps (eval/* metrics)"),
    rule("eval_steps", Honoured, "eval batches per evaluation (<= 0: the whole eval data)"),
    rule("target_eval_loss", Honoured, "stops the run once the eval loss is below it"),
    rule("abort_on_nan_loss", Honoured, "stops before saving a NaN state"),
    rule("abort_on_inf_loss", Honoured, "stops before saving an infinite state"),
    // Checkpoints.
    rule("load_parameters_path", Honoured, "Orbax params-only or full-state checkpoint (local path or gs://)"),
    rule("load_full_state_path", Honoured, "Orbax full-state checkpoint (local path or gs://)"),
    rule("enable_checkpointing", Honoured, ""),
    rule("async_checkpointing", Honoured, "saves on a background thread"),
    rule("checkpoint_period", Honoured, ""),
    rule("save_checkpoint_on_start", Honoured, "checkpoint at step 0"),
    rule("save_checkpoint_on_completion", Honoured, ""),
    rule("max_num_checkpoints_to_keep", Honoured, "older steps removed once a newer one commits"),
    rule("checkpoint_storage_use_ocdbt", Only(&["true"]), "checkpoints are written as OCDBT (both layouts are read)"),
    rule("checkpoint_storage_use_zarr3", Honoured, "zarr3 or zarr v2 chunks"),
    rule("checkpoint_storage_target_data_file_size_bytes", Honoured, "OCDBT data file size"),
    rule("checkpoint_storage_concurrent_gb", Honoured, "in-flight bytes of a save or restore"),
    rule("force_unroll", DefaultOnly, "unrolled checkpoint layers are not built"),
    // Decoding.
    rule("prompt", Honoured, ""),
    rule("prompt_token_ids", Honoured, "token ids instead of `prompt`"),
    rule("decode_sampling_strategy", Honoured, "greedy / weighted / nucleus / topk / composite"),
    rule("decode_sampling_nucleus_p", Honoured, ""),
    rule("decode_sampling_top_k", Honoured, ""),
    rule("decode_sampling_temperature", Honoured, ""),
    rule("decode_output_path", Honoured, "JSON of the generated tokens and text; local or gs://"),
    rule("autoregressive_decode_assert", Honoured, "decode fails unless the output starts with this text"),
    rule("return_log_prob", Honoured, "each generated token's log-probability in the output and decode_output_path"),
    // Conversion and checks.
    rule("hf_model_path", Honoured, "HF checkpoint directory for convert / check-logits; local or gs:// (copied to a temporary directory)"),
    rule("golden_logits_path", Honoured, "MaxText golden-logits JSONL"),
    rule("max_kl_div", Honoured, ""),
    rule("atol", Honoured, "check-logits: every logit within atol + rtol·|golden|"),
    rule("rtol", Honoured, "check-logits, with atol"),
    rule("skip_first_token", Honoured, "check-logits leaves position 0 out"),
];

/// The rule of `key`, if the table has one.
pub fn rule_for(key: &str) -> Option<&'static KeyRule> {
    KEY_TABLE.iter().find(|r| r.key == key)
}

/// Refuses every key whose merged value differs from `defaults` and is not built (see the module doc).
pub fn check_supported(raw: &RawConfig, defaults: &RawConfig) -> Result<(), ConfigError> {
    for (key, value, origin) in raw.iter() {
        let Some(default) = defaults.value(key) else { continue };
        if values_equal(value, default) {
            continue;
        }
        let Some(rule) = rule_for(key) else {
            panic!("config key `{key}` is in configs/base.yml but not in the key table (src/config/keys.rs)")
        };
        let supported = match rule.support {
            Honoured => continue,
            Only(values) if values.iter().any(|v| matches_text(value, v)) => continue,
            Only(values) => {
                let mut listed = values.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ");
                if let Some(c) = closest(&value_to_inline(value), values.iter().copied()) {
                    listed.push_str(&format!(" (did you mean `{c}`?)"));
                }
                listed
            }
            DefaultOnly => format!("only the default `{}`", value_to_inline(default)),
        };
        return Err(ConfigError::NotBuilt {
            key: rule.key,
            value: value_to_inline(value),
            supported,
            note: rule.note,
            origin: origin.clone(),
        });
    }
    Ok(())
}

/// Whether `value` equals the YAML text `text` (strings case-insensitively, as the config enums parse).
fn matches_text(value: &Value, text: &str) -> bool {
    let want: Value = serde_yaml_ng::from_str(text).unwrap_or(Value::String(text.to_string()));
    if values_equal(value, &want) {
        return true;
    }
    let as_text = |v: &Value| match v {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.trim().to_ascii_lowercase()),
        _ => None,
    };
    matches!((as_text(value), as_text(&want)), (Some(a), Some(b)) if a == b)
}

/// The README's table of keys (between the `<!-- keys -->` markers), made from [`KEY_TABLE`].
pub fn markdown_table() -> String {
    let mut out = String::from("| key | built | notes |\n|---|---|---|\n");
    for r in KEY_TABLE {
        let built = match r.support {
            Honoured => "yes".to_string(),
            Only(values) => values.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", "),
            DefaultOnly => "default only".to_string(),
        };
        out.push_str(&format!("| `{}` | {} | {} |\n", r.key, built, r.note));
    }
    out
}
