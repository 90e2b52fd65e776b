//! The learning-rate schedule as MaxText 0.2.5 builds it (`maxtext_utils.create_learning_rate_schedule`):
//! optax pieces joined at step boundaries (`optax.join_schedules`), each piece seeing the step counted from
//! its own boundary. With `S = learning_rate_schedule_steps`, `W = int(S·warmup_steps_fraction)`:
//! - warmup (`W > 0`): `optax.linear_schedule(0 → lr, W)`, boundary `W`;
//! - cosine: `lr·a + final·(1−a)`, `a = ½(cos(π·t/(n−1)) + 1)` (`a = 0` when `n = 1`) over `n = S − W`;
//! - wsd: a constant `lr` for `S − W − D` steps, then over `D = int(S·wsd_decay_steps_fraction)` steps
//!   `optax.linear_schedule(lr → final, D − 1)` (`wsd_decay_style=linear`) or the cosine above (`cosine`);
//! - 0 after `S` when `steps > S`.
//!
//! `final = lr · learning_rate_final_fraction`. The same [`Schedule`] is evaluated on the host
//! ([`Schedule::at`], f64) and traced into the train step ([`Schedule::trace`], f32), so the two cannot
//! drift apart.

use crate::config::{LrSchedule, TrainConfig, WsdDecayStyle};
use crate::ir::{DType, Tensor, UnaryOp};

/// One optax schedule of the join.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Piece {
    /// `optax.linear_schedule(init, end, transition_steps)`: `(init − end)·(1 − min(t, T)/T) + end`;
    /// `init` throughout when `T <= 0` (optax holds it fixed).
    Linear { init: f64, end: f64, transition_steps: i64 },
    /// MaxText's `make_cos_schedule(init, final, len)`.
    Cosine { init: f64, end: f64, len: i64 },
    /// `optax.constant_schedule(value)`.
    Constant(f64),
}

/// Pieces and the step at which each piece after the first takes over (`optax.join_schedules`).
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub pieces: Vec<Piece>,
    /// `boundaries[i]`: the first step of `pieces[i + 1]`.
    pub boundaries: Vec<i64>,
}

impl Piece {
    fn at(self, t: f64) -> f64 {
        match self {
            Piece::Linear { init, transition_steps, .. } if transition_steps <= 0 => init,
            Piece::Linear { init, end, transition_steps } => {
                let frac = 1.0 - t.clamp(0.0, transition_steps as f64) / transition_steps as f64;
                (init - end) * frac + end
            }
            Piece::Cosine { init, end, len } => {
                let pct = if len > 1 { t / (len - 1) as f64 } else { 1.0 };
                let a = 0.5 * ((std::f64::consts::PI * pct).cos() + 1.0);
                init * a + end * (1.0 - a)
            }
            Piece::Constant(v) => v,
        }
    }

    /// The piece at `t` (f32 scalar, steps since the piece's boundary).
    fn trace(self, t: &Tensor) -> Tensor {
        let g = t.graph();
        let f = |v: f64| g.scalar(v, DType::F32);
        match self {
            Piece::Linear { init, transition_steps, .. } if transition_steps <= 0 => f(init),
            Piece::Linear { init, end, transition_steps } => {
                let steps = transition_steps as f64;
                let frac = &f(1.0) - &t.clamp(&f(0.0), &f(steps)).mul_scalar(1.0 / steps);
                frac.mul_scalar(init - end).add_scalar(end)
            }
            Piece::Cosine { init, end, len } => {
                let pct = if len > 1 { t.mul_scalar(1.0 / (len - 1) as f64) } else { f(1.0) };
                let a = pct.mul_scalar(std::f64::consts::PI).unary(UnaryOp::Cos).add_scalar(1.0).mul_scalar(0.5);
                &a.mul_scalar(init) + &(&f(1.0) - &a).mul_scalar(end)
            }
            Piece::Constant(v) => f(v),
        }
    }
}

impl Schedule {
    /// MaxText's schedule for `cfg` (see the module docs).
    pub fn from_config(cfg: &TrainConfig) -> Schedule {
        let lr = cfg.learning_rate;
        let final_lr = lr * cfg.learning_rate_final_fraction;
        let total = cfg.learning_rate_schedule_steps as i64;
        // Python's int() of a non-negative float truncates.
        let warmup = (total as f64 * cfg.warmup_steps_fraction).trunc() as i64;
        let (mut pieces, mut boundaries) = (Vec::new(), Vec::new());
        let mut push = |p: Piece, end: i64| {
            pieces.push(p);
            boundaries.push(end);
        };
        if warmup > 0 {
            push(Piece::Linear { init: 0.0, end: lr, transition_steps: warmup }, warmup);
        }
        match cfg.lr_schedule_type {
            LrSchedule::Cosine => {
                let len = total - warmup;
                if len > 0 {
                    push(Piece::Cosine { init: lr, end: final_lr, len }, warmup + len);
                }
            }
            LrSchedule::Wsd => {
                let decay = (total as f64 * cfg.wsd_decay_steps_fraction).trunc() as i64;
                let stable = total - warmup - decay;
                if stable > 0 {
                    push(Piece::Constant(lr), warmup + stable);
                }
                if decay > 0 {
                    let p = match cfg.wsd_decay_style {
                        WsdDecayStyle::Linear => Piece::Linear { init: lr, end: final_lr, transition_steps: decay - 1 },
                        WsdDecayStyle::Cosine => Piece::Cosine { init: lr, end: final_lr, len: decay },
                    };
                    push(p, warmup + stable.max(0) + decay);
                }
            }
        }
        if cfg.steps as i64 > total {
            push(Piece::Constant(0.0), total);
        }
        if total == 0 && cfg.steps == 0 {
            // No steps and no schedule: MaxText's join of no pieces fails; nothing will train, so rate 0.
            push(Piece::Constant(0.0), 0);
        }
        // join_schedules uses one boundary fewer than pieces: the last piece runs on.
        boundaries.pop();
        Schedule { pieces, boundaries }
    }

