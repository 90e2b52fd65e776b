//! Per-op acceptance tests on the real XLA CPU plugin, part 2: data movement (broadcast_in_dim, reshape,
//! transpose, slice, dynamic_slice, dynamic_update_slice, concatenate, pad, gather, scatter), each against
//! a host reference in index form, in f32 and bf16.

mod common;

use common::*;
use maxtext::ir::{DType, GatherDims, ScatterDims, ScatterMode};
use maxtext::runtime::HostTensor;

const EXACT: Tol = Tol { rtol: 0.0, atol: 0.0 };

#[test]
fn broadcast_reshape_transpose() {
    let x = data(3, 1, -2.0, 2.0);
    let v = data(4, 2, -2.0, 2.0);
    let t = data(24, 3, -2.0, 2.0);
    for (dt, _) in FLOATS {
        let (xh, xv) = float_input(&x, &[3, 1], dt);
        let (vh, vv) = float_input(&v, &[4], dt);
        let (th, tv) = float_input(&t, &[2, 3, 4], dt);
        let out = run(&format!("broadcast_reshape_transpose_{dt}"), &[xh, vh, th], |g, a| {
            vec![
                a[0].broadcast_in_dim(&[2, 3, 4], &[1, 2]),
                a[1].broadcast_in_dim(&[2, 3, 4], &[2]),
                g.scalar(1.5, dt).broadcast_to(&[2, 2]),
                a[2].reshape(&[6, 4]).reshape(&[4, 6]),
                a[2].transpose(&[2, 0, 1]),
            ]
        });
        let what = |s: &str| format!("{s} {dt}");
        assert_eq!(out[0].dims, vec![2, 3, 4]);
        assert_close(&out[0].to_f64(), &tabulate(&[2, 3, 4], |i| xv[i[1]]), EXACT, &what("broadcast size-1 dim"));
        assert_close(&out[1].to_f64(), &tabulate(&[2, 3, 4], |i| vv[i[2]]), EXACT, &what("broadcast to minor dim"));
        assert_close(&out[2].to_f64(), &[1.5; 4], EXACT, &what("broadcast scalar"));
        assert_eq!(out[3].dims, vec![4, 6]);
        assert_close(&out[3].to_f64(), &tv, EXACT, &what("reshape keeps row-major order"));
        // Result dim r is operand dim perm[r].
        assert_eq!(out[4].dims, vec![4, 2, 3]);
        let want = tabulate(&[4, 2, 3], |i| tv[ravel(&[i[1], i[2], i[0]], &[2, 3, 4])]);
        assert_close(&out[4].to_f64(), &want, EXACT, &what("transpose [2, 0, 1]"));
    }
}

#[test]
fn slice_with_strides() {
    let x = data(35, 4, -2.0, 2.0);
    for (dt, _) in FLOATS {
        let (xh, xv) = float_input(&x, &[5, 7], dt);
        let out = run(&format!("slice_{dt}"), &[xh], |_, a| {
            vec![a[0].slice(&[1, 0], &[5, 7], &[2, 3]), a[0].slice(&[2, 1], &[4, 6], &[1, 1]), a[0].slice_dim(1, 6, 1)]
        });
        assert_eq!(out[0].dims, vec![2, 3]);
        assert_close(
            &out[0].to_f64(),
            &tabulate(&[2, 3], |i| xv[(1 + 2 * i[0]) * 7 + 3 * i[1]]),
            EXACT,
            "strided slice",
        );
        assert_eq!(out[1].dims, vec![2, 5]);
        assert_close(&out[1].to_f64(), &tabulate(&[2, 5], |i| xv[(2 + i[0]) * 7 + 1 + i[1]]), EXACT, "unit slice");
        assert_close(&out[2].to_f64(), &tabulate(&[5, 1], |i| xv[i[0] * 7 + 6]), EXACT, "slice_dim");
    }
}

/// XLA clamps dynamic starts into `[0, dim - size]`.
fn clamp_start(s: i32, dim: i64, size: i64) -> usize {
    (s as i64).clamp(0, dim - size) as usize
}

