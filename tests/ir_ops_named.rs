//! Per-op acceptance tests on the real XLA CPU plugin, part 5: the named-axis sugar (dot_named,
//! transpose_to, split_axis / merge_axes, sum_over, broadcast_like, zip_named), and the golden MLIR text of
//! one small program (`tests/golden/small_program.mlir`; regenerate with `MAXTEXT_UPDATE_GOLDEN=1`).

mod common;

use common::*;
use maxtext::emit::emit_program;
use maxtext::ir::{AxisName, DType, Graph, Program, Tensor, TensorType};
use maxtext::runtime::HostTensor;

const EXACT: Tol = Tol { rtol: 0.0, atol: 0.0 };

fn axes(t: &Tensor) -> Vec<AxisName> {
    t.ty().axes.iter().map(|a| a.expect("every axis named")).collect()
}

/// Traces `f` over named parameters and runs it on `inputs` (same order).
fn run_named(
    name: &str,
    params: &[TensorType],
    inputs: &[HostTensor],
    f: impl FnOnce(&Graph, &[Tensor]) -> Vec<Tensor>,
) -> Vec<HostTensor> {
    run_program(&Program::new(name, trace(params, f)), inputs)
}

#[test]
fn dot_named_with_batch_axes() {
    let q = data(24, 1, -2.0, 2.0);
    let k = data(40, 2, -2.0, 2.0);
    for (dt, tol) in FLOATS {
        let (qh, qv) = float_input(&q, &[2, 3, 4], dt);
        let (kh, kv) = float_input(&k, &[2, 5, 4], dt);
        let params = [
            TensorType::named(dt, &[2, 3, 4], &["batch", "seq", "head_dim"]),
            TensorType::named(dt, &[2, 5, 4], &["batch", "kv_seq", "head_dim"]),
        ];
        let out = run_named(&format!("dot_named_{dt}"), &params, &[qh, kh], |_, a| {
            let s = a[0].dot(&a[1], &["head_dim"]);
            assert_eq!(axes(&s), ["batch", "seq", "kv_seq"], "dot_named result axes: batch, lhs free, rhs free");
            let s32 = a[0].dot_named(&a[1], &["head_dim"], Some(DType::F32));
            assert_eq!(s32.dtype(), DType::F32);
            vec![s, s32]
        });
        let want = tabulate(&[2, 3, 5], |i| {
            (0..4).map(|d| qv[ravel(&[i[0], i[1], d], &[2, 3, 4])] * kv[ravel(&[i[0], i[2], d], &[2, 5, 4])]).sum()
        });
        let tol = Tol { rtol: tol.rtol * 4.0, atol: tol.rtol * 16.0 };
        assert_eq!(out[0].dims, vec![2, 3, 5]);
        assert_close(&out[0].to_f64(), &want, tol, &format!("dot_named {dt}"));
        assert_close(&out[1].to_f64(), &want, Tol { rtol: 1e-5, atol: 1e-5 }, &format!("dot_named -> f32 {dt}"));
    }
}

#[test]
fn transpose_split_merge() {
    let x = data(24, 3, -2.0, 2.0);
    for (dt, _) in FLOATS {
        let (xh, xv) = float_input(&x, &[2, 12], dt);
        let params = [TensorType::named(dt, &[2, 12], &["seq", "qkv"])];
        let out = run_named(&format!("transpose_split_merge_{dt}"), &params, &[xh], |_, a| {
            let heads = a[0].split_axis("qkv", &[("heads", 3), ("head_dim", 4)]);
            assert_eq!(axes(&heads), ["seq", "heads", "head_dim"]);
            assert_eq!(heads.dims(), [2, 3, 4]);
            let t = heads.transpose_to(&["heads", "head_dim", "seq"]);
            assert_eq!(axes(&t), ["heads", "head_dim", "seq"]);
            let merged = t.merge_axes(&["heads", "head_dim"], "qkv");
            assert_eq!(axes(&merged), ["qkv", "seq"]);
            assert_eq!(merged.dims(), [12, 2]);
            let back = heads.merge_axes(&["heads", "head_dim"], "qkv");
            vec![heads, t, merged, back]
        });
        assert_close(&out[0].to_f64(), &xv, EXACT, &format!("split_axis is a row-major reshape {dt}"));
        let want = tabulate(&[3, 4, 2], |i| xv[i[2] * 12 + i[0] * 4 + i[1]]);
        assert_close(&out[1].to_f64(), &want, EXACT, &format!("transpose_to {dt}"));
        let want = tabulate(&[12, 2], |i| xv[i[1] * 12 + i[0]]);
        assert_close(&out[2].to_f64(), &want, EXACT, &format!("merge_axes after transpose {dt}"));
        assert_close(&out[3].to_f64(), &xv, EXACT, &format!("merge_axes undoes split_axis {dt}"));
    }
}

