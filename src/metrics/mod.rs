//! Training metrics, MaxText style (`metric_logger.py`, `maxtext_utils.calculate_tflops_training_per_device`).
//!
//! Per completed step, [`MetricsWriter::write`] records a [`StepMetrics`] four ways:
//! - `metrics_file` (when set): one JSON object per line, MaxText's `write_metrics_locally` shape
//!   ([`step::json_line`]):
//!   `{"learning/loss": 2.5, "learning/perplexity": 12.18, "learning/total_weights": 4096.0,
//!   "learning/grad_norm": 0.9, "learning/raw_grad_norm": 1.3, <extras>, "perf/step_time_seconds": 1.2,
//!   "learning/current_learning_rate": 3e-5, "perf/per_device_tflops": 91.9,
//!   "perf/per_device_tflops_per_sec": 76.6, "perf/per_device_tokens": 4096.0,
//!   "perf/per_device_tokens_per_sec": 3413.3, "perf/mfu": 0.167, "step": 7.0, "run_name": "r"}`.
//!   Writing step 0 truncates the file first, as MaxText does.
//! - TensorBoard (`enable_tensorboard`): the same scalars as `Summary.Value{tag, simple_value}` events in
//!   `<base_output_directory>/<run_name>/tensorboard/<run_name>/events.out.tfevents.*` ([`tensorboard`]).
//! - the console, every `log_period` steps: MaxText's `completed step: N, seconds: …, TFLOP/s/device: …,
//!   Tokens/s/device: …, total_weights: …, loss: …` line ([`step::console_line`]);
//! - an indicatif progress bar on stderr, drawn only when stderr is a terminal.
//!
//! After an evaluation, [`MetricsWriter::write_eval`] records its [`EvalSummary`] (`eval/avg_loss`,
//! `eval/total_loss`, ...) under the train step it followed: a metrics-file line, TensorBoard scalars and
//! MaxText's `Completed eval after train step N, loss=…` console line.
//!
//! Files are written without user-space buffering, one `write` per step and file, so a killed run keeps every
//! completed step's line and events. Both files may be `gs://` objects: uploaded whole, periodically and when
//! the run ends ([`output::OutputFile`]). The per-step work comes from [`flops`]: MaxText's FLOPs count for
//! Qwen3-Next (dense / attention / GDN / MoE with active experts only), tokens per device and MFU against a
//! per-hardware peak.

pub mod eval;
pub mod flops;
pub mod output;
pub mod step;
pub mod tensorboard;
pub mod tfrecord;
mod writer;

use std::path::{Path, PathBuf};

pub use eval::EvalSummary;
pub use flops::{
    flops_per_token, mfu, peak_tflops_for_device_kind, peak_tflops_per_device, tokens_per_device,
    training_tflops_per_device, FlopsPerToken, CPU_NOMINAL_PEAK_TFLOPS,
};
pub use step::{tags, PerfMetrics, StepMetrics};
pub use tensorboard::{decode_events, event_files, read_events, read_scalars, EventWriter, ScalarEvent};
pub use writer::{Console, MetricsOptions, MetricsWriter};

/// Errors of writing or reading metrics files.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: corrupt TFRecord at byte {offset}: {what}")]
    Corrupt { path: PathBuf, offset: usize, what: String },
    #[error("{path}: record {record} is not a TensorBoard Event: {source}")]
    Decode { path: PathBuf, record: usize, source: prost::DecodeError },
}

impl MetricsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> MetricsError {
        MetricsError::Io { path: path.to_path_buf(), source }
    }
}
