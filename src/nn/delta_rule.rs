//! The gated delta rule (reference §2.4 step D), chunked WY form for prefill and training.
//!
//! Recurrence per (batch, head), state S ∈ R^{dk×dv}:
//!   S_t = e^{g_t} S_{t-1} + β_t k_t ⊗ (v_t − e^{g_t} S_{t-1}ᵀ k_t),   o_t = S_tᵀ q_t.
//! Chunks of C positions are processed with matmuls: within a chunk the rule is a unit-lower-triangular
//! system (solved with `triangular_solve`, as MaxText does, instead of HF's row loop), and a `while` loop
//! carries S across chunks, so trace size does not grow with the sequence length. Everything is f32.

use crate::ir::{index_const, DType, Graph, Tensor};

/// Named slice `[start, start+len)` of `axis`.
fn take(t: &Tensor, axis: &str, start: i64, len: i64) -> Tensor {
    t.slice_dim(t.axis(axis), start, len)
}

/// Chunk `n` (dynamic) of a tensor with a `chunk` axis; the axis is removed.
fn chunk_at(t: &Tensor, n: &Tensor) -> Tensor {
    t.index_axis(t.axis("chunk"), n)
}

/// [.., seq, ..] -> [.., chunk, c, ..] after zero-padding seq to a multiple of `c`.
fn to_chunks(t: &Tensor, c: i64) -> Tensor {
    let s = t.dim("seq");
    let n = (s + c - 1) / c;
    let t = if n * c == s {
        t.clone()
    } else {
        let mut high = vec![0; t.rank()];
        high[t.axis("seq")] = n * c - s;
        let zero = t.graph().scalar(0.0, t.dtype());
        t.pad(&zero, &vec![0; t.rank()], &high, &vec![0; t.rank()]).with_axes(&t.ty().axes)
    };
    t.split_axis("seq", &[("chunk", n), ("c", c)])
}

/// Lower-triangular masks [ci, cj] (strict and inclusive) as pred constants.
fn tril_masks(g: &Graph, c: i64) -> (Tensor, Tensor) {
    let i = g.iota(DType::S32, &[c, c], 0).named(&["ci", "cj"]);
    let j = g.iota(DType::S32, &[c, c], 1).named(&["ci", "cj"]);
    (i.gt(&j), i.ge(&j))
}

/// Segment structure of a packed batch, per chunk: which (i, j) pairs share a segment, which positions
/// continue the segment the previous chunk ended with (and so see the carried state), and which belong
/// to the chunk's last segment (and so feed the state carried out).
struct SegmentMasks {
    /// [batch, chunk, ci, cj]
    same: Tensor,
    /// [batch, chunk, c]
    carry_in: Tensor,
    /// [batch, chunk, c]
    in_last: Tensor,
    /// [batch, chunk]: the chunk's last position continues the incoming segment.
    carry_out: Tensor,
}

fn segment_masks(seg: &Tensor, chunk: i64) -> SegmentMasks {
    let seg = seg.named(&["batch", "seq"]);
    let g = seg.graph();
    let sc = to_chunks(&seg, chunk); // [batch, chunk, c]; padding positions get segment 0
    let same = sc.rename("c", "ci").zip_named(&sc.rename("c", "cj"), |a, b| a.eq_(b));
    // The segment at the position before each chunk starts (-1 before the first: never equal).
    let minus = g.scalar(-1.0, DType::S32);
    let n = sc.dim("chunk");
    let shifted = seg.pad(&minus, &[0, 1], &[0, n * chunk - seg.dim("seq") - 1], &[0, 0]).named(&["batch", "seq"]);
    let prev = to_chunks(&shifted, chunk);
    let prev = take(&prev, "c", 0, 1).reshape(&prev.dims()[..2]).named(&["batch", "chunk"]);
    let carry_in = sc.zip_named(&prev, |s, p| s.eq_(p));
    let last = take(&sc, "c", chunk - 1, 1).reshape(&sc.dims()[..2]).named(&["batch", "chunk"]);
    let in_last = sc.zip_named(&last, |s, l| s.eq_(l));
    let carry_out = take(&carry_in, "c", chunk - 1, 1).reshape(&sc.dims()[..2]).named(&["batch", "chunk"]);
    SegmentMasks { same, carry_in, in_last, carry_out }
}

