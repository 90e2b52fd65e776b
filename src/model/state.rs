//! The decode state of Qwen3-Next (reference §4), carried through the decoder stack by prefill and
//! decode steps and stacked by layer slot:
//! - `kv_k`, `kv_v` [full_layers, batch, kv_seq = max_target_length, kv_heads, head_dim] (dtype),
//! - `conv` [gdn_layers, batch, K−1, conv] (dtype): the last K−1 conv inputs,
//! - `rec` [gdn_layers, batch, heads, dk, dv] (f32): the delta-rule state.
//! Layer slots: the full-attention layers counted in order use `kv[slot]`, the GDN layers counted in order
//! `conv/rec[slot]`. Scanned, block `j`'s local `i` is GDN slot `j·(interval−1) + i` and its global layer is
//! full slot `j`.
//!
//! Sharding follows MaxText's decode rules: the batch over `decode_batch` (data / fsdp / expert), KV heads
//! over `cache_heads` (tensor), GDN value heads over `activation_kv_heads`.

use crate::config::ModelConfig;
use crate::ir::{DType, Tensor, TensorType};

/// The decode state of every layer, stacked by layer slot.
#[derive(Clone)]
pub struct DecodeState {
    pub kv_k: Tensor,
    pub kv_v: Tensor,
    pub conv: Tensor,
    pub rec: Tensor,
}

/// Which pass the decoder stack runs.
#[derive(Clone, Copy)]
pub enum Pass<'a> {
    /// Whole sequences from an empty state, no state out (training, logit checks).
    Forward,
    /// A prefill from position 0 of right-padded rows: `segment_ids` [batch, seq] (1 = prompt, 0 = padding),
    /// `lengths` [batch] (prompt lengths).
    Prefill { segment_ids: &'a Tensor, lengths: &'a Tensor },
    /// One token per row.
    Decode,
}

/// Names of the four state arrays, in [`DecodeState`] order (the `cache` group of the decode programs).
pub const STATE_NAMES: [&str; 4] = ["kv_k", "kv_v", "conv", "rec"];

/// Logical axes of the state arrays, in [`DecodeState`] order (MaxText's cache rules).
pub const STATE_LOGICAL: [&[&str]; 4] = [
    &["", "decode_batch", "cache_sequence", "cache_heads", "cache_kv"],
    &["", "decode_batch", "cache_sequence", "cache_heads", "cache_kv"],
    &["", "decode_batch", "", ""],
    &["", "decode_batch", "activation_kv_heads", "", ""],
];

/// Types of the decode state for `batch` rows and a cache of `max_len` positions.
pub fn state_types(cfg: &ModelConfig, dtype: DType, batch: i64, max_len: i64) -> [TensorType; 4] {
    let n_full = cfg.num_full_attention_layers() as i64;
    let n_lin = cfg.num_decoder_layers as i64 - n_full;
    let g = &cfg.gdn;
    let kv = TensorType::named(dtype, &[n_full, batch, max_len, cfg.num_kv_heads as i64, cfg.head_dim as i64], &["layer", "batch", "kv_seq", "kv_heads", "head_dim"]);
    let conv = TensorType::named(dtype, &[n_lin, batch, g.conv_kernel_dim as i64 - 1, g.conv_dim() as i64], &["layer", "batch", "seq", "conv"]);
    let rec = TensorType::named(
        DType::F32,
        &[n_lin, batch, g.num_value_heads as i64, g.key_head_dim as i64, g.value_head_dim as i64],
        &["layer", "batch", "heads", "dk", "dv"],
    );
    [kv.clone(), kv, conv, rec]
}

impl DecodeState {
    pub fn from_vec(v: Vec<Tensor>) -> DecodeState {
        let [kv_k, kv_v, conv, rec]: [Tensor; 4] = v.try_into().expect("four state arrays");
        DecodeState { kv_k, kv_v, conv, rec }
    }

    pub fn into_vec(self) -> Vec<Tensor> {
        vec![self.kv_k, self.kv_v, self.conv, self.rec]
    }

    /// The state with each array constrained to its cache sharding.
    pub fn constrained(self) -> DecodeState {
        let v = self.into_vec().into_iter().zip(STATE_LOGICAL).map(|(t, l)| t.constrain(l).with_axes(&t.ty().axes)).collect();
        DecodeState::from_vec(v)
    }
}

/// Slot `idx` of a layer-stacked state tensor (axis 0 removed).
pub(crate) fn take(stack: &Tensor, idx: &Tensor) -> Tensor {
    stack.index_axis(0, idx)
}

/// `stack` with slot `idx` replaced by `value`.
pub(crate) fn put(stack: &Tensor, idx: &Tensor, value: &Tensor) -> Tensor {
    stack.update_axis(0, idx, value).with_axes(&stack.ty().axes)
}
