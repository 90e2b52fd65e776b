//! HF Qwen3-Next `config.json` -> MaxText `key=value` overrides (reference §1.2).
//!
//! Both forms are read: transformers 4 (top-level `full_attention_interval`, `rope_theta`,
//! `partial_rotary_factor`) and transformers 5 (`layer_types`, nested `rope_parameters`). Keys that HF
//! always writes are required; the rest fall back to `Qwen3NextConfig`'s defaults.

use std::path::Path;

use serde_json::{Map, Value};

use super::{HfError, Result};
use crate::config::ModelConfig;
use crate::ir::DType;

/// Reads `<dir>/config.json` and maps it with [`config_overrides`].
pub fn read_config_overrides(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Err(HfError::DirNotFound { dir: dir.to_path_buf() });
    }
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| HfError::Io { path: path.clone(), source })?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| HfError::BadConfig { path: path.clone(), reason: format!("not valid JSON: {e}") })?;
    config_overrides(&json).map_err(|e| match e {
        HfError::BadConfig { reason, .. } => HfError::BadConfig { path, reason },
        other => other,
    })
}

/// MaxText config overrides (`key=value`, MaxText's key names) for an HF Qwen3-Next `config.json`:
/// sizes, MoE, Gated DeltaNet, RoPE, norm epsilon, `enable_dropout=false` and `decoder_block=qwen3_next`.
/// `base_mlp_dim` is set to the expert size as in MaxText's own Qwen3-Next yml (every layer is MoE;
/// HF's `intermediate_size` is unused).
pub fn config_overrides(json: &Value) -> Result<Vec<String>> {
    let c = Cfg(json.as_object().ok_or_else(|| bad("the top level is not a JSON object".into()))?);
    let model_type = c.0.get("model_type").and_then(Value::as_str).unwrap_or("");
    if model_type != "qwen3_next" {
        return Err(HfError::NotQwen3Next { model_type: model_type.to_string() });
    }
    let layers = c.uint("num_hidden_layers")?;
    let interval = layer_interval(&c, layers)?;

    let sparse_step = c.opt_uint("decoder_sparse_step")?.unwrap_or(1);
    let dense_layers = c.0.get("mlp_only_layers").and_then(Value::as_array).map_or(0, Vec::len);
    if sparse_step != 1 || dense_layers != 0 {
        return Err(bad(format!(
            "decoder_sparse_step={sparse_step} and mlp_only_layers with {dense_layers} entries: dense-MLP layers are \
             not supported (every Qwen3-Next layer is a sparse MoE: decoder_sparse_step 1, mlp_only_layers [])"
        )));
    }
    if c.opt_bool("attention_bias")?.unwrap_or(false) {
        return Err(bad("attention_bias=true is not supported (Qwen3-Next has no attention biases)".into()));
    }
    if let Some(act) = c.0.get("hidden_act").and_then(Value::as_str) {
        if act != "silu" {
            return Err(bad(format!("hidden_act={act:?} is not supported (Qwen3-Next uses \"silu\")")));
        }
    }
    let shared = c.uint("shared_expert_intermediate_size")?;
    if shared == 0 {
        return Err(bad("shared_expert_intermediate_size=0: Qwen3-Next always has a shared expert".into()));
    }
    let (theta, partial) = rope(&c)?;
    let moe = c.uint("moe_intermediate_size")?;

    // An HF checkpoint's tokenizer is a HuggingFace tokenizer.json.
    let mut o = vec!["decoder_block=qwen3_next".to_string(), "tokenizer_type=huggingface".to_string()];
    let mut set = |k: &str, v: String| o.push(format!("{k}={v}"));
    set("base_emb_dim", c.uint("hidden_size")?.to_string());
    set("base_num_decoder_layers", layers.to_string());
    set("base_num_query_heads", c.uint("num_attention_heads")?.to_string());
    set("base_num_kv_heads", c.uint("num_key_value_heads")?.to_string());
    set("head_dim", c.uint("head_dim")?.to_string());
    set("base_mlp_dim", moe.to_string());
    set("base_moe_mlp_dim", moe.to_string());
    set("num_experts", c.uint("num_experts")?.to_string());
    set("num_experts_per_tok", c.uint("num_experts_per_tok")?.to_string());
    set("shared_experts", "1".into());
    set("shared_expert_mlp_dim", shared.to_string());
    set("norm_topk_prob", c.opt_bool("norm_topk_prob")?.unwrap_or(true).to_string());
    set("vocab_size", c.uint("vocab_size")?.to_string());
    set("normalization_layer_epsilon", number(c.float("rms_norm_eps")?));
    set("logits_via_embedding", c.opt_bool("tie_word_embeddings")?.unwrap_or(false).to_string());
    set("inhomogeneous_layer_cycle_interval", interval.to_string());
    set("gdn_conv_kernel_dim", c.uint("linear_conv_kernel_dim")?.to_string());
    set("gdn_key_head_dim", c.uint("linear_key_head_dim")?.to_string());
    set("gdn_value_head_dim", c.uint("linear_value_head_dim")?.to_string());
    set("gdn_num_key_heads", c.uint("linear_num_key_heads")?.to_string());
    set("gdn_num_value_heads", c.uint("linear_num_value_heads")?.to_string());
    set("rope_max_timescale", number(theta));
    set("partial_rotary_factor", number(partial));
    // MaxText's Qwen3-Next yml: dropout off (HF attention_dropout 0.0).
    set("enable_dropout", "false".into());
    Ok(o)
}

