//! MaxText parameter <-> HF tensors for Qwen3-Next (MaxText's `param_mapping.py`
//! `QWEN3_NEXT_MAXTEXT_TO_HF_PARAM_MAPPING` and its hooks; reference §3.4).
//!
//! A MaxText parameter is a stack of "pieces", one per HF tensor: the HF tensor transformed by a
//! [`Transform`] gives one layer's (and, for routed experts, one expert's) slice. The stack axes are the
//! scan axes (`[blocks]` or `[blocks, local]`) inserted at `min(1, rank)` of the piece, and for routed
//! experts the expert axis in front of them (so `[experts, blocks, local, E, I]`).

use super::{HfError, Result};
use crate::config::ModelConfig;
use crate::nn::params::{scan_position, ParamDecl};

/// How one HF tensor becomes one piece of a MaxText parameter (MaxText's hooks, HF -> MaxText direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Stored as is.
    None,
    /// `x.T` (a `[out, in]` torch Linear weight becomes an `[in, out]` kernel).
    Transpose,
    /// `x.T.reshape(piece dims)` (`reshape_kernel`: q/k/v/o projections split into heads).
    ReshapeKernel,
    /// `x.transpose(2, 1, 0)` (torch conv1d weight `[C, 1, K]` -> `[K, 1, C]`).
    ConvPermute,
}

impl Transform {
    /// The HF tensor's shape for a piece of shape `piece` (`None` when the rank does not fit).
    pub fn hf_shape(self, piece: &[i64]) -> Option<Vec<i64>> {
        match self {
            Transform::None => Some(piece.to_vec()),
            Transform::Transpose if piece.len() == 2 => Some(vec![piece[1], piece[0]]),
            Transform::ReshapeKernel if piece.len() >= 2 => Some(vec![piece[1..].iter().product(), piece[0]]),
            Transform::ConvPermute if piece.len() == 3 => Some(piece.iter().rev().copied().collect()),
            _ => None,
        }
    }
}

/// The HF tensors that make up one MaxText parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// HF tensor names, row-major over `stack_dims`.
    pub hf_names: Vec<String>,
    /// Shape of every HF tensor.
    pub hf_shape: Vec<i64>,
    pub transform: Transform,
    /// Shape of one transformed HF tensor.
    pub piece_dims: Vec<i64>,
    /// Stack axes (experts, blocks, local slots); empty when the parameter is a single HF tensor.
    pub stack_dims: Vec<i64>,
    /// Where the stack axes sit in the parameter's dims.
    pub stack_at: usize,
}

impl Source {
    /// The parameter's dims: `piece_dims` with `stack_dims` inserted at `stack_at`.
    pub fn stacked_dims(&self) -> Vec<i64> {
        let mut d = self.piece_dims.clone();
        for (k, s) in self.stack_dims.iter().enumerate() {
            d.insert(self.stack_at + k, *s);
        }
        d
    }
}

/// One entry of the per-layer table: MaxText path below the layer, HF name below `model.layers.{l}.`.
struct LayerEntry {
    maxtext: &'static str,
    hf: &'static str,
    transform: Transform,
    /// Routed experts: `{e}` in `hf` is the expert index and the expert axis leads the parameter.
    per_expert: bool,
}

const fn entry(maxtext: &'static str, hf: &'static str, transform: Transform) -> LayerEntry {
    LayerEntry { maxtext, hf, transform, per_expert: false }
}

const fn expert(maxtext: &'static str, hf: &'static str) -> LayerEntry {
    LayerEntry { maxtext, hf, transform: Transform::Transpose, per_expert: true }
}

