//! Where a model parameter lives in a checkpoint: the decoder-layer layouts MaxText has written, and the
//! leaves (and restacking) each parameter declaration is read from.
//!
//! ```text
//! scanned, MaxText 0.2.5   decoder/layers/local_layers/<p> [.., blocks, interval-1, ..]
//!                          decoder/layers/global_layer/<p> [.., blocks, ..]
//! scanned, per slot        decoder/layers/layer_{i}/<p>    [.., blocks, ..]   (i < interval; older MaxText)
//! unscanned                decoder/layers_{l}/<p>
//! ```
//! The per-slot layout is read into the 0.2.5 layout: `local_layers` is `layer_0 .. layer_{interval-2}`
//! stacked on a new axis right after the block axis, `global_layer` is `layer_{interval-1}`.

use std::fmt;

use crate::nn::params::{scan_position, ParamDecl};

/// MaxText's Linen-style prefix of every parameter leaf (`params` collection inside the `params` item).
pub const PARAMS_PREFIX: &str = "params.params.";

/// orbax's leaf name of a parameter: `params.params.` + the decl path with `/` -> `.`.
pub fn leaf_name(decl_path: &str) -> String {
    format!("{PARAMS_PREFIX}{}", decl_path.replace('/', "."))
}

/// The decl path of a parameter leaf (`None` for leaves outside `params.params.`).
pub fn decl_path(leaf: &str) -> Option<String> {
    leaf.strip_prefix(PARAMS_PREFIX).map(|p| p.replace('.', "/"))
}

/// How a checkpoint (or a model config) lays out its decoder layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerLayout {
    /// `decoder/layers/{local_layers,global_layer}/...` (MaxText 0.2.5) or a homogeneous `decoder/layers/...`.
    Scanned,
    /// `decoder/layers/layer_{i}/...` (older MaxText).
    PerSlot,
    /// `decoder/layers_{l}/...`.
    Unscanned,
    /// No decoder-layer parameters at all.
    NoLayers,
}

impl LayerLayout {
    /// Detects the layout from parameter paths ('/'-joined, below `params/params/`).
    pub fn detect<'a>(paths: impl IntoIterator<Item = &'a str>) -> LayerLayout {
        let (mut scanned, mut per_slot, mut unscanned) = (false, false, false);
        for p in paths {
            if let Some(tail) = p.strip_prefix("decoder/layers/") {
                if tail.starts_with("layer_") && tail[6..].split('/').next().is_some_and(is_number) {
                    per_slot = true;
                } else {
                    scanned = true;
                }
            } else if p.strip_prefix("decoder/layers_").and_then(|t| t.split('/').next()).is_some_and(is_number) {
                unscanned = true;
            }
        }
        match (scanned, per_slot, unscanned) {
            (_, true, _) => LayerLayout::PerSlot,
            (true, _, _) => LayerLayout::Scanned,
            (_, _, true) => LayerLayout::Unscanned,
            _ => LayerLayout::NoLayers,
        }
    }

    /// `Some(scan_layers)` of this layout.
    pub fn scan_layers(self) -> Option<bool> {
        match self {
            LayerLayout::Scanned | LayerLayout::PerSlot => Some(true),
            LayerLayout::Unscanned => Some(false),
            LayerLayout::NoLayers => None,
        }
    }
}

impl fmt::Display for LayerLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayerLayout::Scanned => "its layers are stacked under decoder/layers/",
            LayerLayout::PerSlot => "its layers are stacked per slot under decoder/layers/layer_{i}/",
            LayerLayout::Unscanned => "its layers are separate decoder/layers_{l}/ entries",
            LayerLayout::NoLayers => "it has no decoder layers",
        })
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The checkpoint leaves one parameter is read from.
#[derive(Clone, Debug, PartialEq)]
pub enum LeafSource {
    /// One leaf holding the whole parameter.
    Direct(String),
    /// Per-slot leaves (`layer_0 .. layer_{n-1}`), each the parameter without its local axis, stacked on
    /// that axis (`local_axis`).
    Stack { leaves: Vec<String>, local_axis: usize },
}

impl LeafSource {
    pub fn leaves(&self) -> Vec<&str> {
        match self {
            LeafSource::Direct(l) => vec![l.as_str()],
            LeafSource::Stack { leaves, .. } => leaves.iter().map(String::as_str).collect(),
        }
    }

    /// The shape each leaf must have for a parameter of `dims`.
    pub fn leaf_dims(&self, dims: &[i64]) -> Vec<i64> {
        match self {
            LeafSource::Direct(_) => dims.to_vec(),
            LeafSource::Stack { local_axis, .. } => {
                let mut d = dims.to_vec();
                d.remove(*local_axis);
                d
            }
        }
    }
}

