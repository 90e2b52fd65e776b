//! Per-op acceptance tests on the real XLA CPU plugin, part 3: dot_general, reduce, argmax, cumulative
//! reductions, sort and top_k, each against a host reference in f64, in f32 and bf16.

mod common;

use common::*;
use maxtext::ir::{DType, DotDims, Precision, ReduceKind, Tensor};
use maxtext::runtime::HostTensor;

const EXACT: Tol = Tol { rtol: 0.0, atol: 0.0 };

/// Contraction reference: `out[idx] = sum over k of lhs[lhs_at(idx, k)] * rhs[rhs_at(idx, k)]`.
fn contract(out: &[i64], k: &[i64], f: impl Fn(&[usize], &[usize]) -> (f64, f64)) -> (Vec<f64>, Vec<f64>) {
    let nk: i64 = k.iter().product();
    let terms =
        |o: &[usize]| (0..nk as usize).map(|kk| f(o, &unravel(kk, k))).map(|(x, y)| x * y).collect::<Vec<f64>>();
    let vals = tabulate(out, |o| terms(o).iter().sum());
    let sum_abs = tabulate(out, |o| terms(o).iter().map(|t| t.abs()).sum());
    (vals, sum_abs)
}

/// `|got - want| <= rtol * scale` elementwise, with `scale` the sum of |terms| (rounding error of a sum).
fn assert_sum_close(got: &[f64], want: &[f64], scale: &[f64], rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for i in 0..got.len() {
        assert!(
            (got[i] - want[i]).abs() <= rtol * scale[i] + 1e-30,
            "{what}[{i}]: got {}, want {}\n got: {got:?}\nwant: {want:?}",
            got[i],
            want[i]
        );
    }
}

#[test]
fn dot_general() {
    let a = data(15, 1, -2.0, 2.0);
    let b = data(20, 2, -2.0, 2.0);
    let l = data(24, 3, -2.0, 2.0);
    let r = data(40, 4, -2.0, 2.0);
    let l2 = data(48, 5, -2.0, 2.0);
    let r2 = data(60, 6, -2.0, 2.0);
    for (dt, tol) in FLOATS {
        let (ah, av) = float_input(&a, &[3, 5], dt);
        let (bh, bv) = float_input(&b, &[5, 4], dt);
        let (lh, lv) = float_input(&l, &[4, 2, 3], dt);
        let (rh, rv) = float_input(&r, &[2, 5, 4], dt);
        let (l2h, l2v) = float_input(&l2, &[2, 3, 4, 2], dt);
        let (r2h, r2v) = float_input(&r2, &[2, 2, 3, 5], dt);
        let out = run(&format!("dot_general_{dt}"), &[ah, bh, lh, rh, l2h, r2h], |_, x| {
            // lhs (k, b, m) x rhs (b, n, k) -> (b, m, n)
            let bk = DotDims { lhs_batch: vec![1], rhs_batch: vec![0], lhs_contract: vec![0], rhs_contract: vec![2] };
            // lhs (b, k1, m, k2) x rhs (k2, b, k1, n) -> (b, m, n), two contracting dims
            let bkk =
                DotDims { lhs_batch: vec![0], rhs_batch: vec![1], lhs_contract: vec![1, 3], rhs_contract: vec![2, 0] };
            let mut r = vec![
                x[0].matmul(&x[1]),
                x[2].dot_general(&x[3], bk.clone(), Precision::Default, None),
                x[4].dot_general(&x[5], bkk, Precision::Highest, None),
            ];
            if dt == DType::BF16 {
                r.push(x[2].dot_general(&x[3], bk, Precision::Default, Some(DType::F32)));
            }
            r
        });
        let (want, scale) = contract(&[3, 4], &[5], |o, k| (av[o[0] * 5 + k[0]], bv[k[0] * 4 + o[1]]));
        assert_eq!(out[0].dims, vec![3, 4]);
        assert_sum_close(&out[0].to_f64(), &want, &scale, tol.rtol, &format!("matmul {dt}"));
        let (want_bk, scale_bk) = contract(&[2, 3, 5], &[4], |o, k| {
            (lv[ravel(&[k[0], o[0], o[1]], &[4, 2, 3])], rv[ravel(&[o[0], o[2], k[0]], &[2, 5, 4])])
        });
        assert_eq!(out[1].dims, vec![2, 3, 5]);
        assert_sum_close(&out[1].to_f64(), &want_bk, &scale_bk, tol.rtol, &format!("batch + contracting {dt}"));
        let (want, scale) = contract(&[2, 4, 5], &[3, 2], |o, k| {
            (l2v[ravel(&[o[0], k[0], o[1], k[1]], &[2, 3, 4, 2])], r2v[ravel(&[k[1], o[0], k[0], o[2]], &[2, 2, 3, 5])])
        });
        assert_eq!(out[2].dims, vec![2, 4, 5]);
        assert_sum_close(&out[2].to_f64(), &want, &scale, tol.rtol, &format!("two contracting dims {dt}"));
        if dt == DType::BF16 {
            // bf16 operands, f32 result: products of bf16 values are exact in f32, so only f32 rounding remains.
            assert_eq!(out[3].dtype, DType::F32);
            assert_sum_close(&out[3].to_f64(), &want_bk, &scale_bk, 2e-6, "bf16 x bf16 -> f32");
        }
    }
}

