//! One training step's metrics, MaxText's tag names, and the two text forms: the metrics-file JSON line and
//! the console line.

use std::time::Duration;

/// MaxText's scalar tags (`train.py` `train_step`, `metric_logger.record_train_metrics`).
pub mod tags {
    pub const LOSS: &str = "learning/loss";
    pub const LM_LOSS: &str = "learning/lm_loss";
    pub const PERPLEXITY: &str = "learning/perplexity";
    pub const Z_LOSS: &str = "learning/z_loss";
    pub const MOE_LB_LOSS: &str = "learning/moe_lb_loss";
    pub const MTP_LOSS: &str = "learning/mtp_loss";
    pub const TOTAL_WEIGHTS: &str = "learning/total_weights";
    pub const GRAD_NORM: &str = "learning/grad_norm";
    pub const RAW_GRAD_NORM: &str = "learning/raw_grad_norm";
    pub const PARAM_NORM: &str = "learning/param_norm";
    pub const LEARNING_RATE: &str = "learning/current_learning_rate";
    pub const STEP_TIME: &str = "perf/step_time_seconds";
    pub const TFLOPS: &str = "perf/per_device_tflops";
    pub const TFLOPS_PER_SEC: &str = "perf/per_device_tflops_per_sec";
    pub const TOKENS: &str = "perf/per_device_tokens";
    pub const TOKENS_PER_SEC: &str = "perf/per_device_tokens_per_sec";
    /// maxtext-rs addition: `perf/per_device_tflops_per_sec` over the device's peak.
    pub const MFU: &str = "perf/mfu";
}

/// What the training loop measured in one step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMetrics {
    /// 0-based optimizer step.
    pub step: u64,
    /// The optimized loss (`learning/loss`).
    pub loss: f64,
    /// Global L2 norm of the gradients after clipping (`learning/grad_norm`).
    pub grad_norm: f64,
    /// Before clipping (`learning/raw_grad_norm`).
    pub raw_grad_norm: f64,
    /// The schedule's learning rate at this step (`learning/current_learning_rate`).
    pub learning_rate: f64,
    /// Wall time of the step (`perf/step_time_seconds`).
    pub step_time: Duration,
    /// Target tokens that counted in the loss, padding excluded (`learning/total_weights`).
    pub tokens: u64,
    /// More scalars by tag, written after the ones above: `learning/lm_loss`, `learning/moe_lb_loss`,
    /// `learning/z_loss`, `learning/param_norm`, ... A tag set here that the writer also derives
    /// (`learning/perplexity`) replaces the derived value.
    pub extra: Vec<(String, f64)>,
}

impl StepMetrics {
    /// Adds an extra scalar (builder style).
    pub fn with(mut self, tag: &str, value: f64) -> StepMetrics {
        self.extra.push((tag.to_string(), value));
        self
    }

    /// An extra scalar by tag.
    pub fn extra(&self, tag: &str) -> Option<f64> {
        self.extra.iter().rev().find(|(t, _)| t == tag).map(|&(_, v)| v)
    }

    /// The language-model loss: `learning/lm_loss` if given, else `loss`.
    pub fn lm_loss(&self) -> f64 {
        self.extra(tags::LM_LOSS).unwrap_or(self.loss)
    }
}

/// Per-device throughput of one step, from the static per-step work and the measured time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerfMetrics {
    /// Training TFLOPs one device performs per step.
    pub tflops: f64,
    pub tflops_per_sec: f64,
    /// Tokens one device processes per step.
    pub tokens: f64,
    pub tokens_per_sec: f64,
    /// `tflops_per_sec / peak`; `None` when no peak is known.
    pub mfu: Option<f64>,
}

impl PerfMetrics {
    pub fn new(tflops: f64, tokens: f64, step_time: Duration, peak_tflops: Option<f64>) -> PerfMetrics {
        let secs = step_time.as_secs_f64();
        let tflops_per_sec = tflops / secs;
        PerfMetrics {
            tflops,
            tflops_per_sec,
            tokens,
            tokens_per_sec: tokens / secs,
            mfu: peak_tflops.map(|p| super::flops::mfu(tflops_per_sec, p)),
        }
    }
}

/// Every scalar of a step, tag and value, in the order they are written: MaxText's order for the metrics
/// it has, then the extras, then `perf/mfu`.
pub fn scalars(m: &StepMetrics, perf: &PerfMetrics) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = vec![(tags::LOSS.into(), m.loss)];
    if let Some(lm) = m.extra(tags::LM_LOSS) {
        v.push((tags::LM_LOSS.into(), lm));
    }
    v.push((tags::PERPLEXITY.into(), m.extra(tags::PERPLEXITY).unwrap_or_else(|| m.lm_loss().exp())));
    v.extend([
        (tags::TOTAL_WEIGHTS.into(), m.tokens as f64),
        (tags::GRAD_NORM.into(), m.grad_norm),
        (tags::RAW_GRAD_NORM.into(), m.raw_grad_norm),
    ]);
    // The extras in the caller's order; a repeated tag is written once, at its last position and value.
    for (i, (tag, value)) in m.extra.iter().enumerate() {
        let derived = tag == tags::LM_LOSS || tag == tags::PERPLEXITY;
        if !derived && !m.extra[i + 1..].iter().any(|(t, _)| t == tag) {
            v.push((tag.clone(), *value));
        }
    }
    v.extend([
        (tags::STEP_TIME.into(), m.step_time.as_secs_f64()),
        (tags::LEARNING_RATE.into(), m.learning_rate),
        (tags::TFLOPS.into(), perf.tflops),
        (tags::TFLOPS_PER_SEC.into(), perf.tflops_per_sec),
        (tags::TOKENS.into(), perf.tokens),
        (tags::TOKENS_PER_SEC.into(), perf.tokens_per_sec),
    ]);
    if let Some(mfu) = perf.mfu {
        v.push((tags::MFU.into(), mfu));
    }
    v
}

