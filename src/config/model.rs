//! The model architecture: MaxText's model-yml keys, with the derived sizes (`emb_dim = base_emb_dim` etc.).

use super::error::ConfigError;
use super::raw::RawConfig;
use super::types::{Activation, DecoderBlock, RopeType};

/// The architecture of the model. Sizes are the derived ones (MaxText's `emb_dim`, `num_query_heads`, ...:
/// `base_*` scaled by `global_parameter_scale`, which is 1 for every real model).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub decoder_block: DecoderBlock,
    pub global_parameter_scale: i64,
    /// Hidden size (`2**emb_scale * base_emb_dim`).
    pub emb_dim: usize,
    pub num_query_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Dense MLP intermediate size.
    pub mlp_dim: usize,
    /// Routed-expert intermediate size; 0 when `base_moe_mlp_dim` is unset (-1, dense models).
    pub moe_mlp_dim: usize,
    /// Shared-expert intermediate size (`shared_expert_mlp_dim`, or `moe_mlp_dim` as in MaxText's Qwen3-Next).
    pub shared_expert_mlp_dim: usize,
    pub num_decoder_layers: usize,
    pub vocab_size: usize,
    pub mlp_activations: Vec<Activation>,
    pub normalization_layer_epsilon: f64,
    pub logits_via_embedding: bool,
    pub normalize_embedding_logits: bool,
    pub use_qk_norm: bool,
    pub attention_bias: bool,
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    pub shared_experts: usize,
    pub norm_topk_prob: bool,
    /// Router scoring function; `None` = softmax over the top-k logits (MaxText's "").
    pub routed_score_func: Option<String>,
    pub routed_bias: bool,
    pub routed_scaling_factor: f64,
    /// Layers per scanned block; for Qwen3-Next also the full-attention period.
    pub inhomogeneous_layer_cycle_interval: usize,
    pub gdn: GdnConfig,
    pub rope: RopeConfig,
    pub mtp_num_layers: usize,
    pub enable_dropout: bool,
    pub dropout_rate: f64,
}

/// Gated DeltaNet (linear attention) sizes: MaxText's `gdn_*` keys.
#[derive(Clone, Debug, PartialEq)]
pub struct GdnConfig {
    pub conv_kernel_dim: usize,
    pub key_head_dim: usize,
    pub value_head_dim: usize,
    pub num_key_heads: usize,
    pub num_value_heads: usize,
    pub chunk_size: usize,
    /// `use_qk_norm_in_gdn`: L2-normalise q and k inside the delta rule.
    pub use_qk_norm: bool,
}

impl GdnConfig {
    /// Total key (and query) channels: `num_key_heads * key_head_dim`.
    pub fn key_dim(&self) -> usize {
        self.num_key_heads * self.key_head_dim
    }

    /// Total value channels: `num_value_heads * value_head_dim`.
    pub fn value_dim(&self) -> usize {
        self.num_value_heads * self.value_head_dim
    }

    /// Channels of the causal conv: q, k and v concatenated.
    pub fn conv_dim(&self) -> usize {
        2 * self.key_dim() + self.value_dim()
    }
}

/// Rotary position embedding settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub rope_type: RopeType,
    pub min_timescale: f64,
    /// RoPE base theta (`rope_max_timescale`).
    pub max_timescale: f64,
    pub partial_rotary_factor: f64,
}

/// MaxText's `get_individual_scales`: how `global_parameter_scale` (a power of two) splits into
/// (emb, heads, mlp, layers) exponents.
pub fn individual_scales(scale: i64) -> Result<(u32, u32, u32, u32), ConfigError> {
    if scale <= 0 || (scale & (scale - 1)) != 0 {
        return Err(ConfigError::Invalid(format!(
            "global_parameter_scale={scale} must be a power of two; set base_emb_dim, base_num_query_heads, \
             base_num_kv_heads, base_mlp_dim, base_num_decoder_layers and/or head_dim for finer control"
        )));
    }
    let log2 = scale.trailing_zeros();
    let (base, rem) = (log2 / 3, log2 % 3);
    let heads = base + u32::from(rem > 0);
    let emb = base + u32::from(rem > 1);
    Ok((emb, heads, heads, base))
}

