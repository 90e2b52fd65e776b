//! Finite-difference checks of every VJP rule (src/autodiff/rules.rs) and of counted loops, on the real XLA
//! CPU plugin, in f64.
//!
//! Each check traces a small f(params) -> scalar (mostly `sum(op(x) * fixed random weights)`), takes the
//! analytic gradient from `value_and_grad` and compares every element of every float input with the central
//! difference `(f(x + h e_j) - f(x - h e_j)) / 2h`, h = 1e-6. In f64 the difference is accurate to about
//! `eps * |f| / h + h² |f'''|` ≈ 1e-9 here, so the tolerance is `|fd - grad| <= 1e-7 * (|grad| + 1)`
//! (`F64`); the f64 -> f32 -> f64 chain uses h = 1e-2 and `1e-4 * (|grad| + 1)`. Inputs are chosen away from
//! kinks (ties of max/min, clamp bounds, integer points of floor/rem). Integer and predicate inputs (indices,
//! starts, select predicates) must come back with an all-zero gradient of their own type.
//!
//! Each function is compiled twice (forward and value_and_grad) and re-run with perturbed inputs.

mod common;

use common::{data, run_program, trace, wsum, Tol};
use maxtext::autodiff::value_and_grad;
use maxtext::ir::{
    BinaryOp, DType, DotDims, GatherDims, Graph, Precision, ReduceKind, ScatterDims, ScatterMode,
    Sharding, Tensor, TensorType, UnaryOp,
};
use maxtext::runtime::HostTensor;

/// f64 checks: `|fd - grad| <= 1e-7 * (|grad| + 1)` (observed worst: 9e-10).
const F64: Tol = Tol { rtol: 1e-7, atol: 1e-7 };
const H: f64 = 1e-6;

// ---------------------------------------------------------------- harness

/// An f64 input of `dims` with values uniform in `[lo, hi)`.
fn input(dims: &[i64], seed: u64, lo: f32, hi: f32) -> HostTensor {
    let n = dims.iter().product::<i64>() as usize;
    let v: Vec<f64> = data(n, seed, lo, hi).iter().map(|x| *x as f64).collect();
    HostTensor::from_f64(&v, dims)
}

fn f64s(v: &[f64], dims: &[i64]) -> HostTensor {
    HostTensor::from_f64(v, dims)
}

fn i32s(v: &[i32], dims: &[i64]) -> HostTensor {
    HostTensor::from_i32(v, dims)
}



/// `sin` has no named method on `Tensor`; the tests use it as a cheap smooth non-linearity.
trait Sin {
    fn sin(&self) -> Tensor;
}

impl Sin for Tensor {
    fn sin(&self) -> Tensor {
        self.unary(UnaryOp::Sin)
    }
}

fn all(t: &Tensor) -> Vec<i64> {
    (0..t.rank() as i64).collect()
}