/// Where `decl` is read from in a checkpoint whose layout is `ckpt`; `interval` is the model's
/// `inhomogeneous_layer_cycle_interval`. Only the per-slot layout needs anything but the decl's own leaf.
pub fn leaf_source(decl: &ParamDecl, ckpt: LayerLayout, interval: usize) -> LeafSource {
    let direct = || LeafSource::Direct(leaf_name(&decl.path));
    if ckpt != LayerLayout::PerSlot {
        return direct();
    }
    let slot_leaf = |i: usize, rest: &str| leaf_name(&format!("decoder/layers/layer_{i}/{rest}"));
    if let Some(rest) = decl.path.strip_prefix("decoder/layers/local_layers/") {
        if decl.scan_axes == 2 {
            let local = decl.dims[scan_position(decl.dims.len() - 2) + 1] as usize;
            let leaves = (0..local).map(|i| slot_leaf(i, rest)).collect();
            return LeafSource::Stack { leaves, local_axis: scan_position(decl.dims.len() - 2) + 1 };
        }
    }
    if let Some(rest) = decl.path.strip_prefix("decoder/layers/global_layer/") {
        return LeafSource::Direct(slot_leaf(interval.max(1) - 1, rest));
    }
    direct()
}

/// A few architecture figures read off a parameter tree (decl paths and dims), to say in an error how a
/// checkpoint's model differs from the configured one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelShape {
    pub vocab_size: Option<i64>,
    pub emb_dim: Option<i64>,
    pub num_layers: Option<i64>,
    pub num_experts: Option<i64>,
}

impl ModelShape {
    pub fn of<'a>(params: impl IntoIterator<Item = (&'a str, &'a [i64])>) -> ModelShape {
        let mut s = ModelShape::default();
        let (mut unscanned, mut slots) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
        let (mut blocks, mut local) = (None, None);
        for (path, dims) in params {
            if path == "token_embedder/embedding" && dims.len() == 2 {
                s.vocab_size = Some(dims[0]);
                s.emb_dim = Some(dims[1]);
            }
            if let Some(rest) = path.strip_prefix("decoder/layers_") {
                unscanned.extend(rest.split('/').next().and_then(|n| n.parse::<i64>().ok()));
            }
            if let Some(rest) = path.strip_prefix("decoder/layers/layer_") {
                slots.extend(rest.split('/').next().and_then(|n| n.parse::<i64>().ok()));
            }
            if path.ends_with("/input_layernorm/scale") && path.starts_with("decoder/layers/") && dims.len() >= 2 {
                blocks = Some(dims[1]);
                if path.contains("/local_layers/") && dims.len() >= 3 {
                    local = Some(dims[2]);
                }
            }
            if path.ends_with("mlp/routed_experts/gate/kernel") {
                s.num_experts = dims.last().copied();
            }
        }
        s.num_layers = if !unscanned.is_empty() {
            Some(unscanned.len() as i64)
        } else if !slots.is_empty() {
            blocks.map(|b| b * slots.len() as i64)
        } else {
            blocks.map(|b| b * (local.unwrap_or(0) + 1))
        };
        s
    }

    /// "vocab 1024, emb_dim 128, 4 decoder layers, 8 experts" (the figures that are known).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = self.vocab_size {
            parts.push(format!("vocab_size {v}"));
        }
        if let Some(e) = self.emb_dim {
            parts.push(format!("emb_dim {e}"));
        }
        if let Some(l) = self.num_layers {
            parts.push(format!("{l} decoder layers"));
        }
        if let Some(x) = self.num_experts {
            parts.push(format!("{x} experts"));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = leaf_name("decoder/layers/local_layers/attention/A_log");
        assert_eq!(n, "params.params.decoder.layers.local_layers.attention.A_log");
        assert_eq!(decl_path(&n).unwrap(), "decoder/layers/local_layers/attention/A_log");
        assert_eq!(decl_path("opt_state.0.count"), None);
    }

    #[test]
    fn detects_layouts() {
        let d = |p: &[&str]| LayerLayout::detect(p.iter().copied());
        assert_eq!(d(&["decoder/layers/local_layers/attention/A_log"]), LayerLayout::Scanned);
        assert_eq!(d(&["decoder/layers/layer_0/attention/A_log"]), LayerLayout::PerSlot);
        assert_eq!(d(&["decoder/layers_12/attention/A_log", "token_embedder/embedding"]), LayerLayout::Unscanned);
        assert_eq!(d(&["token_embedder/embedding"]), LayerLayout::NoLayers);
        assert_eq!(LayerLayout::PerSlot.scan_layers(), Some(true));
    }

    #[test]
    fn model_shape_of_scanned_and_unscanned_trees() {
        let emb: &[i64] = &[1024, 128];
        let local: &[i64] = &[128, 2, 3];
        let global: &[i64] = &[128, 2];
        let s = ModelShape::of([
            ("token_embedder/embedding", emb),
            ("decoder/layers/local_layers/input_layernorm/scale", local),
            ("decoder/layers/global_layer/input_layernorm/scale", global),
        ]);
        assert_eq!(s.num_layers, Some(8));
        assert_eq!(s.describe(), "vocab_size 1024, emb_dim 128, 8 decoder layers");
        let one: &[i64] = &[128];
        let s = ModelShape::of([("decoder/layers_0/input_layernorm/scale", one), ("decoder/layers_3/x", one)]);
        assert_eq!(s.num_layers, Some(2));
    }
}