#[test]
fn dynamic_slice_and_update() {
    let x = data(30, 5, -2.0, 2.0);
    let u = data(6, 6, 10.0, 20.0);
    // (in range), (past the end and negative: clamped to (3, 0) for the slice, (4, 2) for the update).
    for starts in [[1i32, 2], [5, -1]] {
        for (dt, _) in FLOATS {
            let (xh, xv) = float_input(&x, &[6, 5], dt);
            let (uh, uv) = float_input(&u, &[2, 3], dt);
            let idx = [HostTensor::from_i32(&[starts[0]], &[]), HostTensor::from_i32(&[starts[1]], &[])];
            let out = run(&format!("dynamic_slice_{dt}"), &[xh, uh, idx[0].clone(), idx[1].clone()], |_, a| {
                let s = [a[2].clone(), a[3].clone()];
                vec![a[0].dynamic_slice(&s, &[3, 2]), a[0].dynamic_update_slice(&a[1], &s)]
            });
            let (r, c) = (clamp_start(starts[0], 6, 3), clamp_start(starts[1], 5, 2));
            let want = tabulate(&[3, 2], |i| xv[(r + i[0]) * 5 + c + i[1]]);
            assert_close(&out[0].to_f64(), &want, EXACT, &format!("dynamic_slice at {starts:?} {dt}"));
            let (r, c) = (clamp_start(starts[0], 6, 2), clamp_start(starts[1], 5, 3));
            let want = tabulate(&[6, 5], |i| {
                let inside = (r..r + 2).contains(&i[0]) && (c..c + 3).contains(&i[1]);
                if inside {
                    uv[(i[0] - r) * 3 + i[1] - c]
                } else {
                    xv[i[0] * 5 + i[1]]
                }
            });
            assert_close(&out[1].to_f64(), &want, EXACT, &format!("dynamic_update_slice at {starts:?} {dt}"));
        }
    }
}

#[test]
fn concatenate() {
    let (a, b, c) = (data(6, 7, -1.0, 1.0), data(3, 8, -1.0, 1.0), data(9, 9, -1.0, 1.0));
    for (dt, _) in FLOATS {
        let (ah, av) = float_input(&a, &[2, 3], dt);
        let (bh, bv) = float_input(&b, &[1, 3], dt);
        let (ch, cv) = float_input(&c, &[3, 3], dt);
        let out = run(&format!("concatenate_{dt}"), &[ah, bh, ch], |g, x| {
            let cols = g.concatenate(&[x[0].transpose(&[1, 0]), x[1].transpose(&[1, 0])], 1);
            vec![g.concatenate(&[x[0].clone(), x[1].clone(), x[2].clone()], 0), cols]
        });
        assert_eq!(out[0].dims, vec![6, 3]);
        let want: Vec<f64> = av.iter().chain(&bv).chain(&cv).copied().collect();
        assert_close(&out[0].to_f64(), &want, EXACT, &format!("concatenate dim 0 {dt}"));
        assert_eq!(out[1].dims, vec![3, 3]);
        let want = tabulate(&[3, 3], |i| if i[1] < 2 { av[i[1] * 3 + i[0]] } else { bv[i[0]] });
        assert_close(&out[1].to_f64(), &want, EXACT, &format!("concatenate dim 1 {dt}"));
    }
}

/// Reference pad: operand element `k` sits at `low + k * (interior + 1)`; everything else is `value`.
fn pad_ref(x: &[f64], dims: &[i64], value: f64, low: &[i64], interior: &[i64], out: &[i64]) -> Vec<f64> {
    tabulate(out, |i| {
        let mut src = Vec::new();
        for d in 0..dims.len() {
            let p = i[d] as i64 - low[d];
            let step = interior[d] + 1;
            if p < 0 || p % step != 0 || p / step >= dims[d] {
                return value;
            }
            src.push((p / step) as usize);
        }
        x[ravel(&src, dims)]
    })
}

#[test]
fn pad() {
    let x = data(12, 10, 1.0, 2.0);
    // (low, high, interior): plain edges; interior; negative edges cropping into interior padding.
    let cases: [([i64; 2], [i64; 2], [i64; 2]); 3] =
        [([1, 0], [2, 3], [0, 0]), ([0, 2], [1, 0], [1, 2]), ([-1, 1], [2, -2], [1, 1])];
    for (dt, _) in FLOATS {
        let (xh, xv) = float_input(&x, &[3, 4], dt);
        let out = run(&format!("pad_{dt}"), &[xh], |g, a| {
            let v = g.scalar(-1.0, dt);
            cases.iter().map(|(lo, hi, int)| a[0].pad(&v, lo, hi, int)).collect()
        });
        for ((lo, hi, int), got) in cases.iter().zip(&out) {
            let dims: Vec<i64> = (0..2).map(|d| lo[d] + hi[d] + [3, 4][d] + ([3, 4][d] - 1) * int[d]).collect();
            assert_eq!(got.dims, dims, "pad {lo:?} {hi:?} {int:?} dims");
            let want = pad_ref(&xv, &[3, 4], -1.0, lo, int, &dims);
            assert_close(&got.to_f64(), &want, EXACT, &format!("pad lo {lo:?} hi {hi:?} interior {int:?} {dt}"));
        }
    }
}