/// Compares the analytic gradient of `f` (one scalar result) with central differences of step `h` for every
/// element of every float input; integer / pred inputs must get an all-zero gradient of their own type.
/// Returns the worst `|fd - grad| / (|grad| + 1)`.
fn check(name: &str, inputs: &[HostTensor], tol: Tol, h: f64, f: impl FnOnce(&Graph, &[Tensor]) -> Tensor) -> f64 {
    let types: Vec<TensorType> = inputs.iter().map(|x| TensorType::new(x.dtype, &x.dims)).collect();
    let func = trace(&types, |g, a| vec![f(g, a)]);
    let wrt: Vec<usize> = (0..inputs.len()).collect();
    let grad_prog = maxtext::ir::Program::new(&format!("{name}_grad"), value_and_grad(&func, &wrt));
    let fwd = maxtext::ir::Program::new(name, func);
    let out = run_program(&grad_prog, inputs);
    assert_eq!(out.len(), 1 + inputs.len(), "{name}: value_and_grad results");
    let loss = |xs: &[HostTensor]| run_program(&fwd, xs)[0].to_f64()[0];
    let l0 = loss(inputs);
    let lv = out[0].to_f64()[0];
    assert!((lv - l0).abs() <= 1e-12 * (1.0 + l0.abs()), "{name}: value_and_grad loss {lv} vs forward {l0}");
    let mut worst = 0f64;
    for (i, x) in inputs.iter().enumerate() {
        let g = &out[1 + i];
        assert_eq!((g.dtype, &g.dims), (x.dtype, &x.dims), "{name}: gradient {i} has the wrong type");
        if !x.dtype.is_float() {
            assert!(g.to_f64().iter().all(|v| *v == 0.0), "{name}: non-float input {i} got a gradient {:?}", g.to_f64());
            continue;
        }
        assert_eq!(x.dtype, DType::F64, "{name}: float inputs are f64 here");
        let an = g.to_f64();
        let base = x.to_f64();
        for j in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[j] += d;
                let mut xs = inputs.to_vec();
                xs[i] = HostTensor::from_f64(&v, &x.dims);
                loss(&xs)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            let err = (fd - an[j]).abs();
            worst = worst.max(err / (an[j].abs() + 1.0));
            assert!(
                err <= tol.atol + tol.rtol * an[j].abs(),
                "{name}: d/d input{i}[{j}]: grad {} vs finite difference {fd} (err {err:e})\n grad: {an:?}",
                an[j]
            );
        }
    }
    eprintln!("{name:<40} worst |fd-grad|/(|grad|+1) = {worst:.2e}");
    worst
}

fn check64(name: &str, inputs: &[HostTensor], f: impl FnOnce(&Graph, &[Tensor]) -> Tensor) -> f64 {
    check(name, inputs, F64, H, f)
}

// ---------------------------------------------------------------- elementwise

#[test]
fn unary_ops() {
    use UnaryOp::*;
    let d = [2, 3];
    // (op, lo, hi): inputs inside the domain, away from kinks.
    let smooth = [
        (Neg, -2.0, 2.0),
        (Exp, -2.0, 2.0),
        (Expm1, -2.0, 2.0),
        (Log, 0.3, 3.0),
        (Log1p, -0.6, 2.0),
        (Sqrt, 0.3, 3.0),
        (Rsqrt, 0.3, 3.0),
        (Tanh, -2.0, 2.0),
        (Logistic, -3.0, 3.0),
        (Sin, -3.0, 3.0),
        (Cos, -3.0, 3.0),
    ];
    for (k, (op, lo, hi)) in smooth.into_iter().enumerate() {
        check64(&format!("unary_{op:?}"), &[input(&d, 10 + k as u64, lo, hi)], |_, a| wsum(&a[0].unary(op), 1));
    }
    // |x| away from 0, both signs.
    let x: Vec<f64> = data(6, 30, 0.2, 2.0).iter().zip([1.0, -1.0, -1.0, 1.0, -1.0, 1.0]).map(|(v, s)| *v as f64 * s).collect();
    check64("unary_Abs", &[f64s(&x, &d)], |_, a| wsum(&a[0].abs(), 2));
    // Piecewise constant ops have zero derivative away from their jumps (k + [0.1, 0.4]); x² keeps a
    // non-zero gradient flowing next to them.
    let x: Vec<f64> = data(6, 31, 0.1, 0.4).iter().zip([-2.0, -1.0, 0.0, 1.0, 2.0, -3.0]).map(|(f, k)| k + *f as f64).collect();
    for op in [Sign, Floor, Ceil, RoundNearestEven] {
        check64(&format!("unary_{op:?}"), &[f64s(&x, &d)], |_, a| &wsum(&a[0].unary(op), 3) + &wsum(&(&a[0] * &a[0]), 4));
    }
}