/// The HF `config.json` of a MaxText Qwen3-Next config (the inverse of [`config_overrides`]): both the
/// transformers-5 keys (`layer_types`, `rope_parameters`) and the transformers-4 ones
/// (`full_attention_interval`, `rope_theta`, `partial_rotary_factor`), so either version loads it.
/// `dtype` is the element type of the weights written next to it.
pub fn config_json(m: &ModelConfig, dtype: DType) -> Value {
    let interval = m.inhomogeneous_layer_cycle_interval.max(1);
    let layer_types: Vec<&str> = (0..m.num_decoder_layers)
        .map(|l| if (l + 1) % interval == 0 { "full_attention" } else { "linear_attention" })
        .collect();
    let torch_dtype = match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "float32",
    };
    serde_json::json!({
        "architectures": ["Qwen3NextForCausalLM"],
        "model_type": "qwen3_next",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "decoder_sparse_step": 1,
        "dtype": torch_dtype,
        "torch_dtype": torch_dtype,
        "head_dim": m.head_dim,
        "hidden_act": "silu",
        "hidden_size": m.emb_dim,
        "intermediate_size": m.mlp_dim,
        "layer_types": layer_types,
        "full_attention_interval": interval,
        "linear_conv_kernel_dim": m.gdn.conv_kernel_dim,
        "linear_key_head_dim": m.gdn.key_head_dim,
        "linear_num_key_heads": m.gdn.num_key_heads,
        "linear_num_value_heads": m.gdn.num_value_heads,
        "linear_value_head_dim": m.gdn.value_head_dim,
        "mlp_only_layers": [],
        "moe_intermediate_size": m.moe_mlp_dim,
        "norm_topk_prob": m.norm_topk_prob,
        "num_attention_heads": m.num_query_heads,
        "num_experts": m.num_experts,
        "num_experts_per_tok": m.num_experts_per_tok,
        "num_hidden_layers": m.num_decoder_layers,
        "num_key_value_heads": m.num_kv_heads,
        "rms_norm_eps": m.normalization_layer_epsilon,
        "rope_parameters": {
            "partial_rotary_factor": m.rope.partial_rotary_factor,
            "rope_theta": m.rope.max_timescale,
            "rope_type": "default",
        },
        "rope_theta": m.rope.max_timescale,
        "partial_rotary_factor": m.rope.partial_rotary_factor,
        "shared_expert_intermediate_size": m.shared_expert_mlp_dim,
        "tie_word_embeddings": m.logits_via_embedding,
        "vocab_size": m.vocab_size,
        "use_cache": true,
    })
}

fn bad(reason: String) -> HfError {
    HfError::BadConfig { path: "config.json".into(), reason }
}

/// Integral values print as integers (so `rope_theta: 10000000.0` equals a yml's `10000000`); others in
/// Rust's shortest round-trip form, which YAML reads back as the same float.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}

struct Cfg<'a>(&'a Map<String, Value>);

