//! Per-op acceptance tests on the real XLA CPU plugin, part 1: constants, iota and the elementwise ops
//! (unary, binary, compare, select, clamp, convert, bitcast_convert). Each op is checked against a host
//! reference in plain Rust, in f32 and (for float ops) in bf16 with inputs rounded to bf16 first.

mod common;

use common::*;
use maxtext::ir::{BinaryOp, CompareDir, DType, Literal, Tensor, TensorType, UnaryOp};
use maxtext::runtime::HostTensor;

const EXACT: Tol = Tol { rtol: 0.0, atol: 0.0 };

#[test]
fn constants() {
    let f32s = [1.5f32, -2.25, 0.1, 3.0e30, -0.0, 7.0];
    let bf16_dense: Vec<u8> =
        [0.5f32, -3.0, 1.0e-3].iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
    let preds = [true, false, false, true, true, false];
    let out = run("constants", &[], |g, _| {
        vec![
            g.from_f32(&f32s, &[2, 3]),
            g.full(0.1, DType::BF16, &[4]),
            g.constant(Literal::Dense(bf16_dense), TensorType::new(DType::BF16, &[3])),
            g.from_i32(&[-7, 0, 2147483647, -2147483648], &[2, 2]),
            g.constant(Literal::Dense(preds.iter().map(|b| *b as u8).collect()), TensorType::new(DType::Pred, &[3, 2])),
            g.from_u64(&[u64::MAX, 1 << 63, 5], &[3]),
            g.scalar(-4.5, DType::F32),
            g.full(-3.0, DType::S32, &[2]),
            g.full(1.0, DType::Pred, &[2]),
        ]
    });
    assert_eq!(out[0].to_f32(), f32s.to_vec(), "dense f32");
    assert_eq!(out[0].dims, vec![2, 3]);
    let bf = half::bf16::from_f64(0.1).to_f32();
    assert_eq!(out[1].dtype, DType::BF16);
    assert_eq!(out[1].to_f32(), vec![bf; 4], "bf16 splat");
    assert_eq!(out[2].to_f32(), round_to(&[0.5, -3.0, 1.0e-3], DType::BF16), "dense bf16");
    assert_eq!(out[3].to_i64(), vec![-7, 0, 2147483647, -2147483648], "dense i32");
    assert_eq!(out[4].data, preds.iter().map(|b| *b as u8).collect::<Vec<_>>(), "dense pred");
    assert_eq!(out[5].to_u64(), vec![u64::MAX, 1 << 63, 5], "dense u64");
    assert_eq!(out[6].to_f32(), vec![-4.5], "f32 scalar");
    assert_eq!(out[7].to_i64(), vec![-3, -3], "s32 splat");
    assert_eq!(out[8].data, vec![1, 1], "pred splat");
}