/// A host combiner of two values.
type Combine = fn(f64, f64) -> f64;

fn reduce_ref(x: &[f64], dims: &[i64], over: &[usize], init: f64, f: Combine) -> (Vec<f64>, Vec<f64>) {
    let keep: Vec<usize> = (0..dims.len()).filter(|d| !over.contains(d)).collect();
    let out: Vec<i64> = keep.iter().map(|&d| dims[d]).collect();
    let n = out.iter().product::<i64>() as usize;
    let (mut acc, mut abs) = (vec![init; n], vec![0.0; n]);
    for (flat, v) in x.iter().enumerate() {
        let idx = unravel(flat, dims);
        let o: Vec<usize> = keep.iter().map(|&d| idx[d]).collect();
        let j = ravel(&o, &out);
        acc[j] = f(acc[j], *v);
        abs[j] += v.abs();
    }
    (acc, abs)
}

#[test]
fn reduce() {
    // Values in [0.5, 1.5] keep products of up to 24 terms well inside range.
    let x = data(24, 7, 0.5, 1.5);
    let s = data(24, 8, -3.0, 3.0);
    let overs: [&[usize]; 3] = [&[1], &[0, 2], &[0, 1, 2]];
    let kinds: [(ReduceKind, f64, Combine); 4] = [
        (ReduceKind::Sum, 0.0, |a, b| a + b),
        (ReduceKind::Prod, 1.0, |a, b| a * b),
        (ReduceKind::Max, f64::NEG_INFINITY, f64::max),
        (ReduceKind::Min, f64::INFINITY, f64::min),
    ];
    for (dt, tol) in FLOATS {
        let (xh, xv) = float_input(&x, &[2, 3, 4], dt);
        let (sh, sv) = float_input(&s, &[2, 3, 4], dt);
        let out = run(&format!("reduce_{dt}"), &[xh, sh], |_, a| {
            let mut r = Vec::new();
            for (kind, _, _) in &kinds {
                let src = if *kind == ReduceKind::Prod { &a[0] } else { &a[1] };
                for over in overs {
                    let dims: Vec<i64> = over.iter().rev().map(|d| *d as i64).collect();
                    r.push(src.reduce(*kind, &dims));
                }
            }
            r
        });
        let mut k = 0;
        for (kind, init, f) in &kinds {
            let src = if *kind == ReduceKind::Prod { &xv } else { &sv };
            for over in overs {
                let (want, abs) = reduce_ref(src, &[2, 3, 4], over, *init, *f);
                let what = format!("reduce {kind:?} over {over:?} {dt}");
                let kept: Vec<i64> = (0..3).filter(|d| !over.contains(d)).map(|d| [2, 3, 4][d]).collect();
                assert_eq!(out[k].dims, kept, "{what}: dims");
                match kind {
                    // Accumulation error grows with the number of terms (bf16 may accumulate in bf16).
                    ReduceKind::Sum => assert_sum_close(&out[k].to_f64(), &want, &abs, tol.rtol * 2.0, &what),
                    ReduceKind::Prod => {
                        assert_close(&out[k].to_f64(), &want, Tol { rtol: tol.rtol * 12.0, atol: 0.0 }, &what)
                    }
                    _ => assert_close(&out[k].to_f64(), &want, EXACT, &what),
                }
                k += 1;
            }
        }
    }
    let xi: Vec<i32> = ints(12, 9, -50, 50);
    let out = run("reduce_s32", &[HostTensor::from_i32(&xi, &[3, 4])], |_, a| {
        vec![a[0].sum(&[1]), a[0].reduce_max(&[0]), a[0].reduce_min(&[0, 1])]
    });
    let row = |i: usize| &xi[i * 4..i * 4 + 4];
    assert_exact(
        &out[0].to_i64(),
        &(0..3).map(|i| row(i).iter().map(|v| *v as i64).sum()).collect::<Vec<i64>>(),
        "sum s32",
    );
    let colmax: Vec<i64> = (0..4).map(|j| (0..3).map(|i| xi[i * 4 + j] as i64).max().unwrap()).collect();
    assert_exact(&out[1].to_i64(), &colmax, "max s32");
    assert_exact(&out[2].to_i64(), &[*xi.iter().min().unwrap() as i64], "min s32");
}

