//! Blockwise ("flash") attention with an online softmax: `attention=flash`. The result is the dot-product
//! attention's ([`GatedAttention::attend`](super::GatedAttention::attend)) — same causal + segment mask,
//! same masked-logit value, GQA by query groups — evaluated block by block, so that no [seq, seq] score
//! matrix exists. Plain IR ops, so every PJRT plugin compiles it.
//!
//! How it is laid out, and why:
//! - Query blocks of `block_q` rows are unrolled at trace time. Query block i attends only the key blocks up
//!   to its own diagonal: later keys are masked by causality, so (as MaxText's splash kernel does with its
//!   causal mask, which is by index) they are skipped, halving the work. This equals the dot product's
//!   positional mask whenever positions increase along every segment, as in every batch the programs build.
//! - The diagonal block, the one that needs the causal part of the mask, starts each query block's running
//!   state: every query attends at least itself there, so the running max starts finite.
//! - The full key blocks before the diagonal run in a counted loop (`fori_loop`) carrying the running max m,
//!   sum l and unnormalised output acc (all f32). A loop rather than unrolled blocks because of how the
//!   autodiff treats each: a loop keeps only its carries per iteration ([batch, block_q, heads, head_dim + 2]
//!   per key block) and recomputes the scores in the backward pass, whereas unrolled blocks would keep every
//!   block's scores alive until the backward pass — the whole [seq, seq] matrix again.
//! - A key range before the diagonal that is not a whole number of `block_kv` blocks ends with one shorter
//!   block, folded in after the loop.

use super::attention::{causal_mask, masked_scores, merge_heads};
use crate::ir::{index_const, DType, Tensor};

/// Query and key/value block lengths (MaxText's `sa_block_q`, `sa_block_kv`); each is capped at the
/// sequence length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlashBlocks {
    pub q: i64,
    pub kv: i64,
}

/// softmax(q kᵀ + mask) v, blockwise. q [batch, seq, kv_heads, group, head_dim] (scaled, RoPE applied);
/// k, v [batch, kv_seq, kv_heads, head_dim] of the same tokens (self-attention, kv_seq = seq); positions and
/// segment ids [batch, seq] -> [batch, seq, attn_out].
/// `f32_qk` (`float32_qk_product`) runs each block's q·k in f32; the running softmax is f32 regardless.
pub fn flash_attend(q: &Tensor, k: &Tensor, v: &Tensor, positions: &Tensor, segment_ids: Option<&Tensor>, blocks: FlashBlocks, f32_qk: bool) -> Tensor {
    let seq = q.dim("seq");
    assert_eq!(k.dim("kv_seq"), seq, "flash_attend is self-attention: q {:?}, k {:?}", q.ty(), k.ty());
    assert!(blocks.q >= 1 && blocks.kv >= 1, "flash_attend: blocks {blocks:?}");
    let (bq, bkv) = (blocks.q.min(seq), blocks.kv.min(seq));
    let g = q.graph();
    let positions = positions.named(&["batch", "seq"]);
    let segment_ids = segment_ids.map(|s| s.named(&["batch", "seq"]));
    let keys = Keys { k, v, positions: &positions, segment_ids: segment_ids.as_ref() };
    let mut outputs = Vec::new();
    for q0 in (0..seq).step_by(bq as usize) {
        let len = bq.min(seq - q0);
        let at = index_const(&g, q0);
        let query = Queries { q: seq_block(q, "seq", &at, len), side: keys.side(&at, len), f32_qk };
        let mut run = Running::start(&query.scores(&keys, &at, len), &keys.values(&at, len));
        let full = q0 / bkv;
        if full > 0 {
            let carries = g.fori_loop(0, full, &run.to_vec(), |bg, j, c| {
                let start = j * &index_const(bg, bkv);
                let s = query.scores(&keys, &start, bkv);
                Running::from_slice(c).update(&s, &keys.values(&start, bkv)).to_vec()
            });
            run = Running::from_slice(&carries);
        }
        let rest = q0 - full * bkv;
        if rest > 0 {
            let start = index_const(&g, full * bkv);
            run = run.update(&query.scores(&keys, &start, rest), &keys.values(&start, rest));
        }
        outputs.push(run.finish(q.dtype()));
    }
    let o = if outputs.len() == 1 { outputs.remove(0) } else { g.concatenate(&outputs, outputs[0].axis("seq")) };
    merge_heads(&o)
}

