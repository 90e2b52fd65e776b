//! Sampling on device (MaxText's `decode_sampling_*` keys): greedy, temperature-weighted, top-k, nucleus
//! and composite (top-k, then top-p, then weighted). Random choices use the Gumbel-max trick on bits from
//! `rng_bit_generator` (THREE_FRY, so results do not depend on the plugin's default algorithm).

use crate::config::{DecodeConfig, SamplingStrategy};
use crate::ir::{DType, RngAlgorithm, Tensor, TensorType};

/// Gumbel(0, 1) noise of `dims` from `rng` (u64[2]); returns (noise f32, new state).
fn gumbel(rng: &Tensor, dims: &[i64]) -> (Tensor, Tensor) {
    let g = rng.graph();
    let (state, bits) = g.rng_bit_generator(rng, RngAlgorithm::ThreeFry, TensorType::new(DType::U32, dims));
    // 23 random mantissa bits under exponent 0 give a float in [1, 2); minus one is uniform in [0, 1).
    let nine = g.full(9.0, DType::U32, dims);
    let one_bits = g.full(0x3f80_0000u32 as f64, DType::U32, dims);
    let mant = bits.binary(crate::ir::BinaryOp::ShiftRightLogical, &nine).binary(crate::ir::BinaryOp::Or, &one_bits);
    let u = mant.bitcast(DType::F32).add_scalar(-1.0);
    let u = u.max(&u.full_like(f32::MIN_POSITIVE as f64));
    (u.log().neg().log().neg(), state)
}

/// Index of the max of `scores` [batch, n] as i32 [batch].
fn argmax_last(scores: &Tensor) -> Tensor {
    scores.argmax(scores.rank() - 1, DType::S32).1
}

/// Picks per row from logits [batch, vocab] (f32) -> (token [batch] i32, new rng state).
pub fn sample(cfg: &DecodeConfig, logits: &Tensor, rng: &Tensor) -> (Tensor, Tensor) {
    let logits = logits.named(&["batch", "vocab"]);
    let t = cfg.temperature.max(1e-6);
    let g = logits.graph();
    let (batch, vocab) = (logits.dims()[0], logits.dims()[1]);
    let (use_topk, use_nucleus) = match cfg.sampling_strategy {
        SamplingStrategy::Greedy => return (argmax_last(&logits), rng.clone()),
        SamplingStrategy::Weighted => (false, false),
        SamplingStrategy::TopK => (true, false),
        SamplingStrategy::Nucleus => (false, true),
        SamplingStrategy::Composite => (cfg.top_k > 0, cfg.nucleus_p > 0.0),
    };
    // Candidates (scores, their vocab ids), largest first when a cut is applied.
    let (mut scores, ids) = if use_topk {
        let k = (cfg.top_k.max(1) as i64).min(vocab);
        let (v, i) = logits.top_k(k);
        (v.mul_scalar(1.0 / t), Some(i))
    } else if use_nucleus {
        let iota = g.iota(DType::S32, &[batch, vocab], 1).named(&["batch", "vocab"]);
        let s = g.sort(&[logits.clone(), iota], 1, true, true);
        (s[0].mul_scalar(1.0 / t), Some(s[1].clone()))
    } else {
        (logits.mul_scalar(1.0 / t), None)
    };
    if use_nucleus {
        // Keep the smallest prefix whose probability reaches p (the top candidate always stays).
        let n = scores.dims()[1];
        let m = scores.reduce_max(&[1]).broadcast_in_dim(&[batch, n], &[0]);
        let e = (&scores - &m).exp();
        let p = &e / &e.sum(&[1]).broadcast_in_dim(&[batch, n], &[0]);
        let before = &p.cumsum(1) - &p;
        let keep = before.lt(&before.full_like(cfg.nucleus_p));
        scores = keep.select(&scores, &scores.full_like(f64::NEG_INFINITY));
    }
    let (noise, state) = gumbel(rng, scores.dims());
    let pick = argmax_last(&(&scores + &noise));
    let token = match ids {
        None => pick,
        Some(ids) => {
            // ids[b, pick[b]]: select the picked column, then reduce it away.
            let n = ids.dims()[1];
            let pos = g.iota(DType::S32, &[batch, n], 1);
            let hit = pos.eq_(&pick.broadcast_in_dim(&[batch, n], &[0]));
            let chosen = hit.select(&ids, &ids.full_like(-1.0));
            chosen.reduce_max(&[1])
        }
    };
    (token, state)
}
