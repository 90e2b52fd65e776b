//! Random initialisation as a program: its results are the parameters, with their shardings, so each
//! device computes only its own shard and no parameter ever exists whole on the host.
//!
//! Every value is a pure function of (`init_weights_seed`, parameter path, global element index): a
//! 64-bit key hashed from the seed and the path (SHA-256, as the host init did) and the element's row-major
//! index feed SplitMix64 (`z = key + index * golden; mix(z)`, the n-th output of a SplitMix64 stream),
//! built from the IR's u64 multiply / xor / shift on an iota. The SPMD partitioner gives each device the
//! iota of its own shard, so the values do not depend on the mesh. Distributions follow `Init`:
//! uniform from the top 24 bits, `log(uniform)`, and the truncated normal on [-2, 2] the way JAX draws it
//! (`sqrt(2) * erfinv(u)` with `u` uniform on `(erf(-sqrt 2), erf(sqrt 2))`), erfinv being Giles'
//! single-precision approximation (what XLA uses for f32), so no rejection loop is needed.

use sha2::{Digest, Sha256};

use super::layout::lay_out;
use crate::config::Config;
use crate::ir::{BinaryOp, DType, Graph, Literal, Program, Tensor, TensorType};
use crate::nn::{Init, ParamDecl};
use crate::sharding::{sharding_context, ShardingError};

/// `erf(sqrt(2))`: the truncated normal's uniform range is `(-TRUNC, TRUNC)`.
const TRUNC: f64 = 0.954_499_736_103_641_6;

/// The key of a parameter's stream.
pub fn init_key(seed: u64, path: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(path.as_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().unwrap())
}

/// The SplitMix64 output for element `index` of the stream `key` (the host mirror of the traced hash).
pub fn splitmix(key: u64, index: u64) -> u64 {
    let mut z = key.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn u64_full(g: &Graph, v: u64, dims: &[i64]) -> Tensor {
    g.constant(Literal::SplatInt(v as i64), TensorType::new(DType::U64, dims))
}

/// Random bits for every element of `dims`: SplitMix64 of (key, row-major index).
fn random_bits(g: &Graph, key: u64, dims: &[i64]) -> Tensor {
    let mut index = u64_full(g, 0, dims);
    let mut stride = 1u64;
    for d in (0..dims.len()).rev() {
        let i = g.iota(DType::U64, dims, d).binary(BinaryOp::Mul, &u64_full(g, stride, dims));
        index = index.binary(BinaryOp::Add, &i);
        stride = stride.wrapping_mul(dims[d] as u64);
    }
    let c = |v: u64| u64_full(g, v, dims);
    let shr = |x: &Tensor, n: u64| x.binary(BinaryOp::ShiftRightLogical, &c(n));
    let mut z = c(key).binary(BinaryOp::Add, &index.binary(BinaryOp::Mul, &c(0x9E37_79B9_7F4A_7C15)));
    z = z.binary(BinaryOp::Xor, &shr(&z, 30)).binary(BinaryOp::Mul, &c(0xBF58_476D_1CE4_E5B9));
    z = z.binary(BinaryOp::Xor, &shr(&z, 27)).binary(BinaryOp::Mul, &c(0x94D0_49BB_1331_11EB));
    z.binary(BinaryOp::Xor, &shr(&z, 31))
}

/// Uniform in `[0, 1)` (f32) from the top 24 bits.
fn uniform01(g: &Graph, key: u64, dims: &[i64]) -> Tensor {
    let top = random_bits(g, key, dims).binary(BinaryOp::ShiftRightLogical, &u64_full(g, 40, dims));
    top.convert(DType::F32).mul_scalar(1.0 / (1u64 << 24) as f64)
}

/// Horner's rule over `coeffs` (highest degree first).
fn poly(w: &Tensor, coeffs: &[f64]) -> Tensor {
    let mut p = w.full_like(coeffs[0]);
    for c in &coeffs[1..] {
        p = p.binary(BinaryOp::Mul, w).add_scalar(*c);
    }
    p
}

/// Giles' single-precision erfinv ("Approximating the erfinv function", 2010), for |x| < 1.
pub fn erfinv(x: &Tensor) -> Tensor {
    let one_minus = x.neg().add_scalar(1.0);
    let one_plus = x.add_scalar(1.0);
    let w = one_minus.binary(BinaryOp::Mul, &one_plus).log().neg();
    let small = poly(
        &w.add_scalar(-2.5),
        &[2.810_226_36e-08, 3.432_739_39e-07, -3.523_387_7e-06, -4.391_506_54e-06, 2.185_808_7e-04, -1.253_725_03e-03, -4.177_681_64e-03, 2.466_407_27e-01, 1.501_409_41],
    );
    let large = poly(
        &w.sqrt().add_scalar(-3.0),
        &[-2.002_142_57e-04, 1.009_505_58e-04, 1.349_343_22e-03, -3.673_428_44e-03, 5.739_507_73e-03, -7.622_461_3e-03, 9.438_870_47e-03, 1.001_674_06, 2.832_976_82],
    );
    w.lt(&w.full_like(5.0)).select(&small, &large).binary(BinaryOp::Mul, x)
}

/// One parameter's initial value, traced.
fn init_value(g: &Graph, decl: &ParamDecl, seed: u64) -> Tensor {
    let key = init_key(seed, &decl.path);
    let dims = &decl.dims;
    let v = match &decl.init {
        Init::Zeros => g.full(0.0, DType::F32, dims),
        Init::Ones => g.full(1.0, DType::F32, dims),
        Init::Uniform { lo, hi } => uniform01(g, key, dims).mul_scalar(hi - lo).add_scalar(*lo),
        Init::LogUniform { lo, hi } => uniform01(g, key, dims).mul_scalar(hi - lo).add_scalar(*lo).log(),
        Init::Normal { stddev } => {
            let u = uniform01(g, key, dims).mul_scalar(2.0 * TRUNC).add_scalar(-TRUNC);
            erfinv(&u).mul_scalar(std::f64::consts::SQRT_2 * stddev)
        }
    };
    if decl.dtype == DType::F32 {
        v
    } else {
        v.convert(decl.dtype)
    }
}

/// The program `init_params() -> params` for `decls` (no arguments), its results sharded as the
/// parameters are (`param_shardings` over the config's mesh).
pub fn init_program(cfg: &Config, decls: &[ParamDecl], seed: u64) -> Result<Program, ShardingError> {
    let g = Graph::new();
    let outs: Vec<Tensor> = {
        let _span = tracing::info_span!("trace", program = "init_params").entered();
        decls.iter().map(|d| init_value(&g, d, seed)).collect()
    };
    let mut p = Program::new("init_params", g.finish_groups(&[("params", outs)]));
    lay_out(&mut p, &sharding_context(cfg)?, decls, &["params"], &[]);
    Ok(p)
}