/// `len` entries of axis `axis` of `t` from `start` (an i32 scalar, constant or the loop's).
fn seq_block(t: &Tensor, axis: &str, start: &Tensor, len: i64) -> Tensor {
    let g = crate::ir::Graph::innermost(&[t, start]);
    let mut starts = vec![index_const(&g, 0); t.rank()];
    let i = t.axis(axis);
    starts[i] = start.clone();
    let mut sizes = t.dims().to_vec();
    sizes[i] = len;
    t.dynamic_slice(&starts, &sizes)
}

/// The mask inputs of a block of tokens: positions and segment ids [batch, block].
struct Side {
    positions: Tensor,
    segment_ids: Option<Tensor>,
}

/// The whole key side: keys and values [batch, kv_seq, kv_heads, head_dim], positions and segment ids.
struct Keys<'a> {
    k: &'a Tensor,
    v: &'a Tensor,
    positions: &'a Tensor,
    segment_ids: Option<&'a Tensor>,
}

impl Keys<'_> {
    fn values(&self, start: &Tensor, len: i64) -> Tensor {
        seq_block(self.v, "kv_seq", start, len)
    }

    fn side(&self, start: &Tensor, len: i64) -> Side {
        Side { positions: seq_block(self.positions, "seq", start, len), segment_ids: self.segment_ids.map(|s| seq_block(s, "seq", start, len)) }
    }
}

/// One query block: q [batch, block_q, kv_heads, group, head_dim] and its mask inputs.
struct Queries {
    q: Tensor,
    side: Side,
    f32_qk: bool,
}

impl Queries {
    /// Masked f32 scores [batch, kv_heads, seq, group, kv_seq] against keys `start..start + len`.
    fn scores(&self, keys: &Keys, start: &Tensor, len: i64) -> Tensor {
        let kv = keys.side(start, len);
        let mask = causal_mask(&self.side.positions, &kv.positions, self.side.segment_ids.as_ref(), kv.segment_ids.as_ref());
        masked_scores(&self.q, &seq_block(keys.k, "kv_seq", start, len), &mask, self.f32_qk, true)
    }
}

/// The online softmax state of a query block: running max m and sum l [batch, kv_heads, seq, group], and
/// the unnormalised output acc = Σ e^{s − m} v [batch, kv_heads, seq, group, head_dim], all f32.
struct Running {
    m: Tensor,
    l: Tensor,
    acc: Tensor,
}

impl Running {
    /// The state after the first key block: masked f32 scores `s` [.., kv_seq] and values `v`.
    fn start(s: &Tensor, v: &Tensor) -> Running {
        let m = s.max_over(&["kv_seq"]);
        let p = s.zip_named(&m, |s, m| (s - m).exp());
        Running { l: p.sum_over(&["kv_seq"]), acc: weighted_values(&p, v), m }
    }

    /// Folds in another key block; what was summed under the old max is rescaled by e^{m_old − m_new}.
    fn update(&self, s: &Tensor, v: &Tensor) -> Running {
        let m = self.m.max(&s.max_over(&["kv_seq"]));
        let rescale = (&self.m - &m).exp();
        let p = s.zip_named(&m, |s, m| (s - m).exp());
        let l = &(&self.l * &rescale) + &p.sum_over(&["kv_seq"]);
        let acc = &self.acc.zip_named(&rescale, |a, r| a * r) + &weighted_values(&p, v);
        Running { m, l, acc }
    }

    /// acc / l in `dtype`: [batch, kv_heads, seq, group, head_dim].
    fn finish(&self, dtype: DType) -> Tensor {
        self.acc.zip_named(&self.l, |a, l| a / l).convert(dtype)
    }

    fn to_vec(&self) -> Vec<Tensor> {
        vec![self.m.clone(), self.l.clone(), self.acc.clone()]
    }

    fn from_slice(c: &[Tensor]) -> Running {
        Running { m: c[0].clone(), l: c[1].clone(), acc: c[2].clone() }
    }
}

/// p v accumulated in f32: p [batch, kv_heads, seq, group, kv_seq] (cast to v's dtype first, as the dot
/// product casts its probabilities), v [batch, kv_seq, kv_heads, head_dim].
fn weighted_values(p: &Tensor, v: &Tensor) -> Tensor {
    p.convert(v.dtype()).dot_named(v, &["kv_seq"], Some(DType::F32))
}