#[test]
fn sum_over_broadcast_like_zip_named() {
    let x = data(24, 4, -2.0, 2.0);
    let v = data(4, 5, -2.0, 2.0);
    let a = data(6, 6, -2.0, 2.0);
    let b = data(12, 7, -2.0, 2.0);
    for (dt, tol) in FLOATS {
        let (xh, xv) = float_input(&x, &[2, 3, 4], dt);
        let (vh, vv) = float_input(&v, &[4], dt);
        let (ah, av) = float_input(&a, &[2, 3], dt);
        let (bh, bv) = float_input(&b, &[3, 4], dt);
        let params = [
            TensorType::named(dt, &[2, 3, 4], &["batch", "seq", "embed"]),
            TensorType::named(dt, &[4], &["embed"]),
            TensorType::named(dt, &[2, 3], &["batch", "seq"]),
            TensorType::named(dt, &[3, 4], &["seq", "embed"]),
        ];
        let out = run_named(&format!("named_misc_{dt}"), &params, &[xh, vh, ah, bh], |_, p| {
            let s1 = p[0].sum_over(&["seq"]);
            assert_eq!(axes(&s1), ["batch", "embed"]);
            let s2 = p[0].sum_over(&["batch", "embed"]);
            assert_eq!(axes(&s2), ["seq"]);
            let bv = p[1].broadcast_like(p[0].ty());
            assert_eq!(axes(&bv), ["batch", "seq", "embed"]);
            let z = p[2].zip_named(&p[3], |x, y| x * y);
            assert_eq!(axes(&z), ["batch", "seq", "embed"]);
            let z2 = p[3].zip_named(&p[0], |x, y| x + y);
            assert_eq!(axes(&z2), ["seq", "embed", "batch"]);
            vec![s1, s2, bv, z, z2]
        });
        let dims = [2, 3, 4];
        let s1 = tabulate(&[2, 4], |i| (0..3).map(|s| xv[ravel(&[i[0], s, i[1]], &dims)]).sum());
        let s2 = tabulate(&[3], |i| (0..8).map(|k| xv[ravel(&[k / 4, i[0], k % 4], &dims)]).sum());
        let sum_tol = Tol { rtol: tol.rtol * 4.0, atol: tol.rtol * 16.0 };
        assert_close(&out[0].to_f64(), &s1, sum_tol, &format!("sum_over seq {dt}"));
        assert_close(&out[1].to_f64(), &s2, sum_tol, &format!("sum_over batch, embed {dt}"));
        assert_close(&out[2].to_f64(), &tabulate(&dims, |i| vv[i[2]]), EXACT, &format!("broadcast_like {dt}"));
        let z = tabulate(&dims, |i| av[i[0] * 3 + i[1]] * bv[i[1] * 4 + i[2]]);
        assert_close(&out[3].to_f64(), &z, tol, &format!("zip_named product {dt}"));
        let z2 = tabulate(&[3, 4, 2], |i| bv[i[0] * 4 + i[1]] + xv[ravel(&[i[2], i[0], i[1]], &dims)]);
        assert_close(&out[4].to_f64(), &z2, tol, &format!("zip_named sum, other's layout {dt}"));
    }
}

/// mlp: h = tanh(x @ w + 1); then 2 times h = h + colsum(h) broadcast back; returns (h, rowsum(h) as bf16).
fn small_program() -> Program {
    let g = Graph::new();
    let x = g.param(TensorType::named(DType::F32, &[2, 3], &["batch", "embed"]));
    let w = g.param(TensorType::named(DType::F32, &[3, 4], &["embed", "mlp"]));
    let h = {
        let _s = g.scope("mlp");
        x.dot(&w, &["embed"]).add_scalar(1.0).tanh()
    };
    let col = h.sum_over(&["batch"]);
    let h = g.fori_loop(0, 2, &[h], |_, _, c| vec![&c[0] + &col.broadcast_like(c[0].ty())]).remove(0);
    let row = h.sum_over(&["mlp"]).convert(DType::BF16);
    Program::new("small_program", g.finish(&[h, row]))
}

#[test]
fn golden_small_program_mlir() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/small_program.mlir");
    let p = small_program();
    let text = emit_program(&p);
    assert_eq!(text, emit_program(&small_program()), "emission is not deterministic");
    if std::env::var("MAXTEXT_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    } else {
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with MAXTEXT_UPDATE_GOLDEN=1 to create it)", path.display()));
        assert!(
            text == want,
            "emitted MLIR differs from {} (MAXTEXT_UPDATE_GOLDEN=1 regenerates it)\n--- got ---\n{text}",
            path.display()
        );
    }
    // The golden text is accepted by the plugin and computes what it says.
    let x = data(6, 8, -1.0, 1.0);
    let w = data(12, 9, -1.0, 1.0);
    let out = run_program(&p, &[HostTensor::from_f32(&x, &[2, 3]), HostTensor::from_f32(&w, &[3, 4])]);
    let (xv, wv): (Vec<f64>, Vec<f64>) = (x.iter().map(|v| *v as f64).collect(), w.iter().map(|v| *v as f64).collect());
    let mut h: Vec<f64> = matmul(&xv, &wv, 2, 3, 4).iter().map(|v| (v + 1.0).tanh()).collect();
    let col: Vec<f64> = (0..4).map(|j| h[j] + h[4 + j]).collect();
    for _ in 0..2 {
        h = h.iter().enumerate().map(|(i, v)| v + col[i % 4]).collect();
    }
    let row: Vec<f64> = (0..2).map(|i| h[i * 4..i * 4 + 4].iter().sum()).collect();
    assert_close(&out[0].to_f64(), &h, Tol { rtol: 1e-5, atol: 1e-5 }, "small program h");
    assert_eq!(out[1].dtype, DType::BF16);
    assert_close(&out[1].to_f64(), &row, Tol { rtol: 8e-3, atol: 1e-2 }, "small program rowsum (bf16)");
}