#[test]
fn iota() {
    let out = run("iota", &[], |g, _| {
        vec![
            g.iota(DType::S32, &[3, 4], 1),
            g.iota(DType::F32, &[3, 4], 0),
            g.iota(DType::BF16, &[5], 0),
            g.iota(DType::U32, &[2, 2, 3], 2),
        ]
    });
    assert_eq!(out[0].to_i64(), tabulate(&[3, 4], |i| i[1] as i64));
    assert_eq!(out[1].to_f32(), tabulate(&[3, 4], |i| i[0] as f32));
    assert_eq!(out[2].to_f32(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(out[3].to_i64(), tabulate(&[2, 2, 3], |i| i[2] as i64));
}

/// An op with its host reference.
type UnaryCase = (UnaryOp, fn(f64) -> f64);
type BinaryCase<T> = (BinaryOp, fn(T, T) -> T);

fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

#[test]
fn unary_float() {
    // x spans signs and includes the rounding ties; p is positive (log, sqrt, rsqrt); s is tiny, where
    // expm1 and log1p must beat exp(x)-1 and log(1+x).
    let mut x = vec![-2.5f32, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, 3.5, -0.49, 0.51];
    x.extend(data(14, 1, -3.0, 3.0));
    let p = data(24, 2, 0.05, 6.0);
    let s: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) * 1e-4 + 1e-5).collect();
    let float_ops: [UnaryCase; 12] = [
        (UnaryOp::Neg, |v| -v),
        (UnaryOp::Abs, f64::abs),
        (UnaryOp::Sign, |v| if v == 0.0 { 0.0 } else { v.signum() }),
        (UnaryOp::Exp, f64::exp),
        (UnaryOp::Expm1, f64::exp_m1),
        (UnaryOp::Tanh, f64::tanh),
        (UnaryOp::Logistic, |v| 1.0 / (1.0 + (-v).exp())),
        (UnaryOp::Sin, f64::sin),
        (UnaryOp::Cos, f64::cos),
        (UnaryOp::Floor, f64::floor),
        (UnaryOp::Ceil, f64::ceil),
        (UnaryOp::RoundNearestEven, round_half_even),
    ];
    let pos_ops: [UnaryCase; 4] = [
        (UnaryOp::Log, f64::ln),
        (UnaryOp::Log1p, f64::ln_1p),
        (UnaryOp::Sqrt, f64::sqrt),
        (UnaryOp::Rsqrt, |v| 1.0 / v.sqrt()),
    ];
    let small_ops: [UnaryCase; 2] = [(UnaryOp::Expm1, f64::exp_m1), (UnaryOp::Log1p, f64::ln_1p)];
    for (dt, tol) in FLOATS {
        let (xh, xv) = float_input(&x, &[4, 6], dt);
        let (ph, pv) = float_input(&p, &[4, 6], dt);
        let (sh, sv) = float_input(&s, &[4, 6], dt);
        let out = run(&format!("unary_{dt}"), &[xh, ph, sh], |_, a| {
            let mut r: Vec<Tensor> = float_ops.iter().map(|(op, _)| a[0].unary(*op)).collect();
            r.extend(pos_ops.iter().map(|(op, _)| a[1].unary(*op)));
            r.extend(small_ops.iter().map(|(op, _)| a[2].unary(*op)));
            r
        });
        // Near-zero results of tiny inputs are only meaningful relative to themselves: no atol there.
        let rel = Tol { atol: 0.0, ..tol };
        let cases = float_ops
            .iter()
            .map(|c| (c, &xv, tol))
            .chain(pos_ops.iter().map(|c| (c, &pv, tol)))
            .chain(small_ops.iter().map(|c| (c, &sv, rel)));
        for (((op, f), inp, tol), got) in cases.zip(&out) {
            assert_eq!(got.dtype, dt, "{op:?} result dtype");
            let want: Vec<f64> = inp.iter().map(|v| f(*v)).collect();
            assert_close(&got.to_f64(), &want, tol, &format!("{op:?} {dt}"));
        }
    }
}

#[test]
fn unary_int_and_pred() {
    let x = [-5i32, -1, 0, 1, 7, i32::MAX, i32::MIN, 123456];
    let u = [0u32, 1, 0x8000_0000, u32::MAX];
    let b = [true, false, true, false];
    let out = run(
        "unary_int",
        &[HostTensor::from_i32(&x, &[8]), HostTensor::from_u32(&u, &[4]), HostTensor::from_bool(&b, &[4])],
        |_, a| {
            vec![
                a[0].unary(UnaryOp::Neg),
                a[0].unary(UnaryOp::Abs),
                a[0].unary(UnaryOp::Sign),
                a[0].unary(UnaryOp::Not),
                a[1].unary(UnaryOp::Not),
                a[2].unary(UnaryOp::Not),
            ]
        },
    );
    let m = |f: fn(i32) -> i32| x.iter().map(|v| f(*v) as i64).collect::<Vec<_>>();
    assert_exact(&out[0].to_i64(), &m(i32::wrapping_neg), "neg s32");
    assert_exact(&out[1].to_i64(), &m(i32::wrapping_abs), "abs s32");
    assert_exact(&out[2].to_i64(), &m(i32::signum), "sign s32");
    assert_exact(&out[3].to_i64(), &m(|v| !v), "not s32");
    assert_exact(&out[4].to_i64(), &u.iter().map(|v| !v as i64).collect::<Vec<_>>(), "not u32");
    assert_eq!(out[5].dtype, DType::Pred);
    assert_exact(&out[5].data, &b.iter().map(|v| !v as u8).collect::<Vec<_>>(), "not pred");
}

#[test]
fn is_finite() {
    let x = [1.0f32, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -0.0, 1.0e30, -1.0e-30];
    for (dt, _) in FLOATS {
        let (xh, xv) = float_input(&x, &[2, 4], dt);
        let out = run(&format!("is_finite_{dt}"), &[xh], |_, a| vec![a[0].unary(UnaryOp::IsFinite)]);
        assert_eq!(out[0].dtype, DType::Pred);
        assert_exact(
            &out[0].data,
            &xv.iter().map(|v| v.is_finite() as u8).collect::<Vec<_>>(),
            &format!("is_finite {dt}"),
        );
    }
}

