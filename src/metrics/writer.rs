//! [`MetricsWriter`]: per step, a JSON line in `metrics_file`, scalar events in a TensorBoard file, a console
//! line every `log_period` steps and a progress bar.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::eval::EvalSummary;
use super::output::OutputFile;
use super::flops::{peak_tflops_per_device, tokens_per_device, training_tflops_per_device};
use super::step::{console_line, json_line, scalars, PerfMetrics, StepMetrics};
use super::tensorboard::{wall_time_now, EventWriter};
use super::MetricsError;
use crate::config::Config;
use crate::storage::Location;

/// Where console lines go.
#[derive(Clone, Debug, Default)]
pub enum Console {
    /// Standard output (above the progress bar when it is drawn): the train command's streamed output, like
    /// MaxText's `max_logging.log` lines.
    #[default]
    Stdout,
    /// Collected in memory (tests).
    Capture(Arc<Mutex<Vec<String>>>),
    /// Nowhere.
    Off,
}

/// Everything a [`MetricsWriter`] needs; [`MetricsOptions::from_config`] fills it from a [`Config`].
#[derive(Clone, Debug)]
pub struct MetricsOptions {
    pub run_name: String,
    /// `metrics_file`: one JSON line per step, appended (truncated first when step 0 is written, as in
    /// MaxText); `None` = off. Local or `gs://`.
    pub metrics_file: Option<Location>,
    /// Directory of the event file (local or `gs://`); `None` = no TensorBoard.
    pub tensorboard_dir: Option<Location>,
    /// A console line for every step that is a multiple of this.
    pub log_period: u64,
    /// Length of the progress bar (`steps`).
    pub total_steps: u64,
    /// Training TFLOPs one device performs per step ([`training_tflops_per_device`]).
    pub tflops_per_device: f64,
    /// Tokens one device processes per step ([`tokens_per_device`]).
    pub tokens_per_device: f64,
    /// Peak TFLOP/s of one device, for `perf/mfu`; `None` = no MFU.
    pub peak_tflops_per_device: Option<f64>,
    /// Print `moe_lb_loss` on the console line (MoE models, as MaxText).
    pub is_moe: bool,
    pub console: Console,
    /// Draw a progress bar on stderr. It is drawn only when stderr is a terminal.
    pub progress_bar: bool,
}

impl MetricsOptions {
    /// From the config: `run_name`, `metrics_file`, `enable_tensorboard` (events in
    /// `<base_output_directory>/<run_name>/tensorboard/<run_name>/`, MaxText's `tensorboard_dir` +
    /// `run_name`), `log_period`, `steps`, the FLOPs and tokens of `global_batch_size_to_train_on` ×
    /// `max_target_length` over the config's device count, and the default peak of
    /// [`peak_tflops_per_device`] (override the field to use another).
    pub fn from_config(cfg: &Config) -> MetricsOptions {
        let (batch, seq, devices) =
            (cfg.batch.global_batch_size_to_train_on, cfg.data.max_target_length, cfg.devices.num_devices);
        MetricsOptions {
            run_name: cfg.run.run_name.clone(),
            metrics_file: cfg.run.metrics_file.clone(),
            tensorboard_dir: cfg.run.enable_tensorboard.then(|| tensorboard_location(cfg)),
            log_period: cfg.run.log_period.max(1),
            total_steps: cfg.train.steps,
            tflops_per_device: training_tflops_per_device(cfg, batch, seq, devices),
            tokens_per_device: tokens_per_device(batch, seq, devices),
            peak_tflops_per_device: Some(peak_tflops_per_device(cfg, None)),
            is_moe: cfg.model.is_moe(),
            console: Console::Stdout,
            progress_bar: true,
        }
    }
}

/// `<base_output_directory>/<run_name>/tensorboard/<run_name>` as a location: `base_output_directory` may
/// be `gs://bucket/prefix` (the config keeps it as the text given, which `Location::parse` reads back).
fn tensorboard_location(cfg: &Config) -> Location {
    cfg.checkpoint.tensorboard_dir.join(&cfg.run.run_name)
}

/// Writes each step's metrics as it completes. Local files are written unbuffered, one `write` per step
/// and file, so a run that dies (even without running destructors) keeps every completed step; `gs://`
/// files are uploaded whole ([`OutputFile`]).
pub struct MetricsWriter {
    opts: MetricsOptions,
    metrics_file: Option<OutputFile>,
    events: Option<EventWriter>,
    bar: ProgressBar,
    last_printed: Option<u64>,
    last: Option<(StepMetrics, PerfMetrics)>,
    closed: bool,
}