#[test]
fn binary_ops() {
    let d = [2, 3];
    let (a, b) = (input(&d, 40, -2.0, 2.0), input(&d, 41, -2.0, 2.0));
    let pos = input(&d, 42, 0.5, 2.0);
    let nonzero: Vec<f64> = data(6, 43, 0.5, 2.0).iter().zip([1.0, -1.0, 1.0, -1.0, -1.0, 1.0]).map(|(v, s)| *v as f64 * s).collect();
    let nonzero = f64s(&nonzero, &d);
    check64("binary_Add", &[a.clone(), b.clone()], |_, x| wsum(&(&x[0] + &x[1]), 1));
    check64("binary_Sub", &[a.clone(), b.clone()], |_, x| wsum(&(&x[0] - &x[1]), 2));
    check64("binary_Mul", &[a.clone(), b.clone()], |_, x| wsum(&(&x[0] * &x[1]), 3));
    check64("binary_Div", &[a.clone(), nonzero.clone()], |_, x| wsum(&(&x[0] / &x[1]), 4));
    // The same tensor on both sides: cotangents of both operands accumulate into one value.
    check64("binary_Mul_self", &[a.clone()], |_, x| wsum(&(&x[0] * &x[0]), 5));
    // max / min: b = a ± [0.1, 0.5], so no element is within h of a tie.
    let av = a.to_f64();
    let gap = data(6, 44, 0.1, 0.5);
    let b_apart: Vec<f64> = av.iter().zip(&gap).zip([1.0, -1.0, -1.0, 1.0, 1.0, -1.0]).map(|((a, g), s)| a + s * *g as f64).collect();
    let b_apart = f64s(&b_apart, &d);
    check64("binary_Max", &[a.clone(), b_apart.clone()], |_, x| wsum(&x[0].max(&x[1]), 6));
    check64("binary_Min", &[a.clone(), b_apart.clone()], |_, x| wsum(&x[0].min(&x[1]), 7));
    // pow: positive base, exponents of both signs.
    check64("binary_Pow", &[pos.clone(), input(&d, 45, -1.5, 1.5)], |_, x| wsum(&x[0].pow(&x[1]), 8));
    // rem: a = c (k + f) with f in [0.2, 0.8], so a / c stays away from integers (rem's jumps).
    let cv = nonzero.to_f64();
    let frac = data(6, 46, 0.2, 0.8);
    let av: Vec<f64> = cv.iter().zip(&frac).zip([-2.0, 1.0, 0.0, -1.0, 2.0, 0.0]).map(|((c, f), k)| c * (k + *f as f64)).collect();
    check64("binary_Rem", &[f64s(&av, &d), nonzero.clone()], |_, x| wsum(&x[0].binary(BinaryOp::Rem, &x[1]), 9));
    // atan2 in all four quadrants.
    check64("binary_Atan2", &[nonzero.clone(), input(&d, 47, -2.0, 2.0)], |_, x| wsum(&x[0].binary(BinaryOp::Atan2, &x[1]), 10));
}

#[test]
fn select_and_clamp() {
    let d = [2, 3];
    let (a, b) = (input(&d, 50, -2.0, 2.0), input(&d, 51, -2.0, 2.0));
    // Full predicate computed from the inputs (comparisons carry no gradient).
    check64("select_full", &[a.clone(), b.clone()], |_, x| {
        let p = x[0].gt(&x[1]);
        wsum(&p.select(&x[0].mul_scalar(2.0), &x[1].exp()), 1)
    });
    // Predicate as an input (pred[2,3], then scalar pred true / false): zero gradient of type pred.
    let pred = HostTensor::from_bool(&[true, false, false, true, true, false], &d);
    check64("select_pred_input", &[pred, a.clone(), b.clone()], |_, x| wsum(&x[0].select(&x[1], &x[2].tanh()), 2));
    for v in [true, false] {
        let p = HostTensor::from_bool(&[v], &[]);
        check64(&format!("select_scalar_pred_{v}"), &[p, a.clone(), b.clone()], |_, x| wsum(&x[0].select(&x[1].sin(), &x[2]), 3));
    }
    // clamp with tensor bounds: x below, inside and above [lo, hi] (each at least 0.1 from a bound).
    let lo = f64s(&[-1.0, -0.5, 0.0, -1.2, 0.3, -0.1], &d);
    let hi = f64s(&[1.0, 0.5, 0.8, 1.5, 1.3, 0.1], &d);
    let x = f64s(&[-1.3, 0.2, 0.95, 1.7, 0.5, -0.25], &d);
    check64("clamp_tensor_bounds", &[lo, x.clone(), hi], |_, a| wsum(&a[1].clamp(&a[0], &a[2]), 4));
    let x = f64s(&[-1.3, 0.2, 0.95, 1.7, 0.5, -0.25], &d);
    check64("clamp_scalar_bounds", &[f64s(&[-0.4], &[]), x, f64s(&[0.7], &[])], |_, a| wsum(&a[1].clamp(&a[0], &a[2]), 5));
}

