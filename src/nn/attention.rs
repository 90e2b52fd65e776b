//! Gated full attention of Qwen3-Next (reference §2.5): per-head [query | gate] projection, q/k
//! zero-centred RMSNorm, partial RoPE, GQA, causal + segment mask, sigmoid output gate. Whole sequences
//! (training, forward, prefill) attend with the configured kernel — dot product, or blockwise
//! (`attention=flash`, [`super::flash_attention`]); a decode step attends with dot product.

use super::flash_attention::{flash_attend, FlashBlocks};
use super::norm::RmsNormOffset;
use super::params::{F32Casts, Init, ParamBuilder};
use super::rope::apply_partial_rope;
use crate::config::{AttentionKernel, ModelConfig};
use crate::ir::{DType, Tensor};

/// MaxText's `DEFAULT_MASK_VALUE`: masked logits are replaced by this (not -inf, so a fully masked row
/// stays finite).
pub const MASK_VALUE: f64 = -0.7 * f32::MAX as f64;

pub struct GatedAttention {
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    q_norm: RmsNormOffset,
    k_norm: RmsNormOffset,
    num_kv_heads: i64,
    head_dim: i64,
    rotary_dim: i64,
    /// RoPE (`rope_min_timescale`, `rope_max_timescale`).
    timescales: (f64, f64),
    kernel: AttentionKernel,
    casts: F32Casts,
}

/// Projected attention inputs of a chunk of tokens.
pub struct Projected {
    /// [batch, seq, kv_heads, group, head_dim], scaled by 1/sqrt(head_dim), RoPE applied.
    pub q: Tensor,
    /// [batch, seq, kv_heads, head_dim], RoPE applied.
    pub k: Tensor,
    pub v: Tensor,
    /// [batch, seq, attn_out]
    pub gate: Tensor,
}

impl GatedAttention {
    pub fn new(cfg: &ModelConfig, pb: &mut ParamBuilder) -> GatedAttention {
        let (e, hq, hkv, dh) = (cfg.emb_dim as i64, cfg.num_query_heads as i64, cfg.num_kv_heads as i64, cfg.head_dim as i64);
        let eps = cfg.normalization_layer_epsilon;
        let std = 1.0 / (e as f64).sqrt();
        pb.scope("attention", |pb| {
            let kernel = |pb: &mut ParamBuilder, name: &str, dims: &[i64], axes: &[&'static str], logical: &[Option<&'static str>], std: f64| {
                pb.scope(name, |pb| pb.param("kernel", dims, axes, logical, Init::Normal { stddev: std }))
            };
            let wq = kernel(pb, "query", &[e, hq, 2 * dh], &["embed", "heads", "qg"], &[Some("embed"), Some("q_heads"), Some("kv")], std);
            let kv_logical = [Some("embed"), Some("kv_heads"), Some("kv_head_dim")];
            let wk = kernel(pb, "key", &[e, hkv, dh], &["embed", "kv_heads", "head_dim"], &kv_logical, std);
            let wv = kernel(pb, "value", &[e, hkv, dh], &["embed", "kv_heads", "head_dim"], &kv_logical, std);
            let out_std = 1.0 / ((hq * dh) as f64).sqrt();
            let wo = kernel(pb, "out", &[hq * dh, e], &["attn_out", "embed"], &[Some("mlp"), Some("embed")], out_std);
            let q_norm = RmsNormOffset::new(pb, "query_norm", dh, "head_dim", eps);
            let k_norm = RmsNormOffset::new(pb, "key_norm", dh, "head_dim", eps);
            GatedAttention {
                wq,
                wk,
                wv,
                wo,
                q_norm,
                k_norm,
                num_kv_heads: hkv,
                head_dim: dh,
                rotary_dim: cfg.rotary_dim() as i64,
                timescales: (cfg.rope.min_timescale, cfg.rope.max_timescale),
                kernel: pb.attention,
                casts: pb.precision,
            }
        })
    }

