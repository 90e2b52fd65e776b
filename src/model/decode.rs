//! Qwen3-Next with decode state (reference §4): prefill fills the caches from a right-padded prompt,
//! a decode step advances every row by one token. State goes in and comes out explicitly:
//! - `kv_k`, `kv_v` [full_layers, batch, kv_seq = max_target_length, kv_heads, head_dim] (dtype),
//! - `conv` [gdn_layers, batch, K−1, conv] (dtype): the last K−1 conv inputs,
//! - `rec` [gdn_layers, batch, heads, dk, dv] (f32): the delta-rule state.
//! Layer slots: full-attention layer `l` uses `kv[l / interval]`; GDN layer `l` uses
//! `conv/rec[l − l / interval − 1]`... i.e. the GDN layers counted in order. Scanned, block `j`'s local `i`
//! is GDN slot `j·(interval−1) + i` and its global layer is full slot `j`.

use super::qwen3_next::{lm_head, token_embed, DecoderLayer, ForwardInputs, Mixer};
use crate::config::ModelConfig;
use crate::ir::{index_const, DType, Tensor, TensorType};
use crate::nn::ParamBuilder;

/// The decode state of every layer, stacked by layer slot.
#[derive(Clone)]
pub struct DecodeState {
    pub kv_k: Tensor,
    pub kv_v: Tensor,
    pub conv: Tensor,
    pub rec: Tensor,
}

/// Which pass: a prefill from position 0 of right-padded rows, or one decode step.
#[derive(Clone, Copy)]
pub enum Pass<'a> {
    /// `segment_ids` [batch, seq] (1 = prompt, 0 = padding), `lengths` [batch] (prompt lengths).
    Prefill { segment_ids: &'a Tensor, lengths: &'a Tensor },
    Decode,
}

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

/// Slot `idx` of a layer-stacked state tensor (axis 0 removed).
fn take(stack: &Tensor, idx: &Tensor) -> Tensor {
    stack.index_axis(0, idx)
}

/// `stack` with slot `idx` replaced by `value`.
fn put(stack: &Tensor, idx: &Tensor, value: &Tensor) -> Tensor {
    stack.update_axis(0, idx, value)
}

impl DecoderLayer {
    /// The layer with state: returns the new x and the layer's new (k, v) or (conv, rec).
    fn forward_state(&self, x: &Tensor, positions: &Tensor, pass: Pass, s0: &Tensor, s1: &Tensor) -> (Tensor, Tensor, Tensor) {
        let a = self.input_norm.forward(x);
        let (a, n0, n1) = match (&self.mixer, pass) {
            (Mixer::Full(attn), Pass::Prefill { segment_ids, .. }) => attn.prefill(&a, positions, segment_ids, s0, s1),
            (Mixer::Full(attn), Pass::Decode) => attn.decode_step(&a, positions, s0, s1),
            (Mixer::Linear(gdn), Pass::Prefill { segment_ids, lengths }) => gdn.prefill(&a, segment_ids, lengths),
            (Mixer::Linear(gdn), Pass::Decode) => gdn.decode_step(&a, s0, s1),
        };
        let h = x + &a;
        (self.finish(&h), n0, n1)
    }
}

/// Runs the decoder stack with state; declares parameters as the stateless forward does.
fn decoder_layers_state(cfg: &ModelConfig, pb: &mut ParamBuilder, x: Tensor, positions: &Tensor, pass: Pass, st: DecodeState, scan: bool) -> (Tensor, DecodeState) {
    let interval = cfg.inhomogeneous_layer_cycle_interval;
    let g = x.graph();
    if !scan {
        let (mut x, mut st) = (x, st);
        let (mut full, mut lin) = (0, 0);
        for l in 0..cfg.num_decoder_layers {
            let is_full = cfg.is_full_attention(l);
            let layer = pb.scope(&format!("layers_{l}"), |pb| DecoderLayer::new(cfg, pb, is_full));
            let (a, b) = if is_full { (&st.kv_k, &st.kv_v) } else { (&st.conv, &st.rec) };
            let slot = index_const(&g, if is_full { full } else { lin });
            let (nx, n0, n1) = layer.forward_state(&x, positions, pass, &take(a, &slot), &take(b, &slot));
            x = nx;
            if is_full {
                st.kv_k = put(&st.kv_k, &slot, &n0);
                st.kv_v = put(&st.kv_v, &slot, &n1);
                full += 1;
            } else {
                st.conv = put(&st.conv, &slot, &n0);
                st.rec = put(&st.rec, &slot, &n1);
                lin += 1;
            }
        }
        return (x, st);
    }
    let blocks = (cfg.num_decoder_layers / interval) as i64;
    let locals = (interval - 1) as i64;
    pb.scope("layers", |pb| {
        let init = [x, st.kv_k, st.kv_v, st.conv, st.rec];
        let out = g.fori_loop(0, blocks, &init, |bg, block, c| {
            let (mut x, kv_k, kv_v, mut conv, mut rec) = (c[0].clone(), c[1].clone(), c[2].clone(), c[3].clone(), c[4].clone());
            if locals > 0 {
                let r = pb.scope("local_layers", |pb| {
                    bg.fori_loop(0, locals, &[x.clone(), conv.clone(), rec.clone()], |lg, local, c| {
                        let layer = pb.stacked("layers", blocks, block, |pb| pb.stacked("local_layers", locals, local, |pb| DecoderLayer::new(cfg, pb, false)));
                        let slot = &(block * &index_const(lg, locals)) + local;
                        let (nx, nc, nr) = layer.forward_state(&c[0], positions, pass, &take(&c[1], &slot), &take(&c[2], &slot));
                        vec![nx.with_axes(&c[0].ty().axes), put(&c[1], &slot, &nc), put(&c[2], &slot, &nr)]
                    })
                });
                (x, conv, rec) = (r[0].clone(), r[1].clone(), r[2].clone());
            }
            let layer = pb.scope("global_layer", |pb| pb.stacked("layers", blocks, block, |pb| DecoderLayer::new(cfg, pb, true)));
            let (nx, nk, nv) = layer.forward_state(&x, positions, pass, &take(&kv_k, block), &take(&kv_v, block));
            vec![nx.with_axes(&c[0].ty().axes), put(&kv_k, block, &nk), put(&kv_v, block, &nv), conv, rec]
        });
        let st = DecodeState { kv_k: out[1].clone(), kv_v: out[2].clone(), conv: out[3].clone(), rec: out[4].clone() };
        (out[0].clone(), st)
    })
}

/// tokens [batch, seq] at `positions` -> (logits [batch, seq, vocab] f32, new state).
pub fn forward_with_state(cfg: &ModelConfig, pb: &mut ParamBuilder, inputs: &ForwardInputs, pass: Pass, state: DecodeState, scan: bool) -> (Tensor, DecodeState) {
    let x = token_embed(cfg, pb, &inputs.tokens);
    pb.scope("decoder", |pb| {
        let (x, st) = decoder_layers_state(cfg, pb, x, &inputs.positions, pass, state, scan);
        (lm_head(cfg, pb, &x), st)
    })
}