#[test]
fn convert_chain() {
    // f64 -> f32 -> (x² in f32) -> f64: f32 rounding (~1e-7 relative) limits the difference, so h = 1e-2
    // (central differences are exact on a quadratic up to that rounding) and tolerance 1e-4.
    let tol = Tol { rtol: 1e-4, atol: 1e-4 };
    check("convert_f64_f32_f64", &[input(&[2, 3], 60, -2.0, 2.0)], tol, 1e-2, |_, a| {
        let y = a[0].convert(DType::F32);
        wsum(&(&y * &y).add_scalar(0.5).convert(DType::F64), 1)
    });
    // Integer -> float converts carry no gradient to the integer input.
    check64("convert_s32_to_f64", &[i32s(&[3, -1, 4], &[3]), input(&[3], 61, -1.0, 1.0)], |_, a| {
        wsum(&(&a[0].convert(DType::F64) * &a[1]), 2)
    });
}

// ---------------------------------------------------------------- shapes and data movement

#[test]
fn broadcast_reshape_transpose() {
    // [3] -> [2, 3, 2] (dim 1), [1, 3] -> [4, 3] (a size-1 dim broadcast), scalar -> [2, 2].
    check64("broadcast_in_dim", &[input(&[3], 70, -1.0, 1.0)], |_, a| wsum(&a[0].broadcast_in_dim(&[2, 3, 2], &[1]), 1));
    check64("broadcast_in_dim_size1", &[input(&[1, 3], 71, -1.0, 1.0)], |_, a| wsum(&a[0].broadcast_in_dim(&[4, 3], &[0, 1]), 2));
    check64("broadcast_in_dim_size1_perm", &[input(&[3, 1], 72, -1.0, 1.0)], |_, a| {
        wsum(&a[0].broadcast_in_dim(&[2, 4, 3], &[2, 1]), 3)
    });
    check64("broadcast_scalar", &[input(&[], 73, -1.0, 1.0)], |_, a| wsum(&a[0].broadcast_to(&[2, 2]), 4));
    check64("reshape", &[input(&[2, 6], 74, -1.0, 1.0)], |_, a| wsum(&a[0].reshape(&[3, 2, 2]).tanh(), 5));
    check64("transpose", &[input(&[2, 3, 2], 75, -1.0, 1.0)], |_, a| wsum(&a[0].transpose(&[2, 0, 1]).sin(), 6));
}