impl Cfg<'_> {
    fn opt_uint(&self, key: &str) -> Result<Option<usize>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| bad(format!("{key} = {v} is not a non-negative integer"))),
        }
    }

    fn uint(&self, key: &str) -> Result<usize> {
        self.opt_uint(key)?.ok_or_else(|| bad(format!("required key {key} is missing")))
    }

    fn opt_float_in(map: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| bad(format!("{key} = {v} is not a number"))),
        }
    }

    fn float(&self, key: &str) -> Result<f64> {
        Self::opt_float_in(self.0, key)?.ok_or_else(|| bad(format!("required key {key} is missing")))
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| bad(format!("{key} = {v} is not true/false"))),
        }
    }
}

/// The full-attention period, from `full_attention_interval` and/or `layer_types` (which must then be
/// the periodic pattern `linear_attention` x (interval-1), `full_attention`). HF's default is 4.
fn layer_interval(c: &Cfg, layers: usize) -> Result<usize> {
    let given = c.opt_uint("full_attention_interval")?;
    if given == Some(0) {
        return Err(bad("full_attention_interval must be at least 1".into()));
    }
    let Some(types) = c.0.get("layer_types").filter(|v| !v.is_null()) else {
        return check_divides(layers, given.unwrap_or(4));
    };
    let types: Vec<&str> = types
        .as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
        .ok_or_else(|| bad(format!("layer_types = {types} is not a list of strings")))?;
    if types.len() != layers {
        return Err(bad(format!("layer_types has {} entries but num_hidden_layers is {layers}", types.len())));
    }
    if let Some(t) = types.iter().find(|t| !matches!(**t, "linear_attention" | "full_attention")) {
        return Err(bad(format!(
            "layer_types contains {t:?}; Qwen3-Next layers are \"linear_attention\" or \"full_attention\""
        )));
    }
    let interval = match (given, types.iter().position(|t| *t == "full_attention")) {
        (Some(i), _) => i,
        (None, Some(first)) => first + 1,
        (None, None) => {
            return Err(bad(
                "layer_types has no \"full_attention\" layer; Qwen3-Next needs one every inhomogeneous_layer_cycle_interval layers"
                    .into(),
            ))
        }
    };
    let expected = |l: usize| if (l + 1).is_multiple_of(interval) { "full_attention" } else { "linear_attention" };
    if let Some(l) = (0..layers).find(|&l| types[l] != expected(l)) {
        let pattern: Vec<&str> = (0..interval).map(expected).collect();
        return Err(bad(format!(
            "layer_types is not periodic with interval {interval} (layer {l} is {:?}, expected {:?}); \
             only the pattern {pattern:?} repeated (full attention iff (layer+1) % interval == 0) is supported",
            types[l],
            expected(l)
        )));
    }
    check_divides(layers, interval)
}

fn check_divides(layers: usize, interval: usize) -> Result<usize> {
    if !layers.is_multiple_of(interval) {
        return Err(bad(format!(
            "num_hidden_layers ({layers}) must be a multiple of the full-attention interval ({interval}): \
             MaxText scans Qwen3-Next in blocks of that many layers"
        )));
    }
    Ok(interval)
}

