//! The parts of `jax.random` (JAX 0.11.1, `jax/_src/random/`) that MaxText's synthetic data draws with, bit for
//! bit: `PRNGKey`, `split`, `random_bits`, `randint` and the mantissa bits of `uniform`, for the two key
//! implementations a MaxText run can have:
//!
//! - `unsafe_rbg` (MaxText's `train.py` sets it with `jax.config.update("jax_default_prng_impl", "unsafe_rbg")`):
//!   a key is `u32[4]`; bits are `lax.rng_bit_generator(key, shape, uint32)` with XLA's DEFAULT algorithm, and
//!   `split(key, n)` takes every 10th row of `rng_bit_generator(key, (10 n, 4))`. The generator is XLA's, so we
//!   run the same `stablehlo.rng_bit_generator` (JAX bitcasts the `u32[2,2]` key to the `u64[2]` state) on the
//!   XLA CPU plugin: its algorithm is then the one JAX on CPU uses by construction.
//! - `threefry2x32` (JAX's default, or `JAX_DEFAULT_PRNG_IMPL=threefry2x32`): a key is `u32[2]`; the Threefry-2x32
//!   hash is fixed integer arithmetic, computed here on the host, with `jax_threefry_partitionable=True` (the
//!   default since JAX 0.5): counter `i` of a flat iota is hashed as the pair `(i >> 32, i & 0xffffffff)`.
//!
//! Checked against real JAX by tests/synthetic_vs_jax.rs (fixture from scripts/make_synthetic_reference.py).

use std::str::FromStr;

use super::error::DataError;
use crate::ir::{DType, Graph, Program, RngAlgorithm, TensorType};
use crate::pjrt::{open_client, Hardware};
use crate::runtime::{HostTensor, Runtime};

/// The environment variable JAX reads its default key implementation from (`jax_default_prng_impl`).
pub const PRNG_IMPL_ENV: &str = "JAX_DEFAULT_PRNG_IMPL";

/// A JAX key implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrngImpl {
    UnsafeRbg,
    Threefry2x32,
}

impl PrngImpl {
    pub fn name(self) -> &'static str {
        match self {
            PrngImpl::UnsafeRbg => "unsafe_rbg",
            PrngImpl::Threefry2x32 => "threefry2x32",
        }
    }

    /// `JAX_DEFAULT_PRNG_IMPL`, or `unsafe_rbg` (what MaxText's trainer uses) when it is unset or empty.
    pub fn from_env() -> Result<PrngImpl, DataError> {
        match std::env::var(PRNG_IMPL_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(PrngImpl::UnsafeRbg),
            Err(std::env::VarError::NotUnicode(v)) => Err(DataError::PrngImpl(format!("{v:?}"))),
        }
    }
}

impl FromStr for PrngImpl {
    type Err = DataError;

    fn from_str(s: &str) -> Result<PrngImpl, DataError> {
        match s.trim() {
            "unsafe_rbg" => Ok(PrngImpl::UnsafeRbg),
            "threefry2x32" => Ok(PrngImpl::Threefry2x32),
            other => Err(DataError::PrngImpl(other.to_string())),
        }
    }
}

/// A raw key: `u32[2]` (threefry2x32) or `u32[4]` (unsafe_rbg).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Threefry([u32; 2]),
    Rbg([u32; 4]),
}

/// Draws JAX's random values of one key implementation. `unsafe_rbg` holds a one-device XLA CPU runtime.
pub struct Jax {
    imp: PrngImpl,
    rt: Option<Runtime>,
}

impl Jax {
    /// For `unsafe_rbg`, opens a client of the XLA CPU plugin: the bits are those of JAX on CPU whatever the
    /// training hardware (on TPU, JAX's DEFAULT algorithm is another one).
    pub fn new(imp: PrngImpl) -> Result<Jax, DataError> {
        let rt = match imp {
            PrngImpl::Threefry2x32 => None,
            PrngImpl::UnsafeRbg => {
                let client = open_client(Hardware::Cpu, None, Some(1)).map_err(|e| DataError::Rng(format!("XLA CPU plugin: {e}")))?;
                Some(Runtime::new(client))
            }
        };
        Ok(Jax { imp, rt })
    }

