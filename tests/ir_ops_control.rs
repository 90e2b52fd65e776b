//! Per-op acceptance tests on the real XLA CPU plugin, part 4: while_loop / fori_loop (captures, nesting),
//! rng_bit_generator, sharding_constraint on one device and optimization_barrier.

mod common;

use common::*;
use maxtext::ir::{DType, Graph, Mesh, Program, RngAlgorithm, Sharding, Tensor, TensorType};
use maxtext::runtime::HostTensor;

const EXACT: Tol = Tol { rtol: 0.0, atol: 0.0 };

#[test]
fn while_loop_with_capture() {
    // while (i < n) { acc = acc * 0.5 + w; i += 1 } with `w` and `n` captured from the outer function.
    let w = data(6, 1, -1.0, 1.0);
    let acc0 = data(6, 2, -4.0, 4.0);
    for (dt, tol) in FLOATS {
        let (wh, wv) = float_input(&w, &[2, 3], dt);
        let (ah, av) = float_input(&acc0, &[2, 3], dt);
        let inputs = [wh, ah, HostTensor::from_i32(&[5], &[])];
        let out = run(&format!("while_{dt}"), &inputs, |g, a| {
            let (w, n) = (a[0].clone(), a[2].clone());
            let init = [g.scalar(0.0, DType::S32), a[1].clone()];
            // `n` and `w` are the lhs of ops inside the bodies: the op still belongs to the body.
            g.while_loop(
                &init,
                |_, c| n.gt(&c[0]),
                |g, c| vec![&c[0] + &g.scalar(1.0, DType::S32), &w + &c[1].mul_scalar(0.5)],
            )
        });
        assert_exact(&out[0].to_i64(), &[5], "while trip count");
        let mut want = av.clone();
        for _ in 0..5 {
            want = want.iter().zip(&wv).map(|(a, w)| a * 0.5 + w).collect();
        }
        // bf16 rounds every iteration.
        assert_close(
            &out[1].to_f64(),
            &want,
            Tol { rtol: tol.rtol * 2.0, atol: tol.atol * 4.0 },
            &format!("while carry {dt}"),
        );
    }
}

#[test]
fn fori_loop_nested() {
    // for i in 0..4 { for j in 0..3 { x = x + (i * j) * v } ; x = x * s } with v (outer-outer capture)
    // used in the inner body and the counter of the outer loop as the lhs of an op in the inner one.
    let v = data(4, 3, -1.0, 1.0);
    let x0 = data(4, 4, -1.0, 1.0);
    for (dt, tol) in FLOATS {
        let (vh, vv) = float_input(&v, &[4], dt);
        let (xh, xv) = float_input(&x0, &[4], dt);
        let out = run(&format!("fori_nested_{dt}"), &[vh, xh], |g, a| {
            let v = a[0].clone();
            let s = g.full(0.75, dt, &[4]);
            g.fori_loop(0, 4, &[a[1].clone()], |g, i, c| {
                let inner = g.fori_loop(0, 3, &[c[0].clone()], |_, j, c| {
                    let ij = (i * j).convert(dt).broadcast_to(&[4]);
                    vec![&c[0] + &(&ij * &v)]
                });
                vec![&inner[0] * &s]
            })
        });
        let mut want = xv.clone();
        for i in 0..4 {
            for j in 0..3 {
                want = want.iter().zip(&vv).map(|(x, v)| x + (i * j) as f64 * v).collect();
            }
            want = want.iter().map(|x| x * 0.75).collect();
        }
        assert_close(
            &out[0].to_f64(),
            &want,
            Tol { rtol: tol.rtol * 4.0, atol: tol.atol * 8.0 },
            &format!("nested fori_loop {dt}"),
        );
    }
}

/// Traces (new state, bits) of both algorithms from one u64[2] state parameter.
fn rng_program() -> Program {
    let f = trace(&[TensorType::new(DType::U64, &[2])], |g, a| {
        let out = TensorType::new(DType::U32, &[64, 64]);
        let (s3, b3) = g.rng_bit_generator(&a[0], RngAlgorithm::ThreeFry, out.clone());
        let (sp, bp) = g.rng_bit_generator(&a[0], RngAlgorithm::Philox, out);
        vec![s3, b3, sp, bp]
    });
    Program::new("rng", f)
}

fn u32s(h: &HostTensor) -> Vec<u32> {
    h.to_i64().iter().map(|v| *v as u32).collect()
}