#[test]
fn slices_and_updates() {
    // Strided slice of a [4, 5]: rows 1, 3 and columns 0, 2, 4.
    check64("slice_strided", &[input(&[4, 5], 80, -1.0, 1.0)], |_, a| wsum(&a[0].slice(&[1, 0], &[4, 5], &[2, 2]).exp(), 1));
    check64("slice_unit", &[input(&[3, 4], 81, -1.0, 1.0)], |_, a| wsum(&a[0].slice(&[1, 1], &[3, 3], &[1, 1]), 2));
    // dynamic_slice with starts as inputs (no gradient); the second start (4) is clamped to 2 by XLA.
    for (k, starts) in [[1, 1], [2, 4]].into_iter().enumerate() {
        let inputs = [input(&[4, 5], 82, -1.0, 1.0), i32s(&[starts[0]], &[]), i32s(&[starts[1]], &[])];
        check64(&format!("dynamic_slice_{k}"), &inputs, |_, a| wsum(&a[0].dynamic_slice(&[a[1].clone(), a[2].clone()], &[2, 3]).tanh(), 3));
    }
    // dynamic_update_slice: gradients of both the operand and the update; starts (1, 3) clamp to (1, 2).
    for (k, starts) in [[1, 1], [1, 3]].into_iter().enumerate() {
        let inputs = [input(&[3, 5], 83, -1.0, 1.0), input(&[2, 3], 84, -1.0, 1.0), i32s(&[starts[0]], &[]), i32s(&[starts[1]], &[])];
        check64(&format!("dynamic_update_slice_{k}"), &inputs, |_, a| {
            let y = a[0].dynamic_update_slice(&a[1].exp(), &[a[2].clone(), a[3].clone()]);
            wsum(&(&y * &y), 4)
        });
    }
}

#[test]
fn concatenate_and_pad() {
    let inputs = [input(&[2, 1], 90, -1.0, 1.0), input(&[2, 3], 91, -1.0, 1.0), input(&[2, 2], 92, -1.0, 1.0)];
    check64("concatenate", &inputs, |g, a| wsum(&g.concatenate(&[a[0].clone(), a[1].tanh(), a[2].clone()], 1).sin(), 1));
    // pad [2, 3] with low (1, 0), high (0, 2), interior (1, 1) -> [4, 7]; the pad value is an input too.
    check64("pad", &[input(&[2, 3], 93, -1.0, 1.0), input(&[], 94, -1.0, 1.0)], |_, a| {
        let y = a[0].pad(&a[1], &[1, 0], &[0, 2], &[1, 1]);
        assert_eq!(y.dims(), &[4, 7]);
        wsum(&(&y * &y), 2)
    });
}

#[test]
fn gather_and_scatter() {
    // take_rows with a repeated index (its cotangents add up) and indices as an input (no gradient).
    let inputs = [input(&[4, 3], 100, -1.0, 1.0), i32s(&[2, 0, 2, 3, 1], &[5])];
    check64("gather_take_rows", &inputs, |_, a| wsum(&a[0].take_rows(&a[1]).tanh(), 1));
    // Batching-dims gather: out[b, j, :] = x[b, idx[b, j], :].
    let inputs = [input(&[2, 4, 3], 101, -1.0, 1.0), i32s(&[3, 0, 3, 1, 2, 2], &[2, 3, 1])];
    check64("gather_batching_dims", &inputs, |_, a| {
        let dims = GatherDims {
            offset_dims: vec![2],
            collapsed_slice_dims: vec![1],
            operand_batching_dims: vec![0],
            start_indices_batching_dims: vec![0],
            start_index_map: vec![1],
            index_vector_dim: 2,
            slice_sizes: vec![1, 1, 3],
        };
        let y = a[0].gather(&a[1], dims);
        assert_eq!(y.dims(), &[2, 3, 3]);
        wsum(&y.sin(), 2)
    });
    // Row scatter into [4, 3]: updates [k, 3] at rows idx.
    let rows = |n: i64| ScatterDims {
        update_window_dims: vec![1],
        inserted_window_dims: vec![0],
        scatter_dims_to_operand_dims: vec![0],
        index_vector_dim: n,
        ..Default::default()
    };
    // Add, with a repeated row.
    let inputs = [input(&[4, 3], 102, -1.0, 1.0), i32s(&[1, 3, 1], &[3, 1]), input(&[3, 3], 103, -1.0, 1.0)];
    check64("scatter_add", &inputs, |_, a| {
        let y = a[0].scatter(&a[1], &a[2].exp(), rows(1), ScatterMode::Add);
        wsum(&(&y * &y), 3)
    });
    // Replace, unique rows: the replaced rows of the operand get no gradient.
    let inputs = [input(&[4, 3], 104, -1.0, 1.0), i32s(&[2, 0], &[2, 1]), input(&[2, 3], 105, -1.0, 1.0)];
    check64("scatter_replace", &inputs, |_, a| {
        let y = a[0].scatter(&a[1], &a[2].tanh(), rows(1), ScatterMode::Replace);
        wsum(&(&y * &y), 4)
    });
}