#[test]
fn binary_float() {
    let a = data(24, 3, -4.0, 4.0);
    // b: nonzero divisors of both signs; e: exponents; p: positive bases.
    let b: Vec<f32> = data(24, 4, 0.5, 3.0).iter().enumerate().map(|(i, v)| if i % 3 == 0 { -v } else { *v }).collect();
    let e = data(24, 5, -2.0, 2.0);
    let p = data(24, 6, 0.1, 3.0);
    let ops: [BinaryCase<f64>; 8] = [
        (BinaryOp::Add, |x, y| x + y),
        (BinaryOp::Sub, |x, y| x - y),
        (BinaryOp::Mul, |x, y| x * y),
        (BinaryOp::Div, |x, y| x / y),
        (BinaryOp::Rem, |x, y| x % y),
        (BinaryOp::Max, f64::max),
        (BinaryOp::Min, f64::min),
        (BinaryOp::Atan2, f64::atan2),
    ];
    for (dt, tol) in FLOATS {
        let (ah, av) = float_input(&a, &[4, 6], dt);
        let (bh, bv) = float_input(&b, &[4, 6], dt);
        let (eh, ev) = float_input(&e, &[4, 6], dt);
        let (ph, pv) = float_input(&p, &[4, 6], dt);
        let out = run(&format!("binary_{dt}"), &[ah, bh, eh, ph], |_, x| {
            let mut r: Vec<Tensor> = ops.iter().map(|(op, _)| x[0].binary(*op, &x[1])).collect();
            r.push(x[3].pow(&x[2]));
            r
        });
        for ((op, f), got) in ops.iter().zip(&out) {
            let want: Vec<f64> = av.iter().zip(&bv).map(|(x, y)| f(*x, *y)).collect();
            // rem of rounded inputs is exact in f32; in bf16 only the final rounding remains.
            assert_close(&got.to_f64(), &want, tol, &format!("{op:?} {dt}"));
        }
        let want: Vec<f64> = pv.iter().zip(&ev).map(|(x, y)| x.powf(*y)).collect();
        assert_close(&out[8].to_f64(), &want, Tol { rtol: tol.rtol * 4.0, ..tol }, &format!("Pow {dt}"));
    }
}

/// StableHLO's maximum/minimum propagate NaN from either side. The XLA CPU plugin, with the default compile
/// options, propagates it only from the lhs (XLA:CPU "fast min/max"): `max(1, NaN) = 1`. This pins the
/// plugin's behaviour so that a change (e.g. compiling with `xla_cpu_enable_fast_min_max=false`) shows up.
#[test]
fn max_min_nan() {
    let a = [f32::NAN, 1.0, -0.0, f32::INFINITY];
    let b = [2.0f32, f32::NAN, 3.0, 1.0];
    let out = run("max_min_nan", &[HostTensor::from_f32(&a, &[4]), HostTensor::from_f32(&b, &[4])], |_, x| {
        vec![x[0].max(&x[1]), x[0].min(&x[1])]
    });
    assert_close(&out[0].to_f64(), &[f64::NAN, 1.0, 3.0, f64::INFINITY], EXACT, "max with NaN");
    assert_close(&out[1].to_f64(), &[f64::NAN, 1.0, -0.0, 1.0], EXACT, "min with NaN");
}