    /// x [batch, seq, embed], positions [batch, seq] -> q, k, v, gate.
    pub fn project(&self, x: &Tensor, positions: &Tensor) -> Projected {
        let dh = self.head_dim;
        let qg = x.dot(&self.wq, &["embed"]); // [batch, seq, heads, qg]
        let qg_axis = qg.axis("qg");
        let q = qg.slice_dim(qg_axis, 0, dh).rename("qg", "head_dim");
        let gate = qg.slice_dim(qg_axis, dh, dh).rename("qg", "head_dim").merge_axes(&["heads", "head_dim"], "attn_out");
        let k = x.dot(&self.wk, &["embed"]);
        let v = x.dot(&self.wv, &["embed"]);
        let q = apply_partial_rope(&self.q_norm.forward(&q), positions, self.rotary_dim, self.timescales);
        let k = apply_partial_rope(&self.k_norm.forward(&k), positions, self.rotary_dim, self.timescales);
        let q = q.mul_scalar(1.0 / (dh as f64).sqrt()).constrain(&["activation_batch_attn", "activation_length_attn", "activation_heads", "activation_kv"]);
        let kv_axes = ["activation_kv_batch", "activation_length_attn", "activation_kv_heads", "activation_kv_head_dim"];
        let (k, v) = (k.constrain(&kv_axes).checkpoint_name("key_proj"), v.constrain(&kv_axes).checkpoint_name("value_proj"));
        let q = q.checkpoint_name("query_proj");
        let group = q.dim("heads") / self.num_kv_heads;
        let q = q.split_axis("heads", &[("kv_heads", self.num_kv_heads), ("group", group)]);
        Projected { q, k, v, gate }
    }

    /// softmax(q kᵀ + mask) v. q [batch, seq, kv_heads, group, head_dim]; k, v [batch, kv_seq, kv_heads,
    /// head_dim]; mask [batch, seq, kv_seq] (pred, true = attend) -> [batch, seq, attn_out].
    pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, casts: F32Casts) -> Tensor {
        let scores = masked_scores(q, k, mask, casts.qk_product, casts.attention_logits);
        let max = scores.max_over(&["kv_seq"]);
        let e = scores.zip_named(&max, |s, m| (s - m).exp());
        let p = e.zip_named(&e.sum_over(&["kv_seq"]), |a, b| a / b).convert(q.dtype());
        merge_heads(&p.dot(v, &["kv_seq"]))
    }

    /// Attention of a whole sequence over itself (projected `p`; positions, segment ids [batch, seq]) with
    /// the configured kernel: causal by position within equal segments.
    fn attend_sequence(&self, p: &Projected, positions: &Tensor, segment_ids: Option<&Tensor>) -> Tensor {
        let (k, v) = (p.k.rename("seq", "kv_seq"), p.v.rename("seq", "kv_seq"));
        match self.kernel {
            AttentionKernel::Flash { block_q, block_kv, min_seq } if p.q.dim("seq") >= min_seq as i64 => {
                let blocks = FlashBlocks { q: block_q as i64, kv: block_kv as i64 };
                // MaxText's flash kernels name their output `context` (what `*_with_context` remat policies keep).
                flash_attend(&p.q, &k, &v, positions, segment_ids, blocks, self.casts.qk_product).checkpoint_name("context")
            }
            _ => Self::attend(&p.q, &k, &v, &causal_mask(positions, positions, segment_ids, segment_ids), self.casts),
        }
    }

    /// o [batch, seq, attn_out] gated by sigmoid(gate), projected to [batch, seq, embed].
    pub fn output(&self, o: &Tensor, gate: &Tensor) -> Tensor {
        (&o.checkpoint_name("attention_out") * &gate.sigmoid()).dot(&self.wo, &["attn_out"]).checkpoint_name("out_proj")
    }

    /// Full-sequence attention: x [batch, seq, embed], positions and segment ids [batch, seq] (segment 0 =
    /// padding). Causal by position within equal segments.
    pub fn forward(&self, x: &Tensor, positions: &Tensor, segment_ids: Option<&Tensor>) -> Tensor {
        let p = self.project(x, positions);
        self.output(&self.attend_sequence(&p, positions, segment_ids), &p.gate)
    }
}

impl GatedAttention {
    /// Prefill from position 0: full-sequence attention over the prompt (positions, segment ids
    /// [batch, seq]) that also writes k and v into the caches [batch, kv_seq, kv_heads, head_dim] at
    /// positions 0..seq.
    pub fn prefill(&self, x: &Tensor, positions: &Tensor, segment_ids: &Tensor, cache_k: &Tensor, cache_v: &Tensor) -> (Tensor, Tensor, Tensor) {
        let p = self.project(x, positions);
        let out = self.output(&self.attend_sequence(&p, positions, Some(segment_ids)), &p.gate);
        let g = x.graph();
        let zero = crate::ir::index_const(&g, 0);
        let starts = vec![zero; 4];
        let write = |cache: &Tensor, new: &Tensor| cache.dynamic_update_slice(&new.convert(cache.dtype()), &starts).with_axes(&cache.ty().axes);
        (out, write(cache_k, &p.k.rename("seq", "kv_seq")), write(cache_v, &p.v.rename("seq", "kv_seq")))
    }