/// A JSON number as serde_json writes it; NaN and ±inf become `null` (Python's json.dumps would write the
/// non-JSON `NaN` / `Infinity`).
fn json_number(x: f64) -> String {
    serde_json::to_string(&serde_json::Value::from(x)).expect("a number serializes")
}

/// One metrics-file line (with its `\n`), the shape of MaxText's `write_metrics_locally`:
///
/// ```text
/// {"learning/loss": 2.5, ..., "perf/per_device_tokens_per_sec": 1234.5, "step": 3.0, "run_name": "r"}
/// ```
///
/// One JSON object per step: every scalar of [`scalars`] keyed by its tag, then `"step"` as a float and
/// `"run_name"` as a string. Separators are Python json.dumps's (`", "`, `": "`); numbers are serde_json's
/// shortest round-trip form, non-finite ones `null`.
pub fn json_line(scalars: &[(String, f64)], step: u64, run_name: &str) -> String {
    let key = |k: &str| serde_json::to_string(k).expect("a string serializes");
    let mut parts: Vec<String> = scalars.iter().map(|(k, v)| format!("{}: {}", key(k), json_number(*v))).collect();
    parts.push(format!("\"step\": {}", json_number(step as f64)));
    parts.push(format!("\"run_name\": {}", key(run_name)));
    format!("{{{}}}\n", parts.join(", "))
}

/// MaxText's console line (`metric_logger._log_training_metrics`):
///
/// ```text
/// completed step: 7, seconds: 1.234, TFLOP/s/device: 74.511, Tokens/s/device: 3319.287, total_weights: 4096, loss: 2.345, lm_loss: 2.345, perplexity: 10.433[, moe_lb_loss: 0.010000]
/// ```
///
/// `moe_lb_loss` appears for MoE models (`learning/moe_lb_loss`, 0 when not given), as in MaxText.
pub fn console_line(m: &StepMetrics, perf: &PerfMetrics, is_moe: bool) -> String {
    let lm = m.lm_loss();
    let ppl = m.extra(tags::PERPLEXITY).unwrap_or_else(|| lm.exp());
    let mut s = format!(
        "completed step: {}, seconds: {:.3}, TFLOP/s/device: {:.3}, Tokens/s/device: {:.3}, total_weights: {}, \
         loss: {:.3}, lm_loss: {:.3}, perplexity: {:.3}",
        m.step,
        m.step_time.as_secs_f64(),
        perf.tflops_per_sec,
        perf.tokens_per_sec,
        m.tokens,
        m.loss,
        lm,
        ppl
    );
    if is_moe {
        s.push_str(&format!(", moe_lb_loss: {:.6}", m.extra(tags::MOE_LB_LOSS).unwrap_or(0.0)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> StepMetrics {
        StepMetrics {
            step: 3,
            loss: 2.0,
            grad_norm: 1.5,
            raw_grad_norm: 3.0,
            learning_rate: 1e-4,
            step_time: Duration::from_millis(500),
            tokens: 4096,
            extra: vec![],
        }
    }

    #[test]
    fn json_line_shape() {
        let m = metrics().with(tags::MOE_LB_LOSS, 0.25).with(tags::Z_LOSS, f64::NAN);
        let perf = PerfMetrics::new(10.0, 8192.0, m.step_time, None);
        let line = json_line(&scalars(&m, &perf), m.step, "run \"x\"");
        assert!(line.starts_with("{\"learning/loss\": 2.0, \"learning/perplexity\": "), "{line}");
        assert!(line.ends_with(", \"step\": 3.0, \"run_name\": \"run \\\"x\\\"\"}\n"), "{line}");
        assert!(line.contains("\"learning/z_loss\": null"), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["perf/per_device_tflops_per_sec"], 20.0);
        assert_eq!(v["perf/per_device_tokens_per_sec"], 16384.0);
        assert_eq!(v["learning/moe_lb_loss"], 0.25);
    }

    #[test]
    fn extras_keep_order_and_last_value() {
        let m = metrics().with("a/x", 1.0).with("b/y", 2.0).with("a/x", 3.0);
        let perf = PerfMetrics::new(1.0, 1.0, m.step_time, Some(4.0));
        let s = scalars(&m, &perf);
        let tags: Vec<&str> = s.iter().map(|(t, _)| t.as_str()).collect();
        let i = tags.iter().position(|t| *t == "b/y").unwrap();
        assert_eq!(tags[i + 1], "a/x");
        assert_eq!(s[i + 1].1, 3.0);
        assert_eq!(tags.iter().filter(|t| **t == "a/x").count(), 1);
        assert_eq!(s.last().unwrap(), &(tags::MFU.to_string(), 0.5));
    }

    #[test]
    fn console_line_like_maxtext() {
        let m = metrics();
        let perf = PerfMetrics::new(10.0, 8192.0, m.step_time, None);
        assert_eq!(
            console_line(&m, &perf, true),
            "completed step: 3, seconds: 0.500, TFLOP/s/device: 20.000, Tokens/s/device: 16384.000, \
             total_weights: 4096, loss: 2.000, lm_loss: 2.000, perplexity: 7.389, moe_lb_loss: 0.000000"
        );
    }
}