/// `t` where `mask` (broadcast by name) holds, else 0.
fn keep_where(t: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.broadcast_like(&t.ty().with_dtype(DType::Pred));
    m.select(t, &t.full_like(0.0))
}

/// Chunked gated delta rule. q, k [batch, seq, heads, dk]; v [batch, seq, heads, dv]; g, beta
/// [batch, seq, heads]; q already scaled. `state` [batch, heads, dk, dv] (f32) or zeros.
/// `segments` [batch, seq] (packed training): the state is reset where a new segment starts, so a packed
/// row computes exactly what its documents would alone.
/// Returns o [batch, seq, heads, dv] (input dtype) and the final state [batch, heads, dk, dv] (f32).
#[allow(clippy::too_many_arguments)]
pub fn chunked_delta_rule(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: &Tensor,
    beta: &Tensor,
    state: Option<&Tensor>,
    segments: Option<&Tensor>,
    chunk: i64,
) -> (Tensor, Tensor) {
    let dtype = v.dtype();
    let seq = q.dim("seq");
    let f = |t: &Tensor, order: &[&'static str]| to_chunks(&t.convert(DType::F32).transpose_to(order), chunk);
    let q = f(q, &["batch", "heads", "seq", "dk"]);
    let k = f(k, &["batch", "heads", "seq", "dk"]);
    let v = f(v, &["batch", "heads", "seq", "dv"]);
    let beta = f(beta, &["batch", "heads", "seq"]);
    let g = f(g, &["batch", "heads", "seq"]);
    let graph = q.graph();
    let num_chunks = q.dim("chunk");

    // Within-chunk cumulative decay Γ and the pairwise decays e^{Γ_i − Γ_j} (masked before exp so the
    // upper triangle cannot overflow).
    let gc = g.cumsum(g.axis("c")); // [batch, heads, chunk, c]
    let (strict, incl) = tril_masks(&graph, chunk);
    let gi = gc.rename("c", "ci");
    let gj = gc.rename("c", "cj");
    let diff = gi.zip_named(&gj, |a, b| a - b); // [batch, heads, chunk, ci, cj]
    let segs = segments.map(|s| segment_masks(s, chunk));
    let masked_decay = |mask: &Tensor| {
        let mut m = mask.broadcast_like(&diff.ty().with_dtype(DType::Pred));
        if let Some(sm) = &segs {
            m = m.binary(crate::ir::BinaryOp::And, &sm.same.broadcast_like(m.ty()));
        }
        let e = m.select(&diff, &diff.full_like(0.0)).exp();
        (m.clone(), e)
    };
    let (strict_m, strict_decay) = masked_decay(&strict);
    let (incl_m, incl_decay) = masked_decay(&incl);

    let kb = k.zip_named(&beta, |a, b| a * b);
    let vb = v.zip_named(&beta, |a, b| a * b);
    // S_ij = β_i (k_i·k_j) e^{Γ_i−Γ_j} for i > j; the system (I + S) X = B is unit lower triangular.
    let kk = kb.rename("c", "ci").dot(&k.rename("c", "cj"), &["dk"]);
    let s = strict_m.select(&(&kk * &strict_decay), &kk.full_like(0.0));
    let solve = |b: &Tensor| s.triangular_solve(&b.rename("c", "ci"), true, true, true, false).rename("ci", "c");
    let u = solve(&vb); // [batch, heads, chunk, c, dv]
    let mut egc = gc.exp();
    if let Some(sm) = &segs {
        // Positions after a segment start within the chunk do not see the carried state.
        egc = keep_where(&egc, &sm.carry_in);
    }
    let w = solve(&kb.zip_named(&egc, |a, b| a * b)); // [batch, heads, chunk, c, dk]
    // Intra-chunk attention (q_i·k_j) e^{Γ_i−Γ_j} for i >= j.
    let qk = q.rename("c", "ci").dot(&k.rename("c", "cj"), &["dk"]);
    let intra = incl_m.select(&(&qk * &incl_decay), &qk.full_like(0.0));
    let qe = q.zip_named(&egc, |a, b| a * b);
    let g_last = take(&gc, "c", chunk - 1, 1).reshape(&gc.dims()[..3]).named(&["batch", "heads", "chunk"]);
    let mut kd = k.zip_named(&g_last.zip_named(&gc, |l, x| (l - x).exp()), |a, b| a * b);
    let mut e_last = g_last.exp();
    if let Some(sm) = &segs {
        // Only the chunk's last segment feeds the state carried out, and a segment start inside the chunk
        // drops the incoming state.
        kd = keep_where(&kd, &sm.in_last);
        e_last = keep_where(&e_last, &sm.carry_out);
    }

    let (b, h, dk, dv) = (q.dim("batch"), q.dim("heads"), q.dim("dk"), v.dim("dv"));
    let s0 = match state {
        Some(s) => s.convert(DType::F32).named(&["batch", "heads", "dk", "dv"]),
        None => graph.zeros(DType::F32, &[b, h, dk, dv]).named(&["batch", "heads", "dk", "dv"]),
    };
    // One chunk: V' = U − W S;  O = (q e^Γ) S + intra V';  S ← e^{Γ_last} S + (k e^{Γ_last−Γ})ᵀ V'.
    let step = |n: &Tensor, s: &Tensor| -> (Tensor, Tensor) {
        let un = chunk_at(&u, n);
        let wn = chunk_at(&w, n);
        let v_new = &un - &wn.dot(s, &["dk"]).transpose_to(&["batch", "heads", "c", "dv"]);
        let inter = chunk_at(&qe, n).dot(s, &["dk"]).transpose_to(&["batch", "heads", "c", "dv"]);
        let local = chunk_at(&intra, n).dot(&v_new.rename("c", "cj"), &["cj"]).rename("ci", "c");
        let o = &inter + &local;
        let carry = s.zip_named(&chunk_at(&e_last, n), |a, b| a * b);
        let update = chunk_at(&kd, n).dot(&v_new, &["c"]);
        (o, &carry + &update)
    };
    let (o, s_final) = if num_chunks == 1 {
        let n = index_const(&graph, 0);
        let (o, s) = step(&n, &s0);
        (o.split_axis("c", &[("chunk", 1), ("c", chunk)]).transpose_to(&["batch", "heads", "chunk", "c", "dv"]), s)
    } else {
        let out0 = graph.zeros(DType::F32, &[b, h, num_chunks, chunk, dv]).named(&["batch", "heads", "chunk", "c", "dv"]);
        let r = graph.fori_loop(0, num_chunks, &[out0, s0], |_, n, carries| {
            let (o, s) = step(n, &carries[1]);
            let out = carries[0].update_axis(carries[0].axis("chunk"), n, &o);
            vec![out, s.with_axes(&carries[1].ty().axes)]
        });
        (r[0].clone(), r[1].clone())
    };
    let o = o.merge_axes(&["chunk", "c"], "seq");
    let o = take(&o, "seq", 0, seq).transpose_to(&["batch", "seq", "heads", "dv"]).convert(dtype);
    (o, s_final)
}

/// One recurrent step (decode): q, k [batch, heads, dk] (q scaled), v [batch, heads, dv], g, beta
/// [batch, heads], state [batch, heads, dk, dv] f32. O(1) in the sequence length.
///   S ← e^g S;  δ = β (v − Sᵀk);  S ← S + k ⊗ δ;  o = Sᵀ q.
/// Returns o [batch, heads, dv] (v's dtype) and the new state.
pub fn recurrent_step(q: &Tensor, k: &Tensor, v: &Tensor, g: &Tensor, beta: &Tensor, state: &Tensor) -> (Tensor, Tensor) {
    let dtype = v.dtype();
    let f = |t: &Tensor| t.convert(DType::F32);
    let (q, k, v, g, beta) = (f(q), f(k), f(v), f(g), f(beta));
    let s = state.convert(DType::F32).named(&["batch", "heads", "dk", "dv"]);
    let s = s.zip_named(&g.exp(), |a, b| a * b);
    let kv_mem = s.dot(&k, &["dk"]); // [batch, heads, dv]
    let delta = (&v - &kv_mem).zip_named(&beta, |a, b| a * b);
    let s = &s + &k.zip_named(&delta, |a, b| a * b).transpose_to(&["batch", "heads", "dk", "dv"]);
    let o = s.dot(&q, &["dk"]).convert(dtype);
    (o, s)
}