#[test]
fn dot_general() {
    let dot = |l: &Tensor, r: &Tensor, lb: &[i64], rb: &[i64], lc: &[i64], rc: &[i64]| {
        let dims = DotDims { lhs_batch: lb.to_vec(), rhs_batch: rb.to_vec(), lhs_contract: lc.to_vec(), rhs_contract: rc.to_vec() };
        l.dot_general(r, dims, Precision::Highest, None)
    };
    // Plain matmul [2, 3] x [3, 2].
    let inputs = [input(&[2, 3], 110, -1.0, 1.0), input(&[3, 2], 111, -1.0, 1.0)];
    check64("dot_matmul", &inputs, |_, a| wsum(&a[0].matmul(&a[1]), 1));
    // Batch + contracting: [2, 3, 2] x [2, 2, 3] -> [2, 3, 3].
    let inputs = [input(&[2, 3, 2], 112, -1.0, 1.0), input(&[2, 2, 3], 113, -1.0, 1.0)];
    check64("dot_batch_contract", &inputs, |_, a| wsum(&dot(&a[0], &a[1], &[0], &[0], &[2], &[1]), 2));
    // Contracting dims in non-trailing positions on both sides, two of them in swapped order, and batch
    // dims in the middle: lhs [3, 2, 2] (contract 2, 0; batch 1), rhs [3, 2, 2, 2] (contract 3, 0; batch 1).
    let inputs = [input(&[3, 2, 2], 114, -1.0, 1.0), input(&[3, 2, 2, 2], 115, -1.0, 1.0)];
    check64("dot_nontrailing_contract", &inputs, |_, a| {
        let y = dot(&a[0], &a[1], &[1], &[1], &[2, 0], &[3, 0]);
        assert_eq!(y.dims(), &[2, 2]);
        wsum(&y.tanh(), 3)
    });
    // Contract the leading dim of both, with free dims on both sides: [3, 2] x [3, 2, 2] -> [2, 2, 2].
    let inputs = [input(&[3, 2], 116, -1.0, 1.0), input(&[3, 2, 2], 117, -1.0, 1.0)];
    check64("dot_leading_contract", &inputs, |_, a| wsum(&dot(&a[0], &a[1], &[], &[], &[0], &[0]).sin(), 4));
}

// ---------------------------------------------------------------- reductions, scans, sorting

#[test]
fn reductions() {
    let x = input(&[2, 3, 2], 120, -2.0, 2.0);
    check64("reduce_sum", &[x.clone()], |_, a| wsum(&a[0].sum(&[0, 2]).tanh(), 1));
    check64("reduce_max", &[x.clone()], |_, a| wsum(&a[0].reduce_max(&[1]), 2));
    check64("reduce_min", &[x.clone()], |_, a| wsum(&a[0].reduce_min(&[0, 2]), 3));
    check64("reduce_max_all", &[x.clone()], |_, a| a[0].reduce_max(&all(&a[0])).mul_scalar(1.5));
    check64("reduce_prod", &[input(&[2, 3], 121, 0.5, 1.5)], |_, a| wsum(&a[0].reduce(ReduceKind::Prod, &[1]), 4));
    // argmax: the value output is differentiable; the index (converted to f64) carries nothing.
    check64("argmax_value", &[x.clone()], |_, a| {
        let (v, i) = a[0].argmax(1, DType::S32);
        &wsum(&v, 5) + &wsum(&i.convert(DType::F64), 6)
    });
}

