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
    let mut new_params = Vec::with_capacity(params.len());
    let mut new_slots = Vec::with_capacity(params.len());
    for (i, (p, gr)) in params.iter().zip(grads).enumerate() {
        let dims = p.dims();
        let b = |s: &Tensor| s.broadcast_to(dims);
        let gf = gr.convert(DType::F32);
        let m = &slots[i].mu.convert(DType::F32).mul_scalar(cfg.adam_b1) + &gf.mul_scalar(1.0 - cfg.adam_b1);
        let v = &slots[i].nu.convert(DType::F32).mul_scalar(cfg.adam_b2) + &(&gf * &gf).mul_scalar(1.0 - cfg.adam_b2);
        let m_hat = &m / &b(&bc1);
        let v_hat = &v / &b(&bc2);
        let mut update = &m_hat / &(v_hat.add_scalar(cfg.adam_eps_root).sqrt().add_scalar(cfg.adam_eps));
        let pf = p.convert(DType::F32);
        if decay[i] && cfg.adam_weight_decay != 0.0 {
            update = &update + &pf.mul_scalar(cfg.adam_weight_decay);
        }
        new_params.push((&pf - &(&update * &b(lr))).convert(p.dtype()));
        new_slots.push(AdamSlot { mu: m.convert(slots[i].mu.dtype()), nu: v.convert(slots[i].nu.dtype()) });
    }
    (new_params, new_slots)
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
    let mut new_params = Vec::with_capacity(params.len());
    let mut new_slots = Vec::with_capacity(params.len());
    for (i, (p, gr)) in params.iter().zip(grads).enumerate() {
        let dims = p.dims();
        let b = |s: &Tensor| s.broadcast_to(dims);
        let gf = gr.convert(DType::F32);
        let mu = &(&(&one - &d1).broadcast_to(dims) * &gf) + &(&b(&d1) * &slots[i].mu.convert(DType::F32));
        let nu = &(&(&one - &d2).broadcast_to(dims) * &(&gf * &gf)) + &(&b(&d2) * &slots[i].nu.convert(DType::F32));
        let mut update = &mu / &(nu.add_scalar(cfg.adam_eps_root).sqrt().add_scalar(cfg.adam_eps));
        let pf = p.convert(DType::F32);
        if decay[i] && cfg.adam_weight_decay > 0.0 {
            update = &update + &pf.mul_scalar(cfg.adam_weight_decay);
        }
        new_params.push((&pf - &(&update * &b(lr))).convert(p.dtype()));
        new_slots.push(AdamSlot { mu: mu.convert(slots[i].mu.dtype()), nu: nu.convert(slots[i].nu.dtype()) });
    }
    (new_params, new_slots)
}
