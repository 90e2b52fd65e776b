//! The optimizer as MaxText configures optax, traced into the train step: global-norm clipping
//! (`clip_by_global_norm`, applied before the optimizer as MaxText's train step does: [`mean_and_clip`]), the update of
//! `opt_type` ([`update`]: `adamw` = `optax.adamw`, `adam_pax` = MaxText's own `adam_pax`, `sgd` =
//! `optax.sgd(schedule)`) and the learning-rate schedule ([`schedule`], `create_learning_rate_schedule`).

mod adam;
pub mod schedule;

pub use adam::{adam_pax, adamw, AdamSlot};
pub use schedule::{learning_rate, Piece, Schedule};

use crate::config::{OptType, TrainConfig};
use crate::ir::{DType, Tensor};

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

/// The gradient of a mean from the summed gradients, `sums / denom`, then `clip_by_global_norm(max_norm)`
/// (`max_norm <= 0`: no clipping), applied as one scalar factor: returns (`sums · factor` in their dtypes,
/// the norm of `sums / denom`, the norm after clipping). Equal to dividing, clipping and measuring again up
/// to rounding; but XLA:CPU writes a full-size divided copy of every gradient that several fusions read
/// (it does not duplicate a divide into its consumers), and a second norm reads them all again, where a
/// scalar multiply fuses into the optimizer's own passes.
pub fn mean_and_clip(sums: &[Tensor], denom: &Tensor, max_norm: f64) -> (Vec<Tensor>, Tensor, Tensor) {
    let g = denom.graph();
    let raw = &global_norm(sums) / denom;
    let scale = if max_norm <= 0.0 {
        g.scalar(1.0, DType::F32)
    } else {
        let max = g.scalar(max_norm, DType::F32);
        raw.lt(&max).select(&g.scalar(1.0, DType::F32), &(&max / &raw))
    };
    let factor = &scale / denom;
    let scaled = sums.iter().map(|t| (&t.convert(DType::F32) * &factor.broadcast_to(t.dims())).convert(t.dtype())).collect();
    let clipped_norm = &raw * &scale;
    (scaled, raw, clipped_norm)
}

/// Whether `opt_type` keeps Adam moments (`mu`, `nu` per parameter); `sgd` keeps none.
pub fn has_moments(opt: OptType) -> bool {
    matches!(opt, OptType::AdamW | OptType::AdamPax)
}

/// `optax.sgd(lr)` without momentum (as MaxText builds it): `p − lr·g`.
pub fn sgd(params: &[Tensor], grads: &[Tensor], lr: &Tensor) -> Vec<Tensor> {
    params
        .iter()
        .zip(grads)
        .map(|(p, g)| (&p.convert(DType::F32) - &(&g.convert(DType::F32) * &lr.broadcast_to(p.dims()))).convert(p.dtype()))
        .collect()
}

/// One optimizer step of `cfg.opt_type` at optimizer count `count` (i32, before this step), with `lr` the
/// schedule's rate at `count` and `decay[i]` whether parameter `i` gets weight decay (not `adamw_mask`).
/// Returns the new params and the new moments (empty for `sgd`).
pub fn update(cfg: &TrainConfig, params: &[Tensor], grads: &[Tensor], slots: &[AdamSlot], count: &Tensor, lr: &Tensor, decay: &[bool]) -> (Vec<Tensor>, Vec<AdamSlot>) {
    let _s = count.graph().scope("optimizer");
    match cfg.opt_type {
        OptType::AdamW => {
            let count_inc = count + &count.graph().full(1.0, DType::S32, &[]);
            adamw(cfg, params, grads, slots, &count_inc, lr, decay)
        }
        OptType::AdamPax => adam_pax(cfg, params, grads, slots, count, lr, decay),
        OptType::Sgd => (sgd(params, grads, lr), Vec::new()),
        OptType::Muon => unreachable!("opt_type=muon is refused when the config loads"),
    }
}

/// Which parameters get weight decay: MaxText's `adamw_mask` is a list of regexes searched in the
/// parameter's path (`params/decoder/...`); a parameter that matches any of them is excluded.
pub fn weight_decay_mask(patterns: &[regex::Regex], paths: impl IntoIterator<Item = String>) -> Vec<bool> {
    paths.into_iter().map(|p| !patterns.iter().any(|r| r.is_match(&format!("params/{p}")))).collect()
}