const LAYER_TABLE: &[LayerEntry] = &[
    entry("input_layernorm/scale", "input_layernorm.weight", Transform::None),
    entry("post_attention_layernorm/scale", "post_attention_layernorm.weight", Transform::None),
    // Gated DeltaNet (linear attention) layers.
    entry("attention/in_proj_qkvz/kernel", "linear_attn.in_proj_qkvz.weight", Transform::Transpose),
    entry("attention/in_proj_ba/kernel", "linear_attn.in_proj_ba.weight", Transform::Transpose),
    entry("attention/conv1d/kernel", "linear_attn.conv1d.weight", Transform::ConvPermute),
    entry("attention/A_log", "linear_attn.A_log", Transform::None),
    entry("attention/dt_bias", "linear_attn.dt_bias", Transform::None),
    entry("attention/norm/rms_norm/scale", "linear_attn.norm.weight", Transform::None),
    entry("attention/out_proj/kernel", "linear_attn.out_proj.weight", Transform::Transpose),
    // Gated full-attention layers.
    entry("attention/attention/query/kernel", "self_attn.q_proj.weight", Transform::ReshapeKernel),
    entry("attention/attention/key/kernel", "self_attn.k_proj.weight", Transform::ReshapeKernel),
    entry("attention/attention/value/kernel", "self_attn.v_proj.weight", Transform::ReshapeKernel),
    entry("attention/attention/out/kernel", "self_attn.o_proj.weight", Transform::ReshapeKernel),
    entry("attention/attention/query_norm/scale", "self_attn.q_norm.weight", Transform::None),
    entry("attention/attention/key_norm/scale", "self_attn.k_norm.weight", Transform::None),
    // Sparse MoE block.
    entry("mlp/routed_experts/gate/kernel", "mlp.gate.weight", Transform::Transpose),
    expert("mlp/routed_experts/wi_0", "mlp.experts.{e}.gate_proj.weight"),
    expert("mlp/routed_experts/wi_1", "mlp.experts.{e}.up_proj.weight"),
    expert("mlp/routed_experts/wo", "mlp.experts.{e}.down_proj.weight"),
    entry("mlp/shared_expert/wi_0/kernel", "mlp.shared_expert.gate_proj.weight", Transform::Transpose),
    entry("mlp/shared_expert/wi_1/kernel", "mlp.shared_expert.up_proj.weight", Transform::Transpose),
    entry("mlp/shared_expert/wo/kernel", "mlp.shared_expert.down_proj.weight", Transform::Transpose),
    entry("mlp/shared_expert_gate/kernel", "mlp.shared_expert_gate.weight", Transform::Transpose),
];

/// Which decoder layers a parameter path covers: the HF layer indices (row-major over `stack`) and the
/// scan axes, plus the path below the layer.
struct Layers<'a> {
    layers: Vec<usize>,
    stack: Vec<i64>,
    rest: &'a str,
}

/// Splits a decoder-layer path. Layouts: unscanned `decoder/layers_{l}/...`; scanned MaxText 0.2.5
/// `decoder/layers/local_layers/...` (`[blocks, interval-1]`, HF layer `interval*j + i`) and
/// `decoder/layers/global_layer/...` (`[blocks]`, HF layer `interval*j + interval-1`); the older per-slot
/// `decoder/layers/layer_{i}/...` (`[blocks]`, HF layer `interval*j + i`); a homogeneous scan
/// `decoder/layers/...` (`[layers]`).
fn split_layers<'a>(path: &'a str, cfg: &ModelConfig) -> Option<Layers<'a>> {
    let interval = cfg.inhomogeneous_layer_cycle_interval.max(1);
    let blocks = cfg.num_decoder_layers / interval;
    if let Some(tail) = path.strip_prefix("decoder/layers_") {
        let (num, rest) = tail.split_once('/')?;
        let l: usize = num.parse().ok()?;
        return Some(Layers { layers: vec![l], stack: vec![], rest });
    }
    let tail = path.strip_prefix("decoder/layers/")?;
    if let Some(rest) = tail.strip_prefix("local_layers/") {
        let local = interval - 1;
        let layers = (0..blocks).flat_map(|j| (0..local).map(move |i| interval * j + i)).collect();
        return Some(Layers { layers, stack: vec![blocks as i64, local as i64], rest });
    }
    if let Some(rest) = tail.strip_prefix("global_layer/") {
        let layers = (0..blocks).map(|j| interval * j + interval - 1).collect();
        return Some(Layers { layers, stack: vec![blocks as i64], rest });
    }
    if let Some(slot_tail) = tail.strip_prefix("layer_") {
        let (num, rest) = slot_tail.split_once('/')?;
        let i: usize = num.parse().ok()?;
        if i >= interval {
            return None;
        }
        let layers = (0..blocks).map(|j| interval * j + i).collect();
        return Some(Layers { layers, stack: vec![blocks as i64], rest });
    }
    let n = cfg.num_decoder_layers;
    Some(Layers { layers: (0..n).collect(), stack: vec![n as i64], rest: tail })
}