#[test]
fn rng_bit_generator() {
    let p = rng_program();
    let state = HostTensor::from_u64(&[0x1234_5678_9ABC_DEF0, 7], &[2]);
    let a = run_program(&p, std::slice::from_ref(&state));
    let b = run_program(&p, std::slice::from_ref(&state));
    for (k, name) in [(0, "THREE_FRY"), (2, "PHILOX")] {
        assert_eq!(a[k + 1].dtype, DType::U32);
        assert_eq!(a[k + 1].data, b[k + 1].data, "{name}: same state must give identical bits");
        assert_eq!(a[k].data, b[k].data, "{name}: same state must give the same new state");
        assert_ne!(a[k].to_u64(), state.to_u64(), "{name}: the output state must differ from the input state");
        let next = run_program(&p, &[a[k].clone()]);
        let (x, y) = (u32s(&a[k + 1]), u32s(&next[k + 1]));
        let same = x.iter().zip(&y).filter(|(p, q)| p == q).count();
        assert!(same < 4, "{name}: the next call on the output state repeats {same} of 4096 values");
        for bits in [&x, &y] {
            // Uniform u32: mean 2^31, standard error 2^32 / sqrt(12 * 4096).
            let mean = bits.iter().map(|v| *v as f64).sum::<f64>() / bits.len() as f64;
            let se = 2f64.powi(32) / (12.0 * bits.len() as f64).sqrt();
            assert!((mean - 2f64.powi(31)).abs() < 4.0 * se, "{name}: mean {mean} is not within 4 s.e. ({se}) of 2^31");
            // Every bit position is set about half the time (binomial s.e. 32 of 4096).
            for bit in 0..32 {
                let ones = bits.iter().filter(|v| (*v >> bit) & 1 == 1).count() as f64;
                assert!((ones - 2048.0).abs() < 5.0 * 32.0, "{name}: bit {bit} set {ones} times of 4096");
            }
        }
    }
    assert_ne!(a[1].data, a[3].data, "THREE_FRY and PHILOX give different bits");
}

#[test]
fn sharding_constraint_single_device() {
    let x = data(8, 5, -2.0, 2.0);
    let params = [TensorType::new(DType::F32, &[2, 4])];
    let f = || {
        trace(&params, |_, a| {
            let y = a[0].with_sharding(Sharding::new(&[&["data"], &[]]));
            vec![y.clone(), y.tanh().with_sharding(Sharding::replicated(2))]
        })
    };
    // Without a mesh, and on a 1-device mesh (whose size-1 axes shard nothing).
    let plain = Program::new("sharding_constraint", f());
    let meshed = Program::new("sharding_constraint_mesh1", f())
        .with_mesh(Mesh::new(&[("data", 1)]))
        .shard_arg(0, Sharding::new(&[&["data"], &[]]))
        .shard_result(0, Sharding::new(&[&["data"], &[]]));
    let (xh, xv) = float_input(&x, &[2, 4], DType::F32);
    for p in [plain, meshed] {
        let out = run_program(&p, std::slice::from_ref(&xh));
        assert_close(&out[0].to_f64(), &xv, EXACT, &format!("{}: passes the value through", p.name));
        let want: Vec<f64> = xv.iter().map(|v| v.tanh()).collect();
        assert_close(&out[1].to_f64(), &want, FLOATS[0].1, &format!("{}: tanh after the constraint", p.name));
    }
}

#[test]
fn optimization_barrier() {
    let x = data(6, 6, -2.0, 2.0);
    let y = [3i32, -1, 4];
    for (dt, tol) in FLOATS {
        let (xh, xv) = float_input(&x, &[2, 3], dt);
        let out = run(&format!("optimization_barrier_{dt}"), &[xh, HostTensor::from_i32(&y, &[3])], |g, a| {
            let e = a[0].exp();
            let b = g.optimization_barrier(&[e, a[1].clone()]);
            vec![&b[0] + &a[0], b[1].clone()]
        });
        let want: Vec<f64> = xv.iter().map(|v| v.exp() + v).collect();
        assert_close(
            &out[0].to_f64(),
            &want,
            Tol { rtol: tol.rtol * 2.0, ..tol },
            &format!("through optimization_barrier {dt}"),
        );
        assert_exact(&out[1].to_i64(), &[3, -1, 4], "s32 through optimization_barrier");
    }
}

/// A loop whose body uses nothing but its own carries still closes over no captures (emitted with none).
#[test]
fn while_loop_without_captures() {
    let g = Graph::new();
    let x = g.param(TensorType::new(DType::F32, &[3]));
    let out: Vec<Tensor> = g.fori_loop(0, 10, &[x], |_, _, c| vec![c[0].add_scalar(1.0)]);
    let p = Program::new("loop_no_capture", g.finish(&out));
    let got = run_program(&p, &[HostTensor::from_f32(&[0.0, 1.0, -2.5], &[3])]);
    assert_close(&got[0].to_f64(), &[10.0, 11.0, 7.5], EXACT, "fori_loop 10 times");
}
