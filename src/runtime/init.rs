//! Host-side random initialisation of parameters from their declarations (`init_weights_seed`), for runs
//! without a checkpoint (a fresh `train`, or `decode` of random tiny weights). Deterministic: each parameter
//! draws from its own stream, seeded by the run seed and the parameter's path.

use super::HostTensor;
use crate::nn::{Init, ParamDecl};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

fn stream(seed: u64, path: &str) -> rand::rngs::StdRng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(path.as_bytes());
    rand::rngs::StdRng::from_seed(h.finalize().into())
}

/// Standard normal truncated to [-2, 2] (MaxText's `truncated_normal` initialisers), by rejection.
fn truncated_normal(rng: &mut impl Rng) -> f64 {
    loop {
        let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(1e-300), rng.gen());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        if z.abs() <= 2.0 {
            return z;
        }
    }
}

/// One host tensor per declaration, in the declaration's dtype.
pub fn init_params(decls: &[ParamDecl], seed: u64) -> Vec<HostTensor> {
    decls
        .iter()
        .map(|d| {
            let n = d.num_elements() as usize;
            let mut rng = stream(seed, &d.path);
            let values: Vec<f32> = match &d.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Normal { stddev } => (0..n).map(|_| (truncated_normal(&mut rng) * stddev) as f32).collect(),
                Init::Uniform { lo, hi } => (0..n).map(|_| rng.gen_range(*lo..*hi) as f32).collect(),
                Init::LogUniform { lo, hi } => (0..n).map(|_| rng.gen_range(*lo..*hi).ln() as f32).collect(),
            };
            HostTensor::from_f32_as(&values, &d.dims, d.dtype)
        })
        .collect()
}
