//! Shared helpers of the per-op acceptance tests: one Runtime on the real XLA CPU plugin per test binary,
//! tracing + running a small program, deterministic inputs, bf16 rounding and tolerant comparison.
#![allow(dead_code)]

use maxtext::ir::{DType, Func, Graph, Literal, Program, Tensor, TensorType};
use maxtext::pjrt::{open_client, Hardware};
use maxtext::runtime::{HostTensor, Runtime};
use std::sync::OnceLock;

pub mod gcs;
pub mod gcs_faults;
pub mod orbax;
mod references;
#[allow(unused_imports)]
pub use references::*;

/// Owned copies of command-line arguments.
pub fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `maxtext train` of the tiny model (vocabulary 1024, rows of 32 tokens, run name `r`) followed by `keys`
/// (later keys win): what every end-to-end train test starts from.
pub fn tiny_train_args(keys: &[&str]) -> Vec<String> {
    let opening = [
        "train",
        "configs/base.yml",
        "model_name=qwen3-next-tiny",
        "override_model_config=true",
        "vocab_size=1024",
        "run_name=r",
        "max_target_length=32",
        "max_prefill_predict_length=32",
    ];
    strings(&[&opening[..], keys].concat())
}

/// Comparison tolerance: `|got - want| <= atol + rtol * |want|`.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub rtol: f64,
    pub atol: f64,
}

/// The float dtypes every float op is checked in, with a tolerance suited to each: f32 results are within
/// a few ulps (2^-23) of the f64 reference; bf16 results are rounded to 8 significant bits (ulp 2^-7), so
/// two bf16 ulps.
pub const FLOATS: [(DType, Tol); 2] =
    [(DType::F32, Tol { rtol: 2e-6, atol: 1e-6 }), (DType::BF16, Tol { rtol: 1.6e-2, atol: 2e-3 })];

/// The shared single-device CPU runtime of this test binary.
pub fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(open_client(Hardware::Cpu, None, Some(1)).expect("XLA CPU PJRT client")))
}

/// Traces `f` over parameters of types `params` into a function.
pub fn trace(params: &[TensorType], f: impl FnOnce(&Graph, &[Tensor]) -> Vec<Tensor>) -> Func {
    let g = Graph::new();
    let ps: Vec<Tensor> = params.iter().map(|t| g.param(t.clone())).collect();
    let results = f(&g, &ps);
    g.finish(&results)
}

/// Traces `f`, compiles it on the CPU plugin and runs it on `inputs` (whose types are the parameters).
pub fn run(name: &str, inputs: &[HostTensor], f: impl FnOnce(&Graph, &[Tensor]) -> Vec<Tensor>) -> Vec<HostTensor> {
    let params: Vec<TensorType> = inputs.iter().map(|x| TensorType::new(x.dtype, &x.dims)).collect();
    run_program(&Program::new(name, trace(&params, f)), inputs)
}

pub fn run_program(program: &Program, inputs: &[HostTensor]) -> Vec<HostTensor> {
    rt().run(program, inputs)
        .unwrap_or_else(|e| panic!("program `{}` failed: {e}\n{}", program.name, maxtext::emit::emit_program(program)))
}

/// `n` deterministic pseudo-random values uniform in `[lo, hi)` (a 64-bit LCG; reproducible across runs).
pub fn data(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

/// `n` deterministic integers in `[lo, hi)`.
pub fn ints(n: usize, seed: u64, lo: i32, hi: i32) -> Vec<i32> {
    data(n, seed, 0.0, 1.0).iter().map(|u| lo + ((hi - lo) as f32 * u) as i32).map(|v| v.min(hi - 1)).collect()
}

/// `values` rounded to `dtype` and back to f32 (what the device sees after upload).
pub fn round_to(values: &[f32], dtype: DType) -> Vec<f32> {
    HostTensor::from_f32_as(values, &[values.len() as i64], dtype).to_f32()
}

/// A host tensor of `dtype` holding `values` rounded to it, plus the rounded values as f64 for references.
pub fn float_input(values: &[f32], dims: &[i64], dtype: DType) -> (HostTensor, Vec<f64>) {
    let t = HostTensor::from_f32_as(values, dims, dtype);
    let v = t.to_f64();
    (t, v)
}

/// Asserts `|got - want| <= atol + rtol * |want|` elementwise; NaN must match NaN and infinities exactly.
pub fn assert_close(got: &[f64], want: &[f64], tol: Tol, what: &str) {
    let Tol { rtol, atol } = tol;
    assert_eq!(got.len(), want.len(), "{what}: {} values, want {}", got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= atol + rtol * w.abs()
        };
        assert!(ok, "{what}[{i}]: got {g}, want {w} (rtol {rtol}, atol {atol})\n got: {got:?}\nwant: {want:?}");
    }
}

/// Asserts exact equality of integer (or exactly representable) results.
pub fn assert_exact<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    assert_eq!(got, want, "{what}");
}

/// Row-major strides of `dims`.
pub fn strides(dims: &[i64]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1] as usize;
    }
    s
}

/// The multi-index of flat position `flat` in `dims`.
pub fn unravel(mut flat: usize, dims: &[i64]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for i in (0..dims.len()).rev() {
        idx[i] = flat % dims[i] as usize;
        flat /= dims[i] as usize;
    }
    idx
}

/// Flat position of `idx` in `dims`.
pub fn ravel(idx: &[usize], dims: &[i64]) -> usize {
    idx.iter().zip(strides(dims)).map(|(i, s)| i * s).sum()
}

/// Maps every element of the output shape `out` to `f(multi-index)` (a host reference in index form).
pub fn tabulate<T>(out: &[i64], f: impl Fn(&[usize]) -> T) -> Vec<T> {
    let n: i64 = out.iter().product();
    (0..n as usize).map(|i| f(&unravel(i, out))).collect()
}

/// Plain matrix product of row-major `a` [m,k] and `b` [k,n] in f64.
pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    c
}

/// An f64 constant of `dims`.
pub fn const_f64(g: &Graph, v: &[f64], dims: &[i64]) -> Tensor {
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    g.constant(Literal::Dense(bytes), TensorType::new(DType::F64, dims))
}

/// `sum(t * w)` in f64 with fixed weights `w` uniform in [-1, 1) (seeded): a scalar loss that sees every
/// element of `t` with a different weight (the gradient checks' probe).
pub fn wsum(t: &Tensor, seed: u64) -> Tensor {
    let t = t.convert(DType::F64);
    let n = t.ty().num_elements() as usize;
    let w: Vec<f64> = data(n, 1000 + seed, -1.0, 1.0).iter().map(|x| *x as f64).collect();
    let p = &t * &const_f64(&t.graph(), &w, t.dims());
    if p.rank() == 0 {
        p
    } else {
        p.sum(&(0..p.rank() as i64).collect::<Vec<_>>())
    }
}