#[test]
fn argmax() {
    // Row 0: a tie for the max (first index wins); row 1: distinct; row 2: a NaN (wins, like numpy).
    let x = [1.0f32, 5.0, 2.0, 5.0, -1.0, 5.0, -3.0, -2.0, -7.0, -2.5, -9.0, -4.0, 0.5, 2.0, f32::NAN, 3.0, 2.0, 1.0];
    for (dt, _) in FLOATS {
        let (xh, xv) = float_input(&x, &[3, 6], dt);
        let out = run(&format!("argmax_{dt}"), &[xh], |_, a| {
            let (v1, i1) = a[0].argmax(1, DType::S32);
            let (v0, i0) = a[0].slice(&[0, 0], &[2, 6], &[1, 1]).argmax(0, DType::S32);
            vec![v1, i1, v0, i0]
        });
        assert_eq!(out[1].dtype, DType::S32);
        assert_close(&out[0].to_f64(), &[5.0, -2.0, f64::NAN], EXACT, &format!("argmax values {dt}"));
        assert_exact(&out[1].to_i64(), &[1, 1, 2], &format!("argmax indices, ties -> first {dt}"));
        let want_i: Vec<i64> = (0..6).map(|j| if xv[6 + j] > xv[j] { 1 } else { 0 }).collect();
        let want_v: Vec<f64> = (0..6).map(|j| xv[j].max(xv[6 + j])).collect();
        assert_close(&out[2].to_f64(), &want_v, EXACT, &format!("argmax dim 0 values {dt}"));
        assert_exact(&out[3].to_i64(), &want_i, &format!("argmax dim 0 indices {dt}"));
    }
}

/// Inclusive / exclusive, forward / reverse scan of each row of `x` [rows, n].
fn scan_ref(x: &[f64], n: usize, init: f64, f: fn(f64, f64) -> f64, reverse: bool, exclusive: bool) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for row in 0..x.len() / n {
        let mut acc = init;
        let order: Vec<usize> = if reverse { (0..n).rev().collect() } else { (0..n).collect() };
        for j in order {
            let v = x[row * n + j];
            if exclusive {
                out[row * n + j] = acc;
                acc = f(acc, v);
            } else {
                acc = f(acc, v);
                out[row * n + j] = acc;
            }
        }
    }
    out
}

#[test]
fn cumulative() {
    let x = data(24, 10, -2.0, 2.0);
    // (kind, reverse, exclusive)
    let cases = [
        (ReduceKind::Sum, false, false),
        (ReduceKind::Sum, true, false),
        (ReduceKind::Sum, false, true),
        (ReduceKind::Sum, true, true),
        (ReduceKind::Max, false, false),
        (ReduceKind::Max, true, false),
        (ReduceKind::Min, false, false),
    ];
    let f = |k: ReduceKind| -> (f64, fn(f64, f64) -> f64) {
        match k {
            ReduceKind::Sum => (0.0, |a, b| a + b),
            ReduceKind::Max => (f64::NEG_INFINITY, f64::max),
            _ => (f64::INFINITY, f64::min),
        }
    };
    for (dt, tol) in FLOATS {
        let (xh, xv) = float_input(&x, &[3, 8], dt);
        let out = run(&format!("cumulative_{dt}"), &[xh], |_, a| {
            let mut r: Vec<Tensor> = cases.iter().map(|(k, rev, ex)| a[0].cumulative(*k, 1, *rev, *ex)).collect();
            // Along dim 0 of the transpose: the same scans, checked through the same reference.
            r.push(a[0].transpose(&[1, 0]).cumsum(0).transpose(&[1, 0]));
            r
        });
        for ((k, rev, ex), got) in cases.iter().zip(&out) {
            let (init, op) = f(*k);
            let want = scan_ref(&xv, 8, init, op, *rev, *ex);
            let what = format!("cumulative {k:?} reverse={rev} exclusive={ex} {dt}");
            if *k == ReduceKind::Sum {
                let abs = scan_ref(&xv.iter().map(|v| v.abs()).collect::<Vec<_>>(), 8, 0.0, |a, b| a + b, *rev, *ex);
                assert_sum_close(&got.to_f64(), &want, &abs, tol.rtol * 2.0, &what);
            } else {
                assert_close(&got.to_f64(), &want, EXACT, &what);
            }
        }
        let want = scan_ref(&xv, 8, 0.0, |a, b| a + b, false, false);
        assert_close(
            &out[cases.len()].to_f64(),
            &want,
            Tol { rtol: tol.rtol * 4.0, atol: tol.rtol * 8.0 },
            &format!("cumsum dim 0 {dt}"),
        );
    }
    let xi = ints(10, 11, -100, 100);
    let out = run("cumsum_s32", &[HostTensor::from_i32(&xi, &[10])], |_, a| vec![a[0].cumsum(0)]);
    let want: Vec<i64> = xi
        .iter()
        .scan(0i64, |s, v| {
            *s += *v as i64;
            Some(*s)
        })
        .collect();
    assert_exact(&out[0].to_i64(), &want, "cumsum s32");
}