#[test]
fn gather() {
    let table = data(20, 11, -3.0, 3.0);
    // Out-of-range row indices are clamped into range (7 -> 4, -1 -> 0).
    let rows = [3i32, 0, 4, 1, 7, -1];
    let x = data(3 * 8 * 4, 12, -3.0, 3.0);
    let ii = [7i32, 0, 3, 3, 1, 2, 6, 5, 0, 4, 4, 4, 7, 1, 0];
    for (dt, _) in FLOATS {
        let (th, tv) = float_input(&table, &[5, 4], dt);
        let (xh, xv) = float_input(&x, &[3, 8, 4], dt);
        let inputs = [th, HostTensor::from_i32(&rows, &[2, 3]), xh, HostTensor::from_i32(&ii, &[3, 5, 1])];
        let out = run(&format!("gather_{dt}"), &inputs, |_, a| {
            // x[b, ii[b, j], :] for every batch b: the vmap(x[i]) form.
            let dims = GatherDims {
                offset_dims: vec![2],
                collapsed_slice_dims: vec![1],
                operand_batching_dims: vec![0],
                start_indices_batching_dims: vec![0],
                start_index_map: vec![1],
                index_vector_dim: 2,
                slice_sizes: vec![1, 1, 4],
            };
            vec![a[0].take_rows(&a[1]), a[2].gather(&a[3], dims)]
        });
        assert_eq!(out[0].dims, vec![2, 3, 4]);
        let want = tabulate(&[2, 3, 4], |i| tv[(rows[i[0] * 3 + i[1]].clamp(0, 4) as usize) * 4 + i[2]]);
        assert_close(&out[0].to_f64(), &want, EXACT, &format!("take_rows {dt}"));
        assert_eq!(out[1].dims, vec![3, 5, 4]);
        let want = tabulate(&[3, 5, 4], |i| xv[ravel(&[i[0], ii[i[0] * 5 + i[1]] as usize, i[2]], &[3, 8, 4])]);
        assert_close(&out[1].to_f64(), &want, EXACT, &format!("gather with operand_batching_dims {dt}"));
    }
}

#[test]
fn scatter() {
    let x = data(15, 13, -1.0, 1.0);
    let upd = data(12, 14, -1.0, 1.0);
    let dup = [1i32, 3, 1, 0];
    let uniq = [4i32, 0, 2, 1];
    let dims = || ScatterDims {
        update_window_dims: vec![1],
        inserted_window_dims: vec![0],
        scatter_dims_to_operand_dims: vec![0],
        index_vector_dim: 1,
        ..Default::default()
    };
    for (dt, tol) in FLOATS {
        let (xh, xv) = float_input(&x, &[5, 3], dt);
        let (uh, uv) = float_input(&upd, &[4, 3], dt);
        let inputs = [xh, uh, HostTensor::from_i32(&dup, &[4, 1]), HostTensor::from_i32(&uniq, &[4, 1])];
        let out = run(&format!("scatter_{dt}"), &inputs, |_, a| {
            vec![
                a[0].scatter(&a[2], &a[1], dims(), ScatterMode::Add),
                a[0].scatter(&a[3], &a[1], dims(), ScatterMode::Replace),
            ]
        });
        let mut add = xv.clone();
        let mut rep = xv.clone();
        for k in 0..4 {
            for j in 0..3 {
                add[dup[k] as usize * 3 + j] += uv[k * 3 + j];
                rep[uniq[k] as usize * 3 + j] = uv[k * 3 + j];
            }
        }
        // Row 1 receives two updates; bf16 rounds after each add.
        assert_close(
            &out[0].to_f64(),
            &add,
            Tol { atol: tol.atol * 4.0, ..tol },
            &format!("scatter add, duplicate indices {dt}"),
        );
        assert_close(&out[1].to_f64(), &rep, EXACT, &format!("scatter replace {dt}"));
    }
}

#[test]
fn scatter_int_add() {
    let out = run(
        "scatter_s32",
        &[HostTensor::from_i32(&[0; 4], &[4]), HostTensor::from_i32(&[2, 2, 0, 2, 3], &[5, 1])],
        |g, a| {
            let ones = g.full(1.0, DType::S32, &[5]);
            let dims = ScatterDims {
                inserted_window_dims: vec![0],
                scatter_dims_to_operand_dims: vec![0],
                index_vector_dim: 1,
                ..Default::default()
            };
            vec![a[0].scatter(&a[1], &ones, dims, ScatterMode::Add)]
        },
    );
    assert_exact(&out[0].to_i64(), &[1, 0, 3, 1], "scatter-add histogram");
}
