//! One evaluation's summary, MaxText's way (`metric_logger._accumulate_eval_metrics` and
//! `_finalize_eval_metrics`): the eval steps' scalars summed, then averaged, written under the train step
//! after which the eval ran.

/// The eval steps of one evaluation, summed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalSummary {
    /// Eval steps run.
    pub steps: u64,
    /// Σ masked cross entropy (z-loss included): `eval/total_loss`.
    pub total_loss: f64,
    /// Σ target tokens: `eval/total_weights`.
    pub total_weights: f64,
    /// Σ per-step weighted MoE load-balancing loss: `eval/moe_lb_loss`.
    pub moe_lb_loss: f64,
    /// Σ per-step token-mean z-loss: `eval/z_loss`.
    pub z_loss: f64,
}

/// MaxText's `EPS` in the eval loss.
const EPS: f64 = 1e-8;

impl EvalSummary {
    /// Adds one eval step: its summed loss, weights, load-balancing loss and summed z-loss (which MaxText's
    /// loss function divides by the step's weights).
    pub fn add_step(&mut self, total_loss: f64, total_weights: f64, moe_lb_loss: f64, z_loss_sum: f64) {
        self.steps += 1;
        self.total_loss += total_loss;
        self.total_weights += total_weights;
        self.moe_lb_loss += moe_lb_loss;
        self.z_loss += z_loss_sum / (total_weights + EPS);
    }

    /// `eval/avg_loss`: Σ loss / (Σ weights + EPS).
    pub fn avg_loss(&self) -> f64 {
        self.total_loss / (self.total_weights + EPS)
    }

    /// The scalars MaxText writes for an evaluation, by tag (the features this model has: no MTP, no
    /// indexer).
    pub fn scalars(&self) -> Vec<(String, f64)> {
        let n = self.steps.max(1) as f64;
        [
            ("eval/total_loss", self.total_loss),
            ("eval/total_weights", self.total_weights),
            ("eval/moe_lb_loss", self.moe_lb_loss),
            ("eval/z_loss", self.z_loss),
            ("eval/avg_loss", self.avg_loss()),
            ("eval/avg_perplexity", self.avg_loss().exp()),
            ("eval/avg_moe_lb_loss", self.moe_lb_loss / n),
            ("eval/avg_z_loss", self.z_loss / n),
        ]
        .into_iter()
        .map(|(t, v)| (t.to_string(), v))
        .collect()
    }

    /// MaxText's console line (`_log_eval_metrics`).
    pub fn console_line(&self, step: u64, is_moe: bool) -> String {
        let n = self.steps.max(1) as f64;
        let mut s = format!(
            "Completed eval after train step {step}, loss={:.3}, perplexity={:.3}, total_weights={}, avg_z_loss={:.3}",
            self.avg_loss(),
            self.avg_loss().exp(),
            self.total_weights,
            self.z_loss / n
        );
        if is_moe {
            s.push_str(&format!(", avg_moe_lb_loss={:.3}", self.moe_lb_loss / n));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_as_maxtext() {
        let mut e = EvalSummary::default();
        e.add_step(20.0, 10.0, 0.5, 1.0);
        e.add_step(10.0, 10.0, 0.25, 3.0);
        let s: std::collections::HashMap<String, f64> = e.scalars().into_iter().collect();
        assert!((s["eval/avg_loss"] - 30.0 / (20.0 + 1e-8)).abs() < 1e-12);
        assert!((s["eval/avg_perplexity"] - (1.5f64).exp()).abs() < 1e-6);
        assert_eq!(s["eval/total_weights"], 20.0);
        assert!((s["eval/avg_moe_lb_loss"] - 0.375).abs() < 1e-12);
        assert!((s["eval/avg_z_loss"] - 0.2).abs() < 1e-8);
        assert!(e.console_line(4, true).starts_with("Completed eval after train step 4, loss=1.500"));
    }
}