/// The HF tensors and transform that make up `decl` (see the module docs).
pub fn hf_sources(decl: &ParamDecl, cfg: &ModelConfig) -> Result<Source> {
    let mismatch = |reason: String| HfError::DeclMismatch { maxtext_path: decl.path.clone(), reason };
    let (hf_names, transform, stack_dims, piece_dims, stack_at) = match decl.path.as_str() {
        "token_embedder/embedding" => {
            (vec!["model.embed_tokens.weight".to_string()], Transform::None, vec![], decl.dims.clone(), 0)
        }
        "decoder/decoder_norm/scale" => {
            (vec!["model.norm.weight".to_string()], Transform::None, vec![], decl.dims.clone(), 0)
        }
        "decoder/logits_dense/kernel" => {
            (vec!["lm_head.weight".to_string()], Transform::Transpose, vec![], decl.dims.clone(), 0)
        }
        path => {
            let unmapped = || HfError::Unmapped { maxtext_path: decl.path.clone() };
            let layers = split_layers(path, cfg).ok_or_else(unmapped)?;
            let entry = LAYER_TABLE.iter().find(|e| e.maxtext == layers.rest).ok_or_else(unmapped)?;
            if decl.scan_axes != layers.stack.len() {
                return Err(mismatch(format!(
                    "declared with {} scan axes, but its layout has {} ({:?})",
                    decl.scan_axes,
                    layers.stack.len(),
                    layers.stack
                )));
            }
            if decl.dims.len() < decl.scan_axes {
                return Err(mismatch(format!("dims {:?} have fewer than {} scan axes", decl.dims, decl.scan_axes)));
            }
            let layer_dims = decl.layer_dims();
            let layer_names = |e: Option<usize>| {
                layers.layers.iter().map(move |l| {
                    let hf = match e {
                        Some(e) => entry.hf.replace("{e}", &e.to_string()),
                        None => entry.hf.to_string(),
                    };
                    format!("model.layers.{l}.{hf}")
                })
            };
            if entry.per_expert {
                let (&experts, piece) = layer_dims
                    .split_first()
                    .ok_or_else(|| mismatch(format!("dims {:?} have no expert axis", decl.dims)))?;
                if experts != cfg.num_experts as i64 {
                    return Err(mismatch(format!(
                        "expert axis has {experts} entries, but the config has num_experts={}",
                        cfg.num_experts
                    )));
                }
                let names = (0..experts as usize).flat_map(|e| layer_names(Some(e))).collect();
                let mut stack = vec![experts];
                stack.extend(&layers.stack);
                (names, entry.transform, stack, piece.to_vec(), 0)
            } else {
                let at = scan_position(layer_dims.len());
                (layer_names(None).collect(), entry.transform, layers.stack, layer_dims, at)
            }
        }
    };
    let hf_shape = transform
        .hf_shape(&piece_dims)
        .ok_or_else(|| mismatch(format!("per-layer dims {piece_dims:?} do not fit the HF transform {transform:?}")))?;
    let source = Source { hf_names, hf_shape, transform, piece_dims, stack_dims, stack_at };
    if source.stacked_dims() != decl.dims {
        return Err(mismatch(format!(
            "dims {:?} are not the HF pieces {:?} stacked as {:?} at axis {}",
            decl.dims, source.piece_dims, source.stack_dims, source.stack_at
        )));
    }
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_shapes_of_transforms() {
        assert_eq!(Transform::ReshapeKernel.hf_shape(&[2048, 16, 512]), Some(vec![8192, 2048]));
        assert_eq!(Transform::ReshapeKernel.hf_shape(&[4096, 2048]), Some(vec![2048, 4096]));
        assert_eq!(Transform::ConvPermute.hf_shape(&[4, 1, 8192]), Some(vec![8192, 1, 4]));
        assert_eq!(Transform::Transpose.hf_shape(&[2048, 1]), Some(vec![1, 2048]));
        assert_eq!(Transform::Transpose.hf_shape(&[2048]), None);
    }
}
