//! One VJP rule per op: given the op's inputs and outputs (replayed values) and the cotangents of its
//! outputs, the cotangents of its inputs. `None` is a zero cotangent: integer and index paths, comparisons
//! and random bits carry none. `while` is handled in `mod.rs` (it needs the recorded iterations).

use crate::ir::{
    BinaryOp, DType, DotDims, GatherDims, Op, Precision, RaggedKind, ReduceKind, ScatterDims, ScatterMode,
    Tensor, UnaryOp,
};

fn is_float(t: &Tensor) -> bool {
    t.dtype().is_float()
}

fn zeros_like(t: &Tensor) -> Tensor {
    t.graph().zeros(t.dtype(), t.dims())
}

/// Sums `ct` (shape `out`) back to `shape` for an operand broadcast with `dims` (broadcast_in_dim).
fn unbroadcast(ct: &Tensor, shape: &[i64], dims: &[i64]) -> Tensor {
    let out_rank = ct.rank() as i64;
    let mut reduce: Vec<i64> = (0..out_rank).filter(|d| !dims.contains(d)).collect();
    // Operand dims of size 1 broadcast to a larger size also sum.
    for (i, &d) in dims.iter().enumerate() {
        if shape[i] == 1 && ct.dims()[d as usize] != 1 {
            reduce.push(d);
        }
    }
    reduce.sort();
    let summed = if reduce.is_empty() { ct.clone() } else { ct.sum(&reduce) };
    summed.reshape(shape)
}

/// `ct` restricted to positions where `mask` holds (else 0).
fn masked(mask: &Tensor, ct: &Tensor) -> Tensor {
    mask.select(ct, &zeros_like(ct))
}

/// Broadcasts a reduced tensor (dims `reduced` removed) back to `shape`.
fn expand(t: &Tensor, shape: &[i64], reduced: &[i64]) -> Tensor {
    let kept: Vec<i64> = (0..shape.len() as i64).filter(|d| !reduced.contains(d)).collect();
    t.broadcast_in_dim(shape, &kept)
}

fn inverse_perm(perm: &[i64]) -> Vec<i64> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p as usize] = i as i64;
    }
    inv
}

/// Cotangent of the operand of dot_general, following the transposition of JAX's `_dot_general_transpose_*`:
/// contract `ct` with `other` over `other`'s free dims and batch over the batch dims, then put the dims back
/// in `this`'s order.
fn dot_transpose(ct: &Tensor, other: &Tensor, this_rank: usize, this_batch: &[i64], this_contract: &[i64], other_batch: &[i64], other_contract: &[i64], this_is_lhs: bool, this_dtype: DType) -> Tensor {
    let nb = this_batch.len();
    let this_free: Vec<i64> = (0..this_rank as i64).filter(|d| !this_batch.contains(d) && !this_contract.contains(d)).collect();
    let other_free: Vec<i64> = (0..other.rank() as i64).filter(|d| !other_batch.contains(d) && !other_contract.contains(d)).collect();
    // Positions of the other operand's free dims inside ct: after batch (and after this's free dims if lhs).
    let ct_other_free: Vec<i64> = if this_is_lhs {
        (0..other_free.len()).map(|j| (nb + this_free.len() + j) as i64).collect()
    } else {
        (0..other_free.len()).map(|j| (nb + j) as i64).collect()
    };
    let dims = DotDims {
        lhs_batch: (0..nb as i64).collect(),
        rhs_batch: other_batch.to_vec(),
        lhs_contract: ct_other_free,
        rhs_contract: other_free.clone(),
    };
    let ct = ct.convert(other.dtype());
    // Result: [batch, this_free (ct's remaining), other's contract dims in increasing order].
    let r = ct.dot_general(other, dims, Precision::Default, None);
    let mut other_contract_sorted: Vec<i64> = other_contract.to_vec();
    other_contract_sorted.sort();
    let mut perm = vec![0i64; this_rank];
    for (k, &d) in this_batch.iter().enumerate() {
        perm[d as usize] = k as i64;
    }
    for (j, &d) in this_free.iter().enumerate() {
        perm[d as usize] = (nb + j) as i64;
    }
    for (m, &d) in this_contract.iter().enumerate() {
        let pos = other_contract_sorted.iter().position(|&x| x == other_contract[m]).unwrap();
        perm[d as usize] = (nb + this_free.len() + pos) as i64;
    }
    r.transpose(&perm).convert(this_dtype)
}

