//! The two Adam variants MaxText offers: `optax.adamw` (`opt_type=adamw`) and MaxText's `adam_pax`
//! (`opt_type=adam_pax`, praxis' `sharded_adam`). Both compute in f32 and store the moments in their dtypes.

use crate::config::TrainConfig;
use crate::ir::{DType, Tensor};

/// Adam state of one parameter.
pub struct AdamSlot {
    pub mu: Tensor,
    pub nu: Tensor,
}

/// One optax AdamW step for every parameter, with `count_inc` (i32, the incremented count) and `lr`:
/// `m = b1 m + (1−b1) g; v = b2 v + (1−b2) g²; m̂ = m/(1−b1^t); v̂ = v/(1−b2^t);
/// p −= lr (m̂ / (sqrt(v̂ + eps_root) + eps) + wd p)`.
pub fn adamw(cfg: &TrainConfig, params: &[Tensor], grads: &[Tensor], slots: &[AdamSlot], count_inc: &Tensor, lr: &Tensor, decay: &[bool]) -> (Vec<Tensor>, Vec<AdamSlot>) {
    let t = count_inc.convert(DType::F32);
    let g = t.graph();
    let pow = |b: f64| g.scalar(b, DType::F32).pow(&t);
    let one = g.scalar(1.0, DType::F32);
    let bc1 = &one - &pow(cfg.adam_b1);
    let bc2 = &one - &pow(cfg.adam_b2);
    let decay_on = cfg.adam_weight_decay != 0.0;
    step_each(cfg, params, grads, slots, lr, decay, decay_on, |gf, mu, nu| {
        let b = |s: &Tensor| s.broadcast_to(gf.dims());
        let m = &mu.mul_scalar(cfg.adam_b1) + &gf.mul_scalar(1.0 - cfg.adam_b1);
        let v = &nu.mul_scalar(cfg.adam_b2) + &(gf * gf).mul_scalar(1.0 - cfg.adam_b2);
        let update = &(&m / &b(&bc1)) / &(&v / &b(&bc2)).add_scalar(cfg.adam_eps_root).sqrt().add_scalar(cfg.adam_eps);
        (m, v, update)
    })
}

/// MaxText's `adam_pax` at optimizer count `count` (i32, before this step; `t = count + 1`): the bias
/// correction is folded into the decays, `β̂ = β(1 − β^(t−1)) / (1 − β^t)`, so the stored moments are already
/// bias-corrected: `mu = (1−β̂1) g + β̂1 mu; nu = (1−β̂2) g² + β̂2 nu;
/// p −= lr (mu / (sqrt(nu + eps_root) + eps) + wd p)`, the decay only when `adam_weight_decay > 0`.
/// The moments have the parameter's dtype (`zeros_like(params)`; `mu_dtype` does not apply).
pub fn adam_pax(cfg: &TrainConfig, params: &[Tensor], grads: &[Tensor], slots: &[AdamSlot], count: &Tensor, lr: &Tensor, decay: &[bool]) -> (Vec<Tensor>, Vec<AdamSlot>) {
    let t = count.convert(DType::F32).add_scalar(1.0);
    let g = t.graph();
    let one = g.scalar(1.0, DType::F32);
    let decayed = |beta: f64| {
        let b = g.scalar(beta, DType::F32);
        (&(&one - &b.pow(&t.add_scalar(-1.0))) / &(&one - &b.pow(&t))).mul_scalar(beta)
    };
    let (d1, d2) = (decayed(cfg.adam_b1), decayed(cfg.adam_b2));
    let decay_on = cfg.adam_weight_decay > 0.0;
    step_each(cfg, params, grads, slots, lr, decay, decay_on, |gf, mu, nu| {
        let b = |s: &Tensor| s.broadcast_to(gf.dims());
        let mu = &(&b(&(&one - &d1)) * gf) + &(&b(&d1) * mu);
        let nu = &(&b(&(&one - &d2)) * &(gf * gf)) + &(&b(&d2) * nu);
        let update = &mu / &nu.add_scalar(cfg.adam_eps_root).sqrt().add_scalar(cfg.adam_eps);
        (mu, nu, update)
    })
}

/// The per-parameter loop both Adams share: `moments(g, mu, nu) -> (mu', nu', update)` in f32, weight decay
/// added where `decay[i]` (and `decay_on`), `p −= lr · update`; the moments go back in their slots' dtypes.
#[allow(clippy::too_many_arguments)]
fn step_each(
    cfg: &TrainConfig,
    params: &[Tensor],
    grads: &[Tensor],
    slots: &[AdamSlot],
    lr: &Tensor,
    decay: &[bool],
    decay_on: bool,
    moments: impl Fn(&Tensor, &Tensor, &Tensor) -> (Tensor, Tensor, Tensor),
) -> (Vec<Tensor>, Vec<AdamSlot>) {
    let mut new_params = Vec::with_capacity(params.len());
    let mut new_slots = Vec::with_capacity(params.len());
    for (i, (p, gr)) in params.iter().zip(grads).enumerate() {
        let (mu, nu, mut update) = moments(&gr.convert(DType::F32), &slots[i].mu.convert(DType::F32), &slots[i].nu.convert(DType::F32));
        let pf = p.convert(DType::F32);
        if decay[i] && decay_on {
            update = &update + &pf.mul_scalar(cfg.adam_weight_decay);
        }
        new_params.push((&pf - &(&update * &lr.broadcast_to(p.dims()))).convert(p.dtype()));
        new_slots.push(AdamSlot { mu: mu.convert(slots[i].mu.dtype()), nu: nu.convert(slots[i].nu.dtype()) });
    }
    (new_params, new_slots)
}