#[test]
fn cumulative_sums() {
    for (reverse, exclusive) in [(false, false), (true, false), (false, true), (true, true)] {
        check64(&format!("cumsum_rev{reverse}_excl{exclusive}"), &[input(&[2, 4], 130, -1.0, 1.0)], |_, a| {
            wsum(&a[0].cumulative(ReduceKind::Sum, 1, reverse, exclusive).tanh(), 1)
        });
    }
    check64("cumsum_dim0", &[input(&[3, 2], 131, -1.0, 1.0)], |_, a| wsum(&(&a[0].cumsum(0) * &a[0]), 2));
}

#[test]
fn sort_and_top_k() {
    let keys = input(&[2, 5], 140, -2.0, 2.0);
    let vals = input(&[2, 5], 141, -2.0, 2.0);
    for descending in [false, true] {
        // Both outputs used: keys through their own sort, values through the keys' permutation.
        check64(&format!("sort_two_operands_desc{descending}"), &[keys.clone(), vals.clone()], |g, a| {
            let s = g.sort(&[a[0].clone(), a[1].sin()], 1, descending, true);
            &wsum(&s[0], 1) + &wsum(&(&s[1] * &s[0]), 2)
        });
    }
    // Only the second operand's output used; sort along dim 0.
    check64("sort_dim0_values_only", &[input(&[3, 2], 142, -2.0, 2.0), input(&[3, 2], 143, -2.0, 2.0)], |g, a| {
        let s = g.sort(&[a[0].clone(), a[1].clone()], 0, false, false);
        wsum(&s[1].exp(), 3)
    });
    check64("top_k_values", &[keys.clone()], |_, a| {
        let (v, i) = a[0].top_k(2);
        &wsum(&v.exp(), 4) + &wsum(&i.convert(DType::F64), 5)
    });
}

#[test]
fn triangular_solve() {
    // As the delta rule uses it: (I + S) X = B with S strictly lower (unit_diagonal), batched. The upper
    // triangle and the diagonal of `a` are not read, so their gradient is exactly zero.
    let inputs = [input(&[2, 3, 3], 150, -0.5, 0.5), input(&[2, 3, 2], 151, -1.0, 1.0)];
    check64("triangular_solve_lower_unit", &inputs, |_, a| wsum(&a[0].triangular_solve(&a[1], true, true, true, false), 1));
    // Non-unit diagonals (kept in [1.5, 2.5] by adding 2 I), lower and upper.
    for lower in [true, false] {
        let inputs = [input(&[3, 3], 152, -0.5, 0.5), input(&[3, 2], 153, -1.0, 1.0)];
        check64(&format!("triangular_solve_lower{lower}_diag"), &inputs, |g, a| {
            let i = g.iota(DType::S32, &[3, 3], 0);
            let j = g.iota(DType::S32, &[3, 3], 1);
            let eye = i.eq_(&j).select(&g.full(2.0, DType::F64, &[3, 3]), &g.zeros(DType::F64, &[3, 3]));
            wsum(&(&a[0] + &eye).triangular_solve(&a[1], true, lower, false, false), 2)
        });
    }
}

// ---------------------------------------------------------------- loops and annotations