#[test]
fn binary_int() {
    let a = [-7i32, 7, -8, 9, 100, i32::MIN, -1, 12345, 0, 65536];
    let b = [2i32, -2, 3, -4, 7, 3, 5, -11, 9, 3];
    let ops: [BinaryCase<i32>; 10] = [
        (BinaryOp::Add, i32::wrapping_add),
        (BinaryOp::Sub, i32::wrapping_sub),
        (BinaryOp::Mul, i32::wrapping_mul),
        (BinaryOp::Div, i32::wrapping_div),
        (BinaryOp::Rem, i32::wrapping_rem),
        (BinaryOp::Max, std::cmp::max),
        (BinaryOp::Min, std::cmp::min),
        (BinaryOp::And, |x, y| x & y),
        (BinaryOp::Or, |x, y| x | y),
        (BinaryOp::Xor, |x, y| x ^ y),
    ];
    // Shift amounts of 32 and more give 0 (XLA's semantics for both shifts).
    let v = [1i32, -1, 0x1234_5678, i32::MIN, -8, 3, 255, 7];
    let s = [0i32, 1, 4, 31, 3, 32, 33, 8];
    let shl = |x: i32, n: i32| if (n as u32) < 32 { ((x as u32) << n) as i32 } else { 0 };
    let shr = |x: i32, n: i32| if (n as u32) < 32 { ((x as u32) >> n) as i32 } else { 0 };
    let uv: Vec<u32> = v.iter().map(|x| *x as u32).collect();
    let us: Vec<u32> = s.iter().map(|x| *x as u32).collect();
    let pa = [true, true, false, false];
    let pb = [true, false, true, false];
    let inputs = [
        HostTensor::from_i32(&a, &[10]),
        HostTensor::from_i32(&b, &[10]),
        HostTensor::from_i32(&v, &[8]),
        HostTensor::from_i32(&s, &[8]),
        HostTensor::from_u32(&uv, &[8]),
        HostTensor::from_u32(&us, &[8]),
        HostTensor::from_bool(&pa, &[4]),
        HostTensor::from_bool(&pb, &[4]),
    ];
    let out = run("binary_int", &inputs, |_, x| {
        let mut r: Vec<Tensor> = ops.iter().map(|(op, _)| x[0].binary(*op, &x[1])).collect();
        for (v, s) in [(&x[2], &x[3]), (&x[4], &x[5])] {
            r.push(v.binary(BinaryOp::ShiftLeft, s));
            r.push(v.binary(BinaryOp::ShiftRightLogical, s));
        }
        for op in [BinaryOp::And, BinaryOp::Or, BinaryOp::Xor] {
            r.push(x[6].binary(op, &x[7]));
        }
        r
    });
    for ((op, f), got) in ops.iter().zip(&out) {
        let want: Vec<i64> = a.iter().zip(&b).map(|(x, y)| f(*x, *y) as i64).collect();
        assert_exact(&got.to_i64(), &want, &format!("{op:?} s32"));
    }
    let want_shl: Vec<i64> = v.iter().zip(&s).map(|(x, n)| shl(*x, *n) as i64).collect();
    let want_shr: Vec<i64> = v.iter().zip(&s).map(|(x, n)| shr(*x, *n) as i64).collect();
    assert_exact(&out[10].to_i64(), &want_shl, "shift_left s32");
    assert_exact(&out[11].to_i64(), &want_shr, "shift_right_logical s32");
    let as_u32 = |w: &[i64]| w.iter().map(|x| *x as i32 as u32 as i64).collect::<Vec<_>>();
    assert_exact(&out[12].to_i64(), &as_u32(&want_shl), "shift_left u32");
    assert_exact(&out[13].to_i64(), &as_u32(&want_shr), "shift_right_logical u32");
    let bits = |f: fn(bool, bool) -> bool| pa.iter().zip(&pb).map(|(x, y)| f(*x, *y) as u8).collect::<Vec<_>>();
    assert_exact(&out[14].data, &bits(|x, y| x & y), "and pred");
    assert_exact(&out[15].data, &bits(|x, y| x | y), "or pred");
    assert_exact(&out[16].data, &bits(|x, y| x ^ y), "xor pred");
}

const DIRS: [CompareDir; 6] =
    [CompareDir::Eq, CompareDir::Ne, CompareDir::Lt, CompareDir::Le, CompareDir::Gt, CompareDir::Ge];

fn cmp_ref<T: PartialOrd>(dir: CompareDir, x: T, y: T) -> bool {
    match dir {
        CompareDir::Eq => x == y,
        CompareDir::Ne => x != y,
        CompareDir::Lt => x < y,
        CompareDir::Le => x <= y,
        CompareDir::Gt => x > y,
        CompareDir::Ge => x >= y,
    }
}