#[test]
fn sort() {
    let x = data(24, 12, -5.0, 5.0);
    // Few distinct values, so most keys tie: stability decides the payload order.
    let ties: Vec<f32> = ints(24, 13, 0, 4).iter().map(|v| *v as f32 * 0.5).collect();
    for (dt, _) in FLOATS {
        let (xh, xv) = float_input(&x, &[3, 8], dt);
        let (th, tv) = float_input(&ties, &[3, 8], dt);
        let out = run(&format!("sort_{dt}"), &[xh, th], |g, a| {
            let iota = g.iota(DType::S32, &[3, 8], 1);
            let mut r = Vec::new();
            r.extend(g.sort(&[a[0].clone()], 1, false, false));
            r.extend(g.sort(&[a[0].clone()], 1, true, false));
            r.extend(g.sort(&[a[1].clone(), iota.clone()], 1, false, true));
            r.extend(g.sort(&[a[1].clone(), iota], 1, true, true));
            r.extend(g.sort(&[a[0].transpose(&[1, 0])], 0, false, false));
            r
        });
        // Per row: (value, index) pairs sorted by value with a stable sort (Rust's sort_by is stable).
        let sorted = |v: &[f64], desc: bool| -> (Vec<f64>, Vec<i64>) {
            let (mut vals, mut idx) = (Vec::new(), Vec::new());
            for row in 0..3 {
                let mut p: Vec<(f64, i64)> = (0..8).map(|j| (v[row * 8 + j], j as i64)).collect();
                p.sort_by(|a, b| if desc { b.0.partial_cmp(&a.0).unwrap() } else { a.0.partial_cmp(&b.0).unwrap() });
                vals.extend(p.iter().map(|q| q.0));
                idx.extend(p.iter().map(|q| q.1));
            }
            (vals, idx)
        };
        assert_close(&out[0].to_f64(), &sorted(&xv, false).0, EXACT, &format!("sort ascending {dt}"));
        assert_close(&out[1].to_f64(), &sorted(&xv, true).0, EXACT, &format!("sort descending {dt}"));
        let (v, i) = sorted(&tv, false);
        assert_close(&out[2].to_f64(), &v, EXACT, &format!("stable sort keys {dt}"));
        assert_exact(&out[3].to_i64(), &i, &format!("stable ascending sort: ties keep index order {dt}"));
        let (v, i) = sorted(&tv, true);
        assert_close(&out[4].to_f64(), &v, EXACT, &format!("stable descending sort keys {dt}"));
        assert_exact(&out[5].to_i64(), &i, &format!("stable descending sort: ties keep index order {dt}"));
        let want = sorted(&xv, false).0;
        let want_t = tabulate(&[8, 3], |i| want[i[1] * 8 + i[0]]);
        assert_close(&out[6].to_f64(), &want_t, EXACT, &format!("sort along dim 0 {dt}"));
    }
}

#[test]
fn top_k() {
    // Row 1 has a tie (4.0 at 2 and 7): the lower index comes first.
    let x = [
        0.5f32, 9.0, -1.0, 3.0, 7.5, 2.0, 8.0, -4.0, 1.0, 0.0, //
        1.0, 0.0, 4.0, -2.0, 3.5, 1.5, 2.5, 4.0, -9.0, 0.25,
    ];
    for (dt, _) in FLOATS {
        let (xh, xv) = float_input(&x, &[2, 10], dt);
        let out = run(&format!("top_k_{dt}"), &[xh], |_, a| {
            let (v, i) = a[0].top_k(3);
            vec![v, i]
        });
        assert_eq!(out[0].dims, vec![2, 3]);
        assert_eq!(out[1].dtype, DType::S32);
        let mut wv = Vec::new();
        let mut wi = Vec::new();
        for row in 0..2 {
            let mut p: Vec<(f64, i64)> = (0..10).map(|j| (xv[row * 10 + j], j as i64)).collect();
            p.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
            wv.extend(p[..3].iter().map(|q| q.0));
            wi.extend(p[..3].iter().map(|q| q.1));
        }
        assert_close(&out[0].to_f64(), &wv, EXACT, &format!("top_k values {dt}"));
        assert_exact(&out[1].to_i64(), &wi, &format!("top_k indices {dt}"));
    }
}