#[test]
fn fori_loop_with_captures() {
    // for i in 0..3: x = tanh(x * w + 0.1 i + v[k]), n += k  with w (float) and k (an index) captured, an
    // integer carry n alongside and a float carry y the loss never reads.
    let inputs = [input(&[3], 160, -1.0, 1.0), input(&[3], 161, -1.5, 1.5), input(&[4], 162, -1.0, 1.0), i32s(&[2], &[])];
    check64("fori_loop_captures", &inputs, |g, a| {
        let (w, v, k) = (a[1].clone(), a[2].clone(), a[3].clone());
        let init = [a[0].clone(), g.scalar(0.0, DType::S32), a[0].exp()];
        let out = g.fori_loop(0, 3, &init, |_, i, c| {
            let vk = v.dynamic_slice(&[k.clone()], &[1]).reshape(&[]).broadcast_to(&[3]);
            let fi = i.convert(DType::F64).mul_scalar(0.1).broadcast_to(&[3]);
            let x = (&(&(&c[0] * &w) + &fi) + &vk).tanh();
            vec![x, &c[1] + &k, &c[2] * &w]
        });
        &wsum(&out[0], 1) + &wsum(&out[1].convert(DType::F64), 2)
    });
}

#[test]
fn fori_loop_offset_bounds_and_unused_input() {
    // A loop from 2 to 5 (the recorded iterations are indexed from `lower`), and an f64 input the loss
    // never reads (zero gradient, not an error).
    let inputs = [input(&[3], 165, -1.0, 1.0), input(&[3], 166, 0.5, 1.5), input(&[2], 167, -1.0, 1.0)];
    check64("fori_loop_2_to_5", &inputs, |g, a| {
        let w = a[1].clone();
        let out = g.fori_loop(2, 5, &[a[0].clone()], |_, i, c| {
            let fi = i.convert(DType::F64).broadcast_to(&[3]);
            vec![(&(&c[0] * &w) + &fi.mul_scalar(0.2)).sin()]
        });
        wsum(&out[0], 1)
    });
}

#[test]
fn fori_loop_nested() {
    // for i in 0..3 { for j in 0..2 { x = sin(x * s + (i j) v) }; x = x * s }, v and s captured from the
    // outermost function into the inner body.
    let inputs = [input(&[3], 170, -1.0, 1.0), input(&[3], 171, -1.0, 1.0), input(&[3], 172, 0.5, 1.2)];
    check64("fori_loop_nested", &inputs, |g, a| {
        let (v, s) = (a[1].clone(), a[2].clone());
        let out = g.fori_loop(0, 3, &[a[0].clone()], |g, i, c| {
            let inner = g.fori_loop(0, 2, &[c[0].clone()], |_, j, c| {
                let ij = (i * j).convert(DType::F64).broadcast_to(&[3]);
                vec![(&(&c[0] * &s) + &(&ij * &v)).sin()]
            });
            vec![&inner[0] * &s]
        });
        wsum(&out[0], 3)
    });
}

#[test]
fn sharding_constraint_and_barrier() {
    check64("sharding_constraint", &[input(&[2, 3], 180, -1.0, 1.0)], |_, a| {
        let y = a[0].with_sharding(Sharding::replicated(2)).tanh();
        wsum(&y.with_sharding(Sharding::new(&[&["data"], &[]])), 1)
    });
    // Barrier over a float, a float used twice and an integer; one output unused.
    let inputs = [input(&[3], 181, -1.0, 1.0), input(&[3], 182, -1.0, 1.0), i32s(&[1, 2, 3], &[3])];
    check64("optimization_barrier", &inputs, |g, a| {
        let e = a[0].exp();
        let b = g.optimization_barrier(&[e, a[1].clone(), a[2].clone(), a[1].sin()]);
        &wsum(&(&b[0] * &a[0]), 2) + &wsum(&(&b[1] + &b[2].convert(DType::F64)), 3)
    });
}

#[test]
fn fori_loop_zero_trips() {
    // An empty loop is the identity on its carries; the captured w gets a zero gradient.
    let inputs = [input(&[3], 168, -1.0, 1.0), input(&[3], 169, 0.5, 1.5)];
    check64("fori_loop_0_to_0", &inputs, |g, a| {
        let w = a[1].clone();
        let out = g.fori_loop(0, 0, &[a[0].clone()], |_, _, c| vec![&c[0] * &w]);
        wsum(&out[0].tanh(), 1)
    });
}