#[test]
fn compare_float() {
    // NaN compares unordered (only NE holds); -0 == +0.
    let a = [1.0f32, 2.0, 3.0, f32::NAN, -0.0, f32::NEG_INFINITY, 5.5, -1.25];
    let b = [2.0f32, 2.0, 1.0, 1.0, 0.0, -1.0e30, f32::NAN, -1.25];
    for (dt, _) in FLOATS {
        let (ah, av) = float_input(&a, &[8], dt);
        let (bh, bv) = float_input(&b, &[8], dt);
        let out =
            run(&format!("compare_{dt}"), &[ah, bh], |_, x| DIRS.iter().map(|d| x[0].compare(*d, &x[1])).collect());
        for (d, got) in DIRS.iter().zip(&out) {
            let want: Vec<u8> = av.iter().zip(&bv).map(|(x, y)| cmp_ref(*d, *x, *y) as u8).collect();
            assert_exact(&got.data, &want, &format!("compare {d:?} {dt}"));
        }
    }
}

#[test]
fn compare_int() {
    let a = [-3i32, 0, 5, 5, i32::MIN, 7];
    let b = [2i32, 0, -5, 6, i32::MAX, 7];
    // Unsigned order differs from signed order above 2^31.
    let ua = [1u32, 0x8000_0000, u32::MAX, 7, 0, 3];
    let ub = [0x8000_0001u32, 1, 0x7FFF_FFFF, 7, u32::MAX, 2];
    let inputs = [
        HostTensor::from_i32(&a, &[6]),
        HostTensor::from_i32(&b, &[6]),
        HostTensor::from_u32(&ua, &[6]),
        HostTensor::from_u32(&ub, &[6]),
    ];
    let out = run("compare_int", &inputs, |_, x| {
        let mut r: Vec<Tensor> = DIRS.iter().map(|d| x[0].compare(*d, &x[1])).collect();
        r.extend(DIRS.iter().map(|d| x[2].compare(*d, &x[3])));
        r
    });
    for (k, d) in DIRS.iter().enumerate() {
        let want: Vec<u8> = a.iter().zip(&b).map(|(x, y)| cmp_ref(*d, x, y) as u8).collect();
        assert_exact(&out[k].data, &want, &format!("compare {d:?} s32"));
        let want: Vec<u8> = ua.iter().zip(&ub).map(|(x, y)| cmp_ref(*d, x, y) as u8).collect();
        assert_exact(&out[6 + k].data, &want, &format!("compare {d:?} u32"));
    }
}

#[test]
fn select_and_clamp() {
    let p = [true, false, false, true, true, false];
    let x = data(6, 7, -3.0, 3.0);
    let y = data(6, 8, -3.0, 3.0);
    let lo = data(6, 9, -2.0, -0.5);
    let hi = data(6, 10, 0.5, 2.0);
    for (dt, _) in FLOATS {
        let (xh, xv) = float_input(&x, &[2, 3], dt);
        let (yh, yv) = float_input(&y, &[2, 3], dt);
        let (loh, lov) = float_input(&lo, &[2, 3], dt);
        let (hih, hiv) = float_input(&hi, &[2, 3], dt);
        let inputs = [HostTensor::from_bool(&p, &[2, 3]), xh, yh, loh, hih, HostTensor::from_bool(&[false], &[])];
        let out = run(&format!("select_clamp_{dt}"), &inputs, |g, a| {
            vec![
                a[0].select(&a[1], &a[2]),
                a[5].select(&a[1], &a[2]),
                a[1].clamp(&a[3], &a[4]),
                a[1].clamp(&g.scalar(-1.0, dt), &g.scalar(0.75, dt)),
            ]
        });
        let sel: Vec<f64> = (0..6).map(|i| if p[i] { xv[i] } else { yv[i] }).collect();
        assert_close(&out[0].to_f64(), &sel, EXACT, &format!("select {dt}"));
        assert_close(&out[1].to_f64(), &yv, EXACT, &format!("select scalar pred {dt}"));
        let cl: Vec<f64> = (0..6).map(|i| xv[i].max(lov[i]).min(hiv[i])).collect();
        assert_close(&out[2].to_f64(), &cl, EXACT, &format!("clamp {dt}"));
        let cl: Vec<f64> = xv.iter().map(|v| v.clamp(-1.0, 0.75)).collect();
        assert_close(&out[3].to_f64(), &cl, EXACT, &format!("clamp scalar bounds {dt}"));
    }
    let xi = [-9i32, -1, 0, 4, 12, 3];
    let out = run("clamp_s32", &[HostTensor::from_i32(&xi, &[6])], |g, a| {
        vec![a[0].clamp(&g.scalar(-2.0, DType::S32), &g.scalar(5.0, DType::S32))]
    });
    assert_exact(
        &out[0].to_i64(),
        &xi.iter().map(|v| v.clamp(&-2, &5).to_owned() as i64).collect::<Vec<_>>(),
        "clamp s32",
    );
}