impl MetricsWriter {
    /// [`MetricsWriter::with_options`] of [`MetricsOptions::from_config`].
    pub fn new(cfg: &Config) -> Result<MetricsWriter, MetricsError> {
        MetricsWriter::with_options(MetricsOptions::from_config(cfg))
    }

    /// Opens the metrics file (creating its directory) and creates the event file.
    pub fn with_options(opts: MetricsOptions) -> Result<MetricsWriter, MetricsError> {
        let metrics_file = opts.metrics_file.as_ref().map(OutputFile::append).transpose()?;
        let events = opts.tensorboard_dir.as_ref().map(EventWriter::create).transpose()?;
        let bar = if opts.progress_bar && std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(Some(opts.total_steps), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise}] {bar:40} {pos}/{len} steps, eta {eta} {msg}")
                .expect("a valid progress template"),
        );
        Ok(MetricsWriter { opts, metrics_file, events, bar, last_printed: None, last: None, closed: false })
    }

    /// The options in use.
    pub fn options(&self) -> &MetricsOptions {
        &self.opts
    }

    /// The event file, when TensorBoard is on.
    pub fn event_file(&self) -> Option<&Location> {
        self.events.as_ref().map(|e| e.location())
    }

    /// Whether the progress bar is hidden (stderr is not a terminal, or it was turned off).
    pub fn progress_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Records one completed step: metrics-file line, TensorBoard events, console line, progress bar.
    pub fn write(&mut self, m: &StepMetrics) -> Result<PerfMetrics, MetricsError> {
        let perf = PerfMetrics::new(
            self.opts.tflops_per_device,
            self.opts.tokens_per_device,
            m.step_time,
            self.opts.peak_tflops_per_device,
        );
        let all = scalars(m, &perf);
        if let Some(f) = &mut self.metrics_file {
            if m.step == 0 {
                // MaxText truncates the file when it writes step 0: a restarted run starts afresh.
                f.truncate()?;
            }
            f.write_all(json_line(&all, m.step, &self.opts.run_name).as_bytes())?;
        }
        if let Some(ev) = &mut self.events {
            let refs: Vec<(&str, f64)> = all.iter().map(|(t, v)| (t.as_str(), *v)).collect();
            ev.write_scalars(m.step as i64, wall_time_now(), &refs)?;
        }
        if m.step.is_multiple_of(self.opts.log_period) {
            self.print(&console_line(m, &perf, self.opts.is_moe));
            self.last_printed = Some(m.step);
        }
        self.bar.set_position(m.step + 1);
        self.bar.set_message(format!("loss {:.3}, {:.1} TFLOP/s/device", m.loss, perf.tflops_per_sec));
        self.last = Some((m.clone(), perf));
        Ok(perf)
    }

    /// Records an evaluation that ran after train step `step`: a metrics-file line (never truncating the
    /// file: MaxText's step-0 truncation would drop that step's train line), TensorBoard scalars and the
    /// console line.
    pub fn write_eval(&mut self, step: u64, e: &EvalSummary) -> Result<(), MetricsError> {
        let all = e.scalars();
        if let Some(f) = &mut self.metrics_file {
            f.write_all(json_line(&all, step, &self.opts.run_name).as_bytes())?;
        }
        if let Some(ev) = &mut self.events {
            let refs: Vec<(&str, f64)> = all.iter().map(|(t, v)| (t.as_str(), *v)).collect();
            ev.write_scalars(step as i64, wall_time_now(), &refs)?;
        }
        self.print(&e.console_line(step, self.opts.is_moe));
        Ok(())
    }

    /// Prints the last step's console line if the period skipped it, syncs the files to disk (uploads
    /// `gs://` ones) and finishes the progress bar.
    pub fn close(mut self) -> Result<(), MetricsError> {
        self.closed = true;
        if let Some((m, perf)) = self.last.take() {
            if self.last_printed != Some(m.step) {
                self.print(&console_line(&m, &perf, self.opts.is_moe));
            }
        }
        self.bar.finish();
        if let Some(f) = self.metrics_file.take() {
            f.close()?;
        }
        if let Some(ev) = &mut self.events {
            ev.sync()?;
        }
        Ok(())
    }

    fn print(&self, line: &str) {
        match &self.opts.console {
            Console::Stdout => self.bar.suspend(|| println!("{line}")),
            Console::Capture(lines) => lines.lock().expect("console capture lock").push(line.to_string()),
            Console::Off => {}
        }
    }
}

impl Drop for MetricsWriter {
    /// Without [`MetricsWriter::close`] (an error unwound the loop): leave the bar where it stopped. Every
    /// written step is already in the local files; `gs://` files are uploaded as they drop.
    fn drop(&mut self) {
        if !self.closed {
            self.bar.abandon();
        }
    }
}