/// One-hot [.., n] of `idx` [..] over `n` as `dtype` (1 where idx == position).
fn one_hot(idx: &Tensor, n: i64, dtype: DType) -> Tensor {
    let g = idx.graph();
    let mut dims = idx.dims().to_vec();
    dims.push(n);
    let r = dims.len() as i64;
    let iota = g.iota(idx.dtype(), &dims, dims.len() - 1);
    let b = idx.broadcast_in_dim(&dims, &(0..r - 1).collect::<Vec<_>>());
    let hit = iota.eq_(&b);
    hit.select(&g.full(1.0, dtype, &dims), &g.zeros(dtype, &dims))
}

/// Cotangent of `x` [.., n] from the cotangent of values picked at `idx` [.., k] along the last dim.
fn unpick_last(ct: &Tensor, idx: &Tensor, n: i64) -> Tensor {
    let oh = one_hot(idx, n, ct.dtype()); // [.., k, n]
    let r = ct.rank();
    let ctb = ct.broadcast_in_dim(oh.dims(), &(0..r as i64).collect::<Vec<_>>());
    (&oh * &ctb).sum(&[r as i64 - 1])
}

/// The VJP of `op` (every op but `while`). `ins`/`outs` are the replayed values.
pub fn vjp(op: &Op, ins: &[Tensor], outs: &[Tensor], cts: &[Option<Tensor>]) -> Vec<Option<Tensor>> {
    let none = || vec![None; ins.len()];
    let Some(ct) = cts.first().cloned().flatten().or_else(|| cts.iter().flatten().next().cloned()) else { return none() };
    let y = &outs[0];
    match op {
        Op::Parameter(_) | Op::Capture(_) | Op::Constant(_) | Op::Iota { .. } | Op::Compare(_) | Op::BitcastConvert | Op::RngBitGenerator { .. } => none(),
        Op::Unary(u) => {
            let x = &ins[0];
            if !is_float(x) {
                return none();
            }
            let one = |t: &Tensor| t.full_like(1.0);
            let d = match u {
                UnaryOp::Neg => -&ct,
                UnaryOp::Abs => &ct * &x.unary(UnaryOp::Sign),
                UnaryOp::Exp => &ct * y,
                UnaryOp::Expm1 => &ct * &(y + &one(y)),
                UnaryOp::Log => &ct / x,
                UnaryOp::Log1p => &ct / &(x + &one(x)),
                UnaryOp::Sqrt => &ct / &y.mul_scalar(2.0),
                UnaryOp::Rsqrt => (&ct * &(y * &(y * y))).mul_scalar(-0.5),
                UnaryOp::Tanh => &ct * &(&one(y) - &(y * y)),
                UnaryOp::Logistic => &ct * &(y * &(&one(y) - y)),
                UnaryOp::Sin => &ct * &x.unary(UnaryOp::Cos),
                UnaryOp::Cos => -&(&ct * &x.unary(UnaryOp::Sin)),
                UnaryOp::Sign | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::RoundNearestEven | UnaryOp::Not | UnaryOp::IsFinite => return none(),
            };
            vec![Some(d)]
        }
        Op::Binary(b) => {
            let (a, c) = (&ins[0], &ins[1]);
            if !is_float(a) {
                return none();
            }
            let (da, db) = match b {
                BinaryOp::Add => (ct.clone(), ct.clone()),
                BinaryOp::Sub => (ct.clone(), -&ct),
                BinaryOp::Mul => (&ct * c, &ct * a),
                BinaryOp::Div => (&ct / c, -&(&ct * &(y / c))),
                BinaryOp::Max | BinaryOp::Min => {
                    // Ties split the cotangent evenly (as JAX does).
                    let (win_a, win_b) = if *b == BinaryOp::Max { (a.gt(c), a.lt(c)) } else { (a.lt(c), a.gt(c)) };
                    let tie = a.eq_(c);
                    let half = masked(&tie, &ct.mul_scalar(0.5));
                    (&masked(&win_a, &ct) + &half, &masked(&win_b, &ct) + &half)
                }
                BinaryOp::Pow => {
                    let da = &ct * &(c * &a.pow(&(c - &c.full_like(1.0))));
                    let safe = a.gt(&a.full_like(0.0));
                    let loga = safe.select(&a.log(), &zeros_like(a));
                    (da, &ct * &(y * &loga))
                }
                BinaryOp::Rem => {
                    let q = (a / c).unary(UnaryOp::Sign) * (a / c).abs().unary(UnaryOp::Floor);
                    (ct.clone(), -&(&ct * &q))
                }
                BinaryOp::Atan2 => {
                    let den = &(a * a) + &(c * c);
                    (&ct * &(c / &den), -&(&ct * &(a / &den)))
                }
                _ => return none(),
            };
            vec![Some(da), Some(db)]
        }
        Op::Select => {
            let p = &ins[0];
            let pb = if p.rank() == 0 { p.broadcast_to(ct.dims()) } else { p.clone() };
            vec![None, Some(masked(&pb, &ct)), Some(pb.select(&zeros_like(&ct), &ct))]
        }
        Op::Clamp => {
            let (lo, x, hi) = (&ins[0], &ins[1], &ins[2]);
            if !is_float(x) {
                return none();
            }
            let b = |t: &Tensor| if t.rank() == 0 { t.broadcast_to(x.dims()) } else { t.clone() };
            let (lo_b, hi_b) = (b(lo), b(hi));
            let inside = x.ge(&lo_b).binary(BinaryOp::And, &x.le(&hi_b));
            let to_bound = |mask: Tensor, bound: &Tensor| {
                let c = masked(&mask, &ct);
                if bound.rank() == 0 { c.sum(&(0..c.rank() as i64).collect::<Vec<_>>()) } else { c }
            };
            vec![Some(to_bound(x.lt(&lo_b), lo)), Some(masked(&inside, &ct)), Some(to_bound(x.gt(&hi_b), hi))]
        }
        Op::Convert => {
            let x = &ins[0];
            if !is_float(x) || !is_float(y) {
                return none();
            }
            vec![Some(ct.convert(x.dtype()))]
        }
        Op::BroadcastInDim { dims } => vec![Some(unbroadcast(&ct, ins[0].dims(), dims))],
        Op::Reshape => vec![Some(ct.reshape(ins[0].dims()))],
        Op::Transpose { perm } => vec![Some(ct.transpose(&inverse_perm(perm)))],
        Op::Slice { start, strides, .. } => {
            let x = &ins[0];
            let low = start.clone();
            let interior: Vec<i64> = strides.iter().map(|s| s - 1).collect();
            let high: Vec<i64> = (0..x.rank())
                .map(|i| {
                    let n = ct.dims()[i];
                    let end = if n == 0 { start[i] } else { start[i] + (n - 1) * strides[i] + 1 };
                    x.dims()[i] - end
                })
                .collect();
            let zero = x.graph().scalar(0.0, ct.dtype());
            vec![Some(ct.pad(&zero, &low, &high, &interior))]
        }
        Op::DynamicSlice { .. } => {
            let x = &ins[0];
            let mut v = vec![Some(zeros_like(x).dynamic_update_slice(&ct, &ins[1..]))];
            v.extend(ins[1..].iter().map(|_| None));
            v
        }
        Op::DynamicUpdateSlice => {
            let (upd, starts) = (&ins[1], &ins[2..]);
            let d_op = ct.dynamic_update_slice(&zeros_like(upd), starts);
            let d_upd = ct.dynamic_slice(starts, upd.dims());
            let mut v = vec![Some(d_op), Some(d_upd)];
            v.extend(starts.iter().map(|_| None));
            v
        }
        Op::Concatenate { dim } => {
            let d = *dim as usize;
            let mut off = 0;
            ins.iter()
                .map(|x| {
                    let n = x.dims()[d];
                    let part = ct.slice_dim(d, off, n);
                    off += n;
                    Some(part)
                })
                .collect()
        }
        Op::Pad { low, high, interior } => {
            let x = &ins[0];
            assert!(low.iter().chain(high).all(|&v| v >= 0), "autodiff: pad with negative edges is not differentiable yet");
            let limit: Vec<i64> = (0..x.rank()).map(|i| ct.dims()[i] - high[i]).collect();
            let strides: Vec<i64> = interior.iter().map(|s| s + 1).collect();
            let dx = ct.slice(low, &limit, &strides);
            let all: Vec<i64> = (0..ct.rank() as i64).collect();
            let dv = if is_float(&ins[1]) { Some(&ct.sum(&all) - &dx.sum(&all)) } else { None };
            vec![Some(dx), dv]
        }
        Op::Gather(gd) => {
            let x = &ins[0];
            let sd = ScatterDims {
                update_window_dims: gd.offset_dims.clone(),
                inserted_window_dims: gd.collapsed_slice_dims.clone(),
                input_batching_dims: gd.operand_batching_dims.clone(),
                scatter_indices_batching_dims: gd.start_indices_batching_dims.clone(),
                scatter_dims_to_operand_dims: gd.start_index_map.clone(),
                index_vector_dim: gd.index_vector_dim,
            };
            vec![Some(zeros_like(x).scatter(&ins[1], &ct, sd, ScatterMode::Add)), None]
        }
        Op::Scatter { dims: sd, mode } => {
            let (x, idx, upd) = (&ins[0], &ins[1], &ins[2]);
            let mut window = sd.update_window_dims.iter().map(|&d| upd.dims()[d as usize]);
            let slice_sizes: Vec<i64> = (0..x.rank() as i64)
                .map(|d| if sd.inserted_window_dims.contains(&d) || sd.input_batching_dims.contains(&d) { 1 } else { window.next().unwrap() })
                .collect();
            let gd = GatherDims {
                offset_dims: sd.update_window_dims.clone(),
                collapsed_slice_dims: sd.inserted_window_dims.clone(),
                operand_batching_dims: sd.input_batching_dims.clone(),
                start_indices_batching_dims: sd.scatter_indices_batching_dims.clone(),
                start_index_map: sd.scatter_dims_to_operand_dims.clone(),
                index_vector_dim: sd.index_vector_dim,
                slice_sizes,
            };
            let d_upd = ct.gather(idx, gd);
            let d_x = match mode {
                ScatterMode::Add => ct.clone(),
                ScatterMode::Replace => ct.scatter(idx, &zeros_like(upd), sd.clone(), ScatterMode::Replace),
            };
            vec![Some(d_x), None, Some(d_upd)]
        }
        Op::DotGeneral { dims, .. } => {
            let (l, r) = (&ins[0], &ins[1]);
            if !is_float(l) {
                return none();
            }
            let dl = dot_transpose(&ct, r, l.rank(), &dims.lhs_batch, &dims.lhs_contract, &dims.rhs_batch, &dims.rhs_contract, true, l.dtype());
            let dr = dot_transpose(&ct, l, r.rank(), &dims.rhs_batch, &dims.rhs_contract, &dims.lhs_batch, &dims.lhs_contract, false, r.dtype());
            vec![Some(dl), Some(dr)]
        }
        Op::Reduce { kind, dims } => {
            let x = &ins[0];
            if !is_float(x) {
                return none();
            }
            let ctb = expand(&ct, x.dims(), dims);
            let d = match kind {
                ReduceKind::Sum => ctb,
                ReduceKind::Max | ReduceKind::Min => {
                    // Shared evenly among the positions that attain the extremum.
                    let hit = x.eq_(&expand(y, x.dims(), dims));
                    let ones = hit.select(&x.full_like(1.0), &zeros_like(x));
                    let count = expand(&ones.sum(dims), x.dims(), dims);
                    masked(&hit, &(&ctb / &count))
                }
                ReduceKind::Prod => &ctb * &(&expand(y, x.dims(), dims) / x),
                ReduceKind::And | ReduceKind::Or => return none(),
            };
            vec![Some(d)]
        }
        Op::ArgMax { dim, .. } => {
            let x = &ins[0];
            let Some(ct) = cts[0].clone() else { return none() };
            if !is_float(x) {
                return none();
            }
            let g = x.graph();
            let iota = g.iota(outs[1].dtype(), x.dims(), *dim as usize);
            let at = iota.eq_(&expand(&outs[1], x.dims(), &[*dim]));
            vec![Some(masked(&at, &expand(&ct, x.dims(), &[*dim])))]
        }
        Op::Cumulative { kind, dim, reverse, exclusive } => {
            assert_eq!(*kind, ReduceKind::Sum, "autodiff: only cumulative sums are differentiable");
            vec![Some(ct.cumulative(ReduceKind::Sum, *dim as usize, !reverse, *exclusive))]
        }
        Op::Sort { dim, descending, stable } => {
            // Gradient through the sorted values of every float operand: recover the permutation by sorting
            // an iota alongside the keys, then route each cotangent back with a one-hot contraction.
            let d = *dim as usize;
            let g = ins[0].graph();
            let iota = g.iota(DType::S32, ins[0].dims(), d);
            let mut ops = vec![ins[0].clone()];
            ops.extend(ins[1..].iter().cloned());
            ops.push(iota);
            let perm = g.sort(&ops, d, *descending, *stable).pop().unwrap();
            let r = ins[0].rank();
            let mut to_last: Vec<i64> = (0..r as i64).filter(|&i| i != *dim).collect();
            to_last.push(*dim);
            let back = inverse_perm(&to_last);
            let n = ins[0].dims()[d];
            ins.iter()
                .zip(cts)
                .map(|(x, c)| {
                    let c = c.as_ref()?;
                    if !is_float(x) {
                        return None;
                    }
                    Some(unpick_last(&c.transpose(&to_last), &perm.transpose(&to_last), n).transpose(&back))
                })
                .collect()
        }
        Op::TopK { .. } => {
            let x = &ins[0];
            let Some(ct) = cts[0].clone() else { return none() };
            if !is_float(x) {
                return none();
            }
            vec![Some(unpick_last(&ct, &outs[1], x.dims()[x.rank() - 1]))]
        }
        Op::ShardingConstraint(s) => vec![Some(ct.with_sharding(s.clone()))],
        Op::OptimizationBarrier => cts.to_vec(),
        Op::CheckpointName(_) => vec![Some(ct)],
        Op::TriangularSolve { left_side, lower, unit_diagonal, transpose_a } => {
            assert!(*left_side && !*transpose_a, "autodiff: only left-side, non-transposed triangular_solve is differentiable");
            let a = &ins[0];
            // x = A⁻¹ b:  db = A⁻ᵀ ct;  dA = −db xᵀ on A's triangle.
            let db = a.triangular_solve(&ct, true, *lower, *unit_diagonal, true);
            let r = a.rank() as i64;
            let batch: Vec<i64> = (0..r - 2).collect();
            let dims = DotDims { lhs_batch: batch.clone(), rhs_batch: batch, lhs_contract: vec![r - 1], rhs_contract: vec![r - 1] };
            let full = db.dot_general(y, dims, Precision::Default, None).neg();
            let g = a.graph();
            let i = g.iota(DType::S32, a.dims(), a.rank() - 2);
            let j = g.iota(DType::S32, a.dims(), a.rank() - 1);
            let tri = match (*lower, *unit_diagonal) {
                (true, true) => i.gt(&j),
                (true, false) => i.ge(&j),
                (false, true) => i.lt(&j),
                (false, false) => i.le(&j),
            };
            vec![Some(masked(&tri, &full)), Some(db)]
        }
        Op::RaggedDot { kind: RaggedKind::Rows, spec } => {
            let (x, w, sizes) = (&ins[0], &ins[1], &ins[2]);
            // y = x w[g]:  dx = ct w[g]ᵀ;  dw[g] = Σ over the group's rows of every shard of xᵀ ct.
            let dx = ct.ragged_dot_transposed(w, sizes, spec);
            let dw = x.ragged_dot_weight_grad(&ct, sizes, spec);
            vec![Some(dx), Some(dw), None]
        }
        Op::RaggedDot { kind, .. } => panic!("autodiff: ragged_dot {kind:?} (a gradient itself) is not differentiated again"),
        Op::While { .. } => unreachable!("while is differentiated in autodiff::mod"),
    }
}