#[test]
fn convert() {
    // 1 + 2^-8 is a tie between two bf16 values (rounds to even: 1.0); 1 + 3*2^-8 rounds up.
    let f = [1.0f32 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, 0.1, -2.7, 65504.0, 1.0e-3, -0.5, 3.0e38];
    let t = [-2.7f32, -0.5, 0.5, 2.7, 100.9, -100.9, 0.0, -1.0];
    let i = [16_777_217i32, -3, 0, 1 << 30, -123_456_789, 7];
    let p = [true, false, true];
    let inputs = [
        HostTensor::from_f32(&f, &[8]),
        HostTensor::from_f32(&t, &[8]),
        HostTensor::from_i32(&i, &[6]),
        HostTensor::from_bool(&p, &[3]),
    ];
    let out = run("convert", &inputs, |_, a| {
        let bf = a[0].convert(DType::BF16);
        vec![
            bf.clone(),
            bf.convert(DType::F16),
            bf.convert(DType::F16).convert(DType::F32),
            a[0].convert(DType::F16),
            a[0].convert(DType::F16).convert(DType::BF16),
            bf.convert(DType::F32),
            a[1].convert(DType::S32),
            a[2].convert(DType::F32),
            a[3].convert(DType::F32),
        ]
    });
    let bf: Vec<half::bf16> = f.iter().map(|v| half::bf16::from_f32(*v)).collect();
    let bits = |h: &HostTensor| h.data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>();
    assert_eq!(out[0].dtype, DType::BF16);
    assert_exact(
        &bits(&out[0]),
        &bf.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "f32 -> bf16 (round to nearest even)",
    );
    let bf_f16: Vec<half::f16> = bf.iter().map(|v| half::f16::from_f32(v.to_f32())).collect();
    assert_eq!(out[1].dtype, DType::F16);
    assert_exact(&bits(&out[1]), &bf_f16.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "bf16 -> f16");
    assert_exact(&out[2].to_f32(), &bf_f16.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), "f16 -> f32");
    let f16s: Vec<half::f16> = f.iter().map(|v| half::f16::from_f32(*v)).collect();
    assert_exact(&bits(&out[3]), &f16s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "f32 -> f16");
    let f16_bf: Vec<u16> = f16s.iter().map(|v| half::bf16::from_f32(v.to_f32()).to_bits()).collect();
    assert_exact(&bits(&out[4]), &f16_bf, "f16 -> bf16");
    assert_exact(&out[5].to_f32(), &bf.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), "bf16 -> f32");
    assert_eq!(out[6].dtype, DType::S32);
    assert_exact(
        &out[6].to_i64(),
        &t.iter().map(|v| v.trunc() as i64).collect::<Vec<_>>(),
        "f32 -> s32 truncates toward zero",
    );
    assert_exact(&out[7].to_f32(), &i.iter().map(|v| *v as f32).collect::<Vec<_>>(), "s32 -> f32");
    assert_exact(&out[8].to_f32(), &[1.0, 0.0, 1.0], "pred -> f32");
}

#[test]
fn bitcast_convert() {
    let f = [1.0f32, -2.5, 0.0, -0.0, f32::INFINITY, 1.0e-40, 3.4e38];
    let u: Vec<u32> = [0x3F80_0000u32, 0xC020_0000, 0x7F7F_FFFF, 0x0000_0001, 0x8000_0000].to_vec();
    let out = run("bitcast", &[HostTensor::from_f32(&f, &[7]), HostTensor::from_u32(&u, &[5])], |_, a| {
        vec![a[0].bitcast(DType::U32), a[1].bitcast(DType::F32), a[0].bitcast(DType::U32).bitcast(DType::F32)]
    });
    assert_eq!(out[0].dtype, DType::U32);
    assert_exact(&out[0].to_i64(), &f.iter().map(|v| v.to_bits() as i64).collect::<Vec<_>>(), "f32 -> u32");
    let got: Vec<u32> = out[1].to_f32().iter().map(|v| v.to_bits()).collect();
    assert_exact(&got, &u, "u32 -> f32");
    let got: Vec<u32> = out[2].to_f32().iter().map(|v| v.to_bits()).collect();
    assert_exact(&got, &f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "f32 -> u32 -> f32 round trip");
}