fn positive(raw: &RawConfig, key: &str) -> Result<usize, ConfigError> {
    Ok(raw.int_at_least(key, 1)? as usize)
}

impl ModelConfig {
    pub fn from_raw(raw: &RawConfig) -> Result<ModelConfig, ConfigError> {
        let global_parameter_scale = raw.i64("global_parameter_scale")?;
        let (emb_s, head_s, mlp_s, layer_s) = individual_scales(global_parameter_scale)?;
        let base_moe_mlp_dim = raw.i64("base_moe_mlp_dim")?;
        let moe_mlp_dim = if base_moe_mlp_dim > 0 { (base_moe_mlp_dim as usize) << mlp_s } else { 0 };
        let shared = raw.i64("shared_expert_mlp_dim")?;
        let activations: Vec<String> = raw.string_list("mlp_activations")?;
        let mlp_activations = activations
            .iter()
            .map(|a| {
                a.parse::<Activation>().map_err(|e| ConfigError::BadValue {
                    key: "mlp_activations".into(),
                    value: a.clone(),
                    expected: format!("activation names ({e})"),
                    origin: raw.origin("mlp_activations").cloned().unwrap_or(super::Origin::Default),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let m = ModelConfig {
            decoder_block: raw.enumeration("decoder_block")?,
            global_parameter_scale,
            emb_dim: positive(raw, "base_emb_dim")? << emb_s,
            num_query_heads: positive(raw, "base_num_query_heads")? << head_s,
            num_kv_heads: positive(raw, "base_num_kv_heads")? << head_s,
            head_dim: positive(raw, "head_dim")?,
            mlp_dim: positive(raw, "base_mlp_dim")? << mlp_s,
            moe_mlp_dim,
            shared_expert_mlp_dim: if shared > 0 { shared as usize } else { moe_mlp_dim },
            num_decoder_layers: positive(raw, "base_num_decoder_layers")? << layer_s,
            vocab_size: positive(raw, "vocab_size")?,
            mlp_activations,
            normalization_layer_epsilon: raw.f64("normalization_layer_epsilon")?,
            logits_via_embedding: raw.bool("logits_via_embedding")?,
            normalize_embedding_logits: raw.bool("normalize_embedding_logits")?,
            use_qk_norm: raw.bool("use_qk_norm")?,
            attention_bias: raw.bool("attention_bias")?,
            num_experts: positive(raw, "num_experts")?,
            num_experts_per_tok: positive(raw, "num_experts_per_tok")?,
            shared_experts: raw.int_at_least("shared_experts", 0)? as usize,
            norm_topk_prob: raw.bool("norm_topk_prob")?,
            routed_score_func: raw.opt_string("routed_score_func")?,
            routed_bias: raw.bool("routed_bias")?,
            routed_scaling_factor: raw.f64("routed_scaling_factor")?,
            inhomogeneous_layer_cycle_interval: positive(raw, "inhomogeneous_layer_cycle_interval")?,
            gdn: GdnConfig {
                conv_kernel_dim: positive(raw, "gdn_conv_kernel_dim")?,
                key_head_dim: positive(raw, "gdn_key_head_dim")?,
                value_head_dim: positive(raw, "gdn_value_head_dim")?,
                num_key_heads: positive(raw, "gdn_num_key_heads")?,
                num_value_heads: positive(raw, "gdn_num_value_heads")?,
                chunk_size: positive(raw, "gdn_chunk_size")?,
                use_qk_norm: raw.bool("use_qk_norm_in_gdn")?,
            },
            rope: RopeConfig {
                rope_type: raw.enumeration("rope_type")?,
                min_timescale: raw.f64("rope_min_timescale")?,
                max_timescale: raw.f64("rope_max_timescale")?,
                partial_rotary_factor: raw.f64("partial_rotary_factor")?,
            },
            mtp_num_layers: raw.int_at_least("mtp_num_layers", 0)? as usize,
            enable_dropout: raw.bool("enable_dropout")?,
            dropout_rate: raw.f64("dropout_rate")?,
        };
        m.validate()?;
        Ok(m)
    }

    /// MaxText's model validation (types.py), plus the shape constraints the Qwen3-Next layers rely on.
    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError::Invalid(msg));
        if !(self.rope.min_timescale > 0.0 && self.rope.max_timescale > 0.0) {
            return fail(format!(
                "rope_min_timescale={} and rope_max_timescale={} must be > 0",
                self.rope.min_timescale, self.rope.max_timescale
            ));
        }
        if self.num_query_heads % self.num_kv_heads != 0 {
            return fail(format!(
                "base_num_query_heads={} must be a multiple of base_num_kv_heads={}",
                self.num_query_heads, self.num_kv_heads
            ));
        }
        if self.num_experts > 1 {
            if self.moe_mlp_dim == 0 {
                return fail(format!(
                    "num_experts={} needs base_moe_mlp_dim > 0 (the routed-expert intermediate size)",
                    self.num_experts
                ));
            }
            if self.num_experts_per_tok > self.num_experts {
                return fail(format!(
                    "num_experts_per_tok={} exceeds num_experts={}",
                    self.num_experts_per_tok, self.num_experts
                ));
            }
        }
        if self.mlp_activations.is_empty() {
            return fail("mlp_activations must name at least one activation".into());
        }
        if self.is_hybrid_linear_attention() {
            if self.gdn.num_value_heads % self.gdn.num_key_heads != 0 {
                return fail(format!(
                    "gdn_num_value_heads={} must be divisible by gdn_num_key_heads={}",
                    self.gdn.num_value_heads, self.gdn.num_key_heads
                ));
            }
            let rotary = self.rotary_dim();
            if rotary % 2 != 0 {
                return fail(format!(
                    "the rotary dimension int(head_dim * partial_rotary_factor) = int({} * {}) = {rotary} must be even",
                    self.head_dim, self.rope.partial_rotary_factor
                ));
            }
            if !(0.0..=1.0).contains(&self.rope.partial_rotary_factor) {
                return fail(format!(
                    "partial_rotary_factor={} must be in [0, 1]",
                    self.rope.partial_rotary_factor
                ));
            }
        } else if self.rope.partial_rotary_factor != 1.0 {
            return fail(format!(
                "partial_rotary_factor={} is only supported with decoder_block=qwen3_next (got decoder_block={})",
                self.rope.partial_rotary_factor, self.decoder_block
            ));
        }
        Ok(())
    }

    /// Qwen3-Next style: Gated DeltaNet layers with a full-attention layer every `cycle interval` layers.
    pub fn is_hybrid_linear_attention(&self) -> bool {
        matches!(self.decoder_block, DecoderBlock::Qwen3Next | DecoderBlock::Qwen3_5)
    }

    /// Whether decoder layer `layer` (0-based) is full attention: for Qwen3-Next iff
    /// `(layer + 1) % inhomogeneous_layer_cycle_interval == 0` (layers 3, 7, 11, ... for interval 4);
    /// every layer for the other decoder blocks.
    pub fn is_full_attention(&self, layer: usize) -> bool {
        !self.is_hybrid_linear_attention() || (layer + 1) % self.inhomogeneous_layer_cycle_interval == 0
    }

    /// Number of full-attention layers.
    pub fn num_full_attention_layers(&self) -> usize {
        (0..self.num_decoder_layers).filter(|&l| self.is_full_attention(l)).count()
    }

    /// Number of scanned blocks of `inhomogeneous_layer_cycle_interval` layers.
    pub fn num_scan_blocks(&self) -> usize {
        self.num_decoder_layers / self.inhomogeneous_layer_cycle_interval
    }

    /// Dims that get RoPE: `int(head_dim * partial_rotary_factor)` (MaxText truncates).
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim as f64 * self.rope.partial_rotary_factor) as usize
    }

    /// Whether the FFN of layer `layer` is the routed MoE (every layer when `num_experts > 1`).
    pub fn is_moe(&self) -> bool {
        self.num_experts > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_match_maxtext() {
        assert_eq!(individual_scales(1).unwrap(), (0, 0, 0, 0));
        assert_eq!(individual_scales(2).unwrap(), (0, 1, 1, 0));
        assert_eq!(individual_scales(4).unwrap(), (1, 1, 1, 0));
        assert_eq!(individual_scales(8).unwrap(), (1, 1, 1, 1));
        assert!(individual_scales(3).is_err());
        assert!(individual_scales(0).is_err());
    }
}