    pub fn imp(&self) -> PrngImpl {
        self.imp
    }

    /// `jax.random.PRNGKey(seed)` for a seed below 2^32: threefry's key is `[seed >> 32, seed & 0xffffffff]`,
    /// rbg's is that pair twice.
    pub fn key(&self, seed: u32) -> Key {
        match self.imp {
            PrngImpl::Threefry2x32 => Key::Threefry([0, seed]),
            PrngImpl::UnsafeRbg => Key::Rbg([0, seed, 0, seed]),
        }
    }

    /// `jax.random.split(key, 2)`.
    pub fn split2(&self, key: Key) -> Result<[Key; 2], DataError> {
        match key {
            Key::Threefry(k) => {
                // `_threefry_split_foldlike`: hash the counters 0 and 1; each hash pair is a new key.
                let [a0, a1] = threefry2x32(k, [0, 0]);
                let [b0, b1] = threefry2x32(k, [0, 1]);
                Ok([Key::Threefry([a0, a1]), Key::Threefry([b0, b1])])
            }
            Key::Rbg(k) => {
                // `_unsafe_rbg_split`: rows 0 and 10 of a (20, 4) draw.
                let rows = self.rbg_bits(k, &[20, 4])?;
                let row = |r: usize| -> [u32; 4] { rows[4 * r..4 * r + 4].try_into().unwrap() };
                Ok([Key::Rbg(row(0)), Key::Rbg(row(10))])
            }
        }
    }

    /// `jax.random.bits(key, shape, uint32)` (`_random_bits` with 32 bits), row-major.
    pub fn bits32(&self, key: Key, dims: &[i64]) -> Result<Vec<u32>, DataError> {
        match key {
            Key::Threefry(k) => {
                let n = dims.iter().product::<i64>() as u64;
                Ok((0..n)
                    .map(|i| {
                        let [b0, b1] = threefry2x32(k, [(i >> 32) as u32, i as u32]);
                        b0 ^ b1
                    })
                    .collect())
            }
            Key::Rbg(k) => self.rbg_bits(k, dims),
        }
    }

    /// `jax.random.randint(key, shape, minval, maxval, int32)`: two 32-bit draws (from `split(key)`) folded
    /// into `[minval, maxval)` with JAX's u32 arithmetic, wrap-arounds included (for a span above 2^16 the
    /// multiplier `(2^16 % span)^2` wraps to 0, so only the lower bits count).
    pub fn randint(&self, key: Key, dims: &[i64], minval: i32, maxval: i32) -> Result<Vec<i32>, DataError> {
        let [k1, k2] = self.split2(key)?;
        let (higher, lower) = (self.bits32(k1, dims)?, self.bits32(k2, dims)?);
        let span = if maxval <= minval { 1 } else { maxval.wrapping_sub(minval) as u32 };
        let multiplier = (65536 % span).wrapping_mul(65536 % span) % span;
        Ok(higher
            .iter()
            .zip(&lower)
            .map(|(&h, &l)| {
                let offset = (h % span).wrapping_mul(multiplier).wrapping_add(l % span) % span;
                minval.wrapping_add(offset as i32)
            })
            .collect())
    }

    /// The 23 mantissa bits of `jax.random.uniform(key, shape, float32)`: the float is exactly
    /// `mantissa * 2^-23` (JAX ORs them under the exponent of 1.0 and subtracts 1), so comparing mantissas
    /// orders the floats without rounding.
    pub fn uniform_mantissas(&self, key: Key, dims: &[i64]) -> Result<Vec<u32>, DataError> {
        Ok(self.bits32(key, dims)?.into_iter().map(|b| b >> 9).collect())
    }

