//! `maxtext train`'s evaluation (MaxText's eval loop in `train.py`): after every `eval_interval`-th train
//! step, a fresh pass over the eval data (at most `eval_steps` batches when > 0), each batch through the
//! forward-only `eval_step` on the trainer's current params, summed into an [`EvalSummary`].

use anyhow::{bail, Context, Result};
use maxtext::config::Config;
use maxtext::data::{eval_data_config, DataError, DataIterator};
use maxtext::ir::Program;
use maxtext::metrics::EvalSummary;
use maxtext::pjrt::LoadedExecutable;
use maxtext::program::{eval_program, BATCH_KEYS};
use maxtext::runtime::{HostTensor, Runtime, Trainer};
use std::sync::Arc;

pub struct Evaluator {
    program: Program,
    exe: Arc<LoadedExecutable>,
    /// The config the eval data pipeline runs under (`eval_data_config`).
    data_cfg: Config,
    eval_steps: i64,
}

impl Evaluator {
    /// Traces and compiles the eval step for `global_batch_size_to_load_eval` rows, and checks that the eval
    /// data opens.
    pub fn new(rt: &Runtime, cfg: &Config) -> Result<Evaluator> {
        let rows = cfg.batch.global_batch_size_to_load_eval as i64;
        let ep = eval_program(cfg, rows, cfg.data.max_target_length as i64)?;
        let exe = rt.compile(&ep.program)?;
        let data_cfg = eval_data_config(cfg);
        DataIterator::new(&data_cfg, 0, 1).context("eval data (hf_eval_files)")?;
        Ok(Evaluator { program: ep.program, exe, data_cfg, eval_steps: cfg.train.eval_steps })
    }

    /// One evaluation of `trainer`'s params.
    pub fn run(&self, trainer: &Trainer) -> Result<EvalSummary> {
        let mut data = DataIterator::new(&self.data_cfg, 0, 1).context("eval data (hf_eval_files)")?;
        let mut summary = EvalSummary::default();
        while self.eval_steps <= 0 || (summary.steps as i64) < self.eval_steps {
            let batch = match data.next_batch() {
                Ok(b) => b,
                Err(DataError::Exhausted { .. }) => break,
                Err(e) => return Err(e).context("eval data (hf_eval_files)"),
            };
            let inputs: Vec<HostTensor> = BATCH_KEYS.iter().map(|k| batch.host_tensor(k).expect("batch key")).collect();
            let m = trainer.run_on_params(&self.program, &self.exe, &inputs)?;
            summary.add_step(m[0], m[1], m[2], m[3]);
        }
        if summary.steps == 0 {
            bail!("the eval data gave no batch: check hf_eval_files and eval_per_device_batch_size");
        }
        Ok(summary)
    }
}