    /// The learning rate at optimizer step `step`, in f64.
    pub fn at(&self, step: u64) -> f64 {
        let s = step as i64;
        let mut out = self.pieces[0].at(s as f64);
        for (&b, p) in self.boundaries.iter().zip(&self.pieces[1..]) {
            if s >= b {
                out = p.at((s - b) as f64);
            }
        }
        out
    }

    /// The learning rate at `step` (i32 scalar) -> f32 scalar, as [`Schedule::at`] computes it.
    pub fn trace(&self, step: &Tensor) -> Tensor {
        let g = step.graph();
        let s = step.convert(DType::F32);
        let mut out = self.pieces[0].trace(&s);
        for (&b, p) in self.boundaries.iter().zip(&self.pieces[1..]) {
            let boundary = g.scalar(b as f64, DType::F32);
            out = s.lt(&boundary).select(&out, &p.trace(&(&s - &boundary)));
        }
        out
    }
}

/// The traced learning rate at optimizer step `step` (i32 scalar) -> f32 scalar.
pub fn learning_rate(cfg: &TrainConfig, step: &Tensor) -> Tensor {
    Schedule::from_config(cfg).trace(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn train_cfg(keys: &[&str]) -> TrainConfig {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml");
        let o: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        Config::load(&base, &o).unwrap().train
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
    }

    /// wsd, linear decay, by hand from MaxText's formula: S = 20, W = int(20·0.1) = 2, D = int(20·0.25) = 5,
    /// stable = 13; steps = 24 > S, so 0 from step 20.
    #[test]
    fn wsd_linear_by_hand() {
        let t = train_cfg(&["steps=24", "learning_rate_schedule_steps=20", "lr_schedule_type=wsd", "learning_rate=1e-3", "warmup_steps_fraction=0.1", "wsd_decay_steps_fraction=0.25", "learning_rate_final_fraction=0.1"]);
        let s = Schedule::from_config(&t);
        let (lr, fin) = (1e-3, 1e-4);
        // Warmup: lr·t/W for t < W.
        assert!(close(s.at(0), 0.0));
        assert!(close(s.at(1), lr * 0.5));
        // Stable from W to W + 13 = 15.
        for step in 2..15 {
            assert!(close(s.at(step), lr), "step {step}: {}", s.at(step));
        }
        // Linear decay over D − 1 = 4 transition steps: lr − (lr − final)·t/4 for t = step − 15.
        for (step, t) in (15..20).zip(0..) {
            let want = (lr - fin) * (1.0 - t as f64 / 4.0) + fin;
            assert!(close(s.at(step), want), "step {step}: {} vs {want}", s.at(step));
        }
        assert!(close(s.at(19), fin));
        for step in 20..24 {
            assert_eq!(s.at(step), 0.0, "step {step}");
        }
    }

    /// wsd, cosine decay: over D = 4 steps, a = ½(cos(π·t/3) + 1); no zero tail when steps = S.
    #[test]
    fn wsd_cosine_by_hand() {
        let t = train_cfg(&["steps=10", "lr_schedule_type=wsd", "wsd_decay_style=cosine", "learning_rate=2.0", "warmup_steps_fraction=0", "wsd_decay_steps_fraction=0.4", "learning_rate_final_fraction=0.25"]);
        let s = Schedule::from_config(&t);
        for step in 0..6 {
            assert!(close(s.at(step), 2.0), "step {step}");
        }
        let want = [2.0, 2.0 * 0.75 + 0.5 * 0.25, 2.0 * 0.25 + 0.5 * 0.75, 0.5];
        for (t, w) in want.iter().enumerate() {
            assert!(close(s.at(6 + t as u64), *w), "decay step {t}: {} vs {w}", s.at(6 + t as u64));
        }
    }

    /// Cosine, as before the pieces: warmup W = 3 of S = 10, then n = 7 cosine steps; and the `n = 1` edge,
    /// where MaxText's piece gives `final` at once.
    #[test]
    fn cosine_by_hand() {
        let t = train_cfg(&["steps=10", "learning_rate=1.0", "warmup_steps_fraction=0.3", "learning_rate_final_fraction=0.1"]);
        let s = Schedule::from_config(&t);
        assert!(close(s.at(2), 2.0 / 3.0));
        for k in 0..7u64 {
            let a = 0.5 * ((std::f64::consts::PI * k as f64 / 6.0).cos() + 1.0);
            assert!(close(s.at(3 + k), a + 0.1 * (1.0 - a)), "step {}", 3 + k);
        }
        let one = Schedule::from_config(&train_cfg(&["steps=1", "learning_rate=1.0", "learning_rate_final_fraction=0.1"]));
        assert!(close(one.at(0), 0.1), "{}", one.at(0));
    }
}