    /// `lax.rng_bit_generator(key, dims, uint32)` with the DEFAULT algorithm, on the XLA CPU plugin.
    fn rbg_bits(&self, key: [u32; 4], dims: &[i64]) -> Result<Vec<u32>, DataError> {
        let rt = self.rt.as_ref().expect("an unsafe_rbg Jax holds a runtime");
        let g = Graph::new();
        let state = g.param(TensorType::new(DType::U64, &[2]));
        let (_, bits) = g.rng_bit_generator(&state, RngAlgorithm::Default, TensorType::new(DType::U32, dims));
        let program = Program::new("jax_rng_bit_generator", g.finish(&[bits]));
        // JAX's lowering bitcasts u32[2, 2] to u64[2]: on a little-endian host the first word is the low half.
        let words = [key[0] as u64 | (key[1] as u64) << 32, key[2] as u64 | (key[3] as u64) << 32];
        let out = rt.run(&program, &[HostTensor::from_u64(&words, &[2])]).map_err(|e| DataError::Rng(e.to_string()))?;
        Ok(out[0].data.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect())
    }
}

/// The Threefry-2x32 hash with 20 rounds (JAX's `_threefry2x32_lowering`).
pub fn threefry2x32(key: [u32; 2], count: [u32; 2]) -> [u32; 2] {
    const ROTATIONS: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];
    let ks = [key[0], key[1], key[0] ^ key[1] ^ 0x1BD1_1BDA];
    let mut x = [count[0].wrapping_add(ks[0]), count[1].wrapping_add(ks[1])];
    for i in 0..5 {
        for &r in &ROTATIONS[i % 2] {
            x[0] = x[0].wrapping_add(x[1]);
            x[1] = x[1].rotate_left(r) ^ x[0];
        }
        x[0] = x[0].wrapping_add(ks[(i + 1) % 3]);
        x[1] = x[1].wrapping_add(ks[(i + 2) % 3]).wrapping_add(i as u32 + 1);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threefry_known_answer() {
        // The Random123 known-answer vectors for Threefry-2x32-20, also in JAX's random_test.py.
        assert_eq!(threefry2x32([0x1319_8a2e, 0x0370_7344], [0x243f_6a88, 0x85a3_08d3]), [0xc492_3a9c, 0x483d_f7a0]);
        assert_eq!(threefry2x32([0, 0], [0, 0]), [0x6b20_0159, 0x99ba_4efe]);
        assert_eq!(threefry2x32([u32::MAX; 2], [u32::MAX; 2]), [0x1cb9_96fc, 0xbb00_2be7]);
    }

    #[test]
    fn prng_impl_names() {
        assert_eq!("unsafe_rbg".parse::<PrngImpl>().unwrap(), PrngImpl::UnsafeRbg);
        assert_eq!(" threefry2x32 ".parse::<PrngImpl>().unwrap(), PrngImpl::Threefry2x32);
        for bad in ["rbg", "philox4x32", "threefry", ""] {
            let e = bad.parse::<PrngImpl>().unwrap_err().to_string();
            assert!(e.contains("JAX_DEFAULT_PRNG_IMPL") && e.contains("unsafe_rbg") && e.contains("threefry2x32"), "{e}");
        }
    }

    #[test]
    fn randint_folds_into_range() {
        let jax = Jax::new(PrngImpl::Threefry2x32).unwrap();
        let key = jax.key(7);
        for (lo, hi) in [(0, 151_936), (2, 5), (-3, 4), (5, 5), (9, 1)] {
            let v = jax.randint(key, &[3, 11], lo, hi).unwrap();
            assert_eq!(v.len(), 33);
            assert!(v.iter().all(|&x| if hi > lo { (lo..hi).contains(&x) } else { x == lo }), "[{lo}, {hi}): {v:?}");
        }
    }
}