/// (rope_theta, partial_rotary_factor): nested `rope_parameters` (transformers 5) or top level, with
/// `rope_scaling` / `rope_type` other than "default" rejected.
fn rope(c: &Cfg) -> Result<(f64, f64)> {
    let nested = c.0.get("rope_parameters").and_then(Value::as_object);
    let lookup = |key: &str| -> Result<Option<f64>> {
        if let Some(n) = nested {
            if let Some(v) = Cfg::opt_float_in(n, key)? {
                return Ok(Some(v));
            }
        }
        Cfg::opt_float_in(c.0, key)
    };
    let theta = lookup("rope_theta")?
        .ok_or_else(|| bad("required key rope_theta (or rope_parameters.rope_theta) is missing".into()))?;
    let partial = lookup("partial_rotary_factor")?.unwrap_or(0.25);
    for scaling in [nested, c.0.get("rope_scaling").and_then(Value::as_object)].into_iter().flatten() {
        let kind =
            scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str).unwrap_or("default");
        if kind != "default" {
            return Err(bad(format!("rope_type {kind:?} is not supported (Qwen3-Next uses plain RoPE, \"default\")")));
        }
    }
    Ok((theta, partial))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hf4() -> Value {
        json!({
            "model_type": "qwen3_next", "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 16,
            "num_key_value_heads": 2, "head_dim": 256, "intermediate_size": 5120, "moe_intermediate_size": 512,
            "num_experts": 512, "num_experts_per_tok": 10, "shared_expert_intermediate_size": 512,
            "norm_topk_prob": true, "vocab_size": 151936, "rms_norm_eps": 1e-06, "full_attention_interval": 4,
            "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
            "linear_num_key_heads": 16, "linear_num_value_heads": 32, "rope_theta": 10000000.0,
            "partial_rotary_factor": 0.25, "rope_scaling": null, "tie_word_embeddings": false,
            "decoder_sparse_step": 1, "mlp_only_layers": [], "hidden_act": "silu", "attention_bias": false
        })
    }

    fn get<'a>(o: &'a [String], key: &str) -> &'a str {
        o.iter().find_map(|s| s.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("{key} not in {o:?}"))
    }

    #[test]
    fn transformers4_form_matches_maxtext_yml() {
        let o = config_overrides(&hf4()).unwrap();
        assert_eq!(get(&o, "inhomogeneous_layer_cycle_interval"), "4");
        assert_eq!(get(&o, "rope_max_timescale"), "10000000");
        assert_eq!(get(&o, "partial_rotary_factor"), "0.25");
        assert_eq!(get(&o, "normalization_layer_epsilon"), "1e-6");
        assert_eq!(get(&o, "base_mlp_dim"), "512");
        assert_eq!(get(&o, "decoder_block"), "qwen3_next");
    }

    /// config.json written from a config maps back to the same MaxText keys.
    #[test]
    fn config_json_round_trips() {
        let o = config_overrides(&hf4()).unwrap();
        let mut raw = crate::config::Config::defaults();
        for kv in &o {
            let (k, v) = kv.split_once('=').unwrap();
            raw.set(k, serde_yaml_ng::from_str(v).unwrap(), crate::config::Origin::CommandLine);
        }
        let m = ModelConfig::from_raw(&raw).unwrap();
        let back = config_overrides(&config_json(&m, DType::BF16)).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn layer_types_must_be_periodic() {
        let mut j = hf4();
        j["num_hidden_layers"] = json!(8);
        j.as_object_mut().unwrap().remove("full_attention_interval");
        let l = "linear_attention";
        let f = "full_attention";
        j["layer_types"] = json!([l, l, f, l, f, l, l, f]);
        let err = config_overrides(&j).unwrap_err().to_string();
        assert!(err.contains("not periodic with interval 3 (layer 4"), "{err}");
        j["layer_types"] = json!([l, l, f, l, l, f, l, l]);
        let err = config_overrides(&j).unwrap_err().to_string();
        assert!(err.contains("multiple of the full-attention interval (3)"), "{err}");
        j["layer_types"] = json!([l, f, l, f, l, f, l, f]);
        assert_eq!(get(&config_overrides(&j).unwrap(), "inhomogeneous_layer_cycle_interval"), "2");
        j["layer_types"] = json!([l, f, l, f]);
        assert!(config_overrides(&j).unwrap_err().to_string().contains("4 entries but num_hidden_layers is 8"));
        j["layer_types"] = json!(vec![l; 8]);
        assert!(config_overrides(&j).unwrap_err().to_string().contains("no \"full_attention\""));
        j["layer_types"] = json!([l, l, l, f, l, l, l, f]);
        j["full_attention_interval"] = json!(2);
        assert!(config_overrides(&j).unwrap_err().to_string().contains("interval 2"));
    }

    #[test]
    fn rejects_other_models_and_features() {
        let mut j = hf4();
        j["model_type"] = json!("qwen3_moe");
        assert!(matches!(config_overrides(&j), Err(HfError::NotQwen3Next { .. })));
        let mut j = hf4();
        j["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        assert!(config_overrides(&j).unwrap_err().to_string().contains("yarn"));
        let mut j = hf4();
        j["mlp_only_layers"] = json!([0]);
        assert!(config_overrides(&j).unwrap_err().to_string().contains("dense-MLP"));
        let mut j = hf4();
        j.as_object_mut().unwrap().remove("hidden_size");
        assert!(config_overrides(&j).unwrap_err().to_string().contains("hidden_size is missing"));
    }
}
