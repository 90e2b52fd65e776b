//! Partial rotary position embedding (reference §2.5): rotate-half over the first `rotary_dim` dims of
//! each head, the rest passes through.

use crate::ir::{DType, Tensor};

/// x [batch, seq, <heads>, head_dim], positions [batch, seq] (i32) -> x with RoPE on dims `0..rotary_dim`.
/// MaxText's timescales `min·(max/min)^(2i/rotary_dim)` (`rope_min_timescale`, `rope_max_timescale`; with
/// min 1 that is HF's `theta^(2i/rotary_dim)`), `θ_i(p) = p / timescale_i`; `out[i] = x1 cos − x2 sin`,
/// `out[i+half] = x2 cos + x1 sin`.
pub fn apply_partial_rope(x: &Tensor, positions: &Tensor, rotary_dim: i64, (min, max): (f64, f64)) -> Tensor {
    let head_dim = x.dim("head_dim");
    assert!(rotary_dim % 2 == 0 && rotary_dim <= head_dim, "rotary_dim {rotary_dim} for head_dim {head_dim}");
    let half = rotary_dim / 2;
    let g = x.graph();
    let timescale: Vec<f32> = (0..half).map(|i| (min * (max / min).powf(2.0 * i as f64 / rotary_dim as f64)) as f32).collect();
    let timescale = g.from_f32(&timescale, &[half]).named(&["rot"]);
    let pos = positions.convert(DType::F32).named(&["batch", "seq"]);
    let angle = pos.zip_named(&timescale, |p, t| p / t); // [batch, seq, rot]
    let (sin, cos) = (angle.unary(crate::ir::UnaryOp::Sin).convert(x.dtype()), angle.unary(crate::ir::UnaryOp::Cos).convert(x.dtype()));
    let part = |start: i64, len: i64| x.slice_dim(x.axis("head_dim"), start, len).rename("head_dim", "rot");
    let (x1, x2) = (part(0, half), part(half, half));
    // cos/sin axes are a subset of x1's, so the product keeps x1's axis order.
    let mul = |a: &Tensor, b: &Tensor| a.zip_named(b, |p, q| p * q);
    let o1 = &mul(&x1, &cos) - &mul(&x2, &sin);
    let o2 = &mul(&x2, &cos) + &mul(&x1, &sin);
    let dim = x.axis("head_dim");
    let mut parts = vec![o1.rename("rot", "head_dim"), o2.rename("rot", "head_dim")];
    if rotary_dim < head_dim {
        parts.push(x.slice_dim(dim, rotary_dim, head_dim - rotary_dim));
    }
    let out = g.concatenate(&parts, dim);
    out.with_axes(&x.ty().axes)
}