    /// One decode step per row at `positions` [batch, 1]: writes this token's k, v into the caches at each
    /// row's own position, then attends over the cache up to that position.
    pub fn decode_step(&self, x: &Tensor, positions: &Tensor, cache_k: &Tensor, cache_v: &Tensor) -> (Tensor, Tensor, Tensor) {
        let p = self.project(x, positions);
        let (b, s) = (cache_k.dim("batch"), cache_k.dim("kv_seq"));
        let g = x.graph();
        let kv_pos = g.iota(DType::S32, &[b, s], 1).named(&["batch", "kv_seq"]);
        let here = positions.named(&["batch", "seq"]).reshape(&[b]).named(&["batch"]);
        let at = here.zip_named(&kv_pos, |h, k| k.eq_(h)); // [batch, kv_seq]
        let write = |cache: &Tensor, new: &Tensor| {
            let new = new.convert(cache.dtype()).reshape(&[b, new.dim("kv_heads"), new.dim("head_dim")]).named(&["batch", "kv_heads", "head_dim"]);
            let m = at.broadcast_like(&cache.ty().with_dtype(DType::Pred));
            m.select(&new.broadcast_like(cache.ty()), cache)
        };
        let (ck, cv) = (write(cache_k, &p.k), write(cache_v, &p.v));
        let mask = causal_mask(positions, &kv_pos, None, None);
        let out = self.output(&Self::attend(&p.q, &ck.convert(p.q.dtype()), &cv.convert(p.q.dtype()), &mask, self.casts), &p.gate);
        (out, ck, cv)
    }
}

/// q [batch, seq, kv_heads, group, head_dim] · k [batch, kv_seq, kv_heads, head_dim] with the logits where
/// `mask` [batch, seq, kv_seq] is false replaced by [`MASK_VALUE`]: [batch, kv_heads, seq, group, kv_seq].
/// The product runs in f32 when `f32_qk` (`float32_qk_product`), else in q's dtype; the scores are returned
/// in f32 when `f32_scores` (`float32_logits`), else in the product's dtype (MaxText's `apply_attention_dot`).
pub(super) fn masked_scores(q: &Tensor, k: &Tensor, mask: &Tensor, f32_qk: bool, f32_scores: bool) -> Tensor {
    let scores = if f32_qk { q.convert(DType::F32).dot(&k.convert(DType::F32), &["head_dim"]) } else { q.dot(k, &["head_dim"]) };
    let mask = mask.broadcast_like(&scores.ty().with_dtype(DType::Pred));
    let scores = mask.select(&scores, &scores.full_like(MASK_VALUE));
    if f32_scores {
        scores.convert(DType::F32)
    } else {
        scores
    }
}

/// Attention output per KV head and group [batch, kv_heads, seq, group, head_dim] -> [batch, seq, attn_out].
pub(super) fn merge_heads(o: &Tensor) -> Tensor {
    o.transpose_to(&["batch", "seq", "kv_heads", "group", "head_dim"])
        .merge_axes(&["kv_heads", "group"], "heads")
        .merge_axes(&["heads", "head_dim"], "attn_out")
}

/// [batch, seq, kv_seq] pred: kv position <= query position, and (when given) equal segment ids.
pub fn causal_mask(q_pos: &Tensor, kv_pos: &Tensor, q_seg: Option<&Tensor>, kv_seg: Option<&Tensor>) -> Tensor {
    let qp = q_pos.named(&["batch", "seq"]);
    let kp = kv_pos.named(&["batch", "kv_seq"]);
    let mut mask = qp.zip_named(&kp, |q, k| k.le(q));
    if let (Some(qs), Some(ks)) = (q_seg, kv_seg) {
        let same = qs.named(&["batch", "seq"]).zip_named(&ks.named(&["batch", "kv_seq"]), |a, b| a.eq_(b));
        mask = mask.binary(crate::ir::BinaryOp::And, &same);
    }
    mask
}
