//! The optimizer as MaxText configures optax: global-norm clipping (`clip_by_global_norm`), AdamW
//! (`optax.adamw`: `mu_dtype`, decay on every parameter unless `adamw_mask`), and the learning-rate
//! schedule (`create_learning_rate_schedule`, reference §1.4), all traced into the train step.

use crate::config::{LrSchedule, TrainConfig};
use crate::ir::{DType, Tensor};

/// Learning rate at optimizer step `step` (i32 scalar) -> f32 scalar. Cosine: linear warmup from 0 over
/// `int(S·warmup_steps_fraction)` steps, then `lr·a + final·(1−a)` with `a = ½(cos(π·s/(cos_steps−1)) + 1)`,
/// and 0 after `S = learning_rate_schedule_steps`.
pub fn learning_rate(cfg: &TrainConfig, step: &Tensor) -> Tensor {
    let g = step.graph();
    let f = |v: f64| g.scalar(v, DType::F32);
    let s = step.convert(DType::F32);
    let total = cfg.learning_rate_schedule_steps as f64;
    let lr = cfg.learning_rate;
    let warmup = (total * cfg.warmup_steps_fraction).floor();
    let final_lr = lr * cfg.learning_rate_final_fraction;
    let decay = match cfg.lr_schedule_type {
        LrSchedule::Cosine => {
            let cos_steps = total - warmup;
            let t = &s - &f(warmup);
            let denom = (cos_steps - 1.0).max(1.0);
            let a = (&t.mul_scalar(std::f64::consts::PI / denom)).unary(crate::ir::UnaryOp::Cos).add_scalar(1.0).mul_scalar(0.5);
            &a.mul_scalar(lr) + &(&f(1.0) - &a).mul_scalar(final_lr)
        }
        _ => {
            // Other schedules (wsd, ...) are MaxText's too; until they are traced here, hold the peak rate
            // after warmup and say so at config time.
            f(lr)
        }
    };
    let in_warmup = s.lt(&f(warmup));
    let warm = if warmup > 0.0 { s.mul_scalar(lr / warmup) } else { f(lr) };
    let lr_t = in_warmup.select(&warm, &decay);
    let past_end = s.ge(&f(total));
    past_end.select(&f(0.0), &lr_t)
}

/// Global L2 norm of `ts` (f32 scalar).
pub fn global_norm(ts: &[Tensor]) -> Tensor {
    let g = ts[0].graph();
    let mut acc = g.scalar(0.0, DType::F32);
    for t in ts {
        let t = t.convert(DType::F32);
        let all: Vec<i64> = (0..t.rank() as i64).collect();
        acc = &acc + &(&t * &t).sum(&all);
    }
    acc.sqrt()
}

/// optax `clip_by_global_norm(max_norm)`: unchanged when the norm is below `max_norm`, else scaled to it.
/// Returns (clipped grads, raw norm). `max_norm <= 0` disables clipping.
pub fn clip_by_global_norm(grads: &[Tensor], max_norm: f64) -> (Vec<Tensor>, Tensor) {
    let norm = global_norm(grads);
    if max_norm <= 0.0 {
        return (grads.to_vec(), norm);
    }
    let g = norm.graph();
    let max = g.scalar(max_norm, DType::F32);
    let keep = norm.lt(&max);
    let scale = keep.select(&g.scalar(1.0, DType::F32), &(&max / &norm));
    let clipped = grads.iter().map(|t| (&t.convert(DType::F32) * &scale.broadcast_to(t.dims())).convert(t.dtype())).collect();
    (clipped, norm)
}

/// AdamW state of one parameter.
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
