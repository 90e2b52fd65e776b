//! `maxtext train`'s evaluation (MaxText's eval loop in `train.py`): after every `eval_interval`-th train
//! step, a fresh pass over the eval data (at most `eval_steps` batches when > 0), each batch through the
//! forward-only `eval_step` on the trainer's current params, summed into an [`EvalSummary`]. Over several
//! processes each reads the rows of each eval batch its devices hold, and all stop at the first batch
//! one of them lacks (every process must run the step the same number of times).

use anyhow::{bail, Context, Result};
use maxtext::config::Config;
use maxtext::data::{eval_data_config, DataError, DataIterator};
use maxtext::ir::Program;
use maxtext::metrics::EvalSummary;
use maxtext::pjrt::LoadedExecutable;
use maxtext::program::{eval_program, BATCH_KEYS};
use maxtext::distributed::ProcessGroup;
use super::train::DataShare;
use maxtext::runtime::{HostTensor, Runtime, Trainer};
use std::sync::Arc;
use std::time::Duration;

pub struct Evaluator {
    program: Program,
    exe: Arc<LoadedExecutable>,
    /// The config the eval data pipeline runs under (`eval_data_config`).
    data_cfg: Config,
    eval_steps: i64,
    /// This process's share of each eval batch.
    share: DataShare,
}

impl Evaluator {
    /// Traces and compiles the eval step for `global_batch_size_to_load_eval` rows, and checks that the eval
    /// data opens.
    pub fn new(rt: &Runtime, cfg: &Config) -> Result<Evaluator> {
        let rows = cfg.batch.global_batch_size_to_load_eval as i64;
        let ep = eval_program(cfg, rows, cfg.data.max_target_length as i64)?;
        let exe = rt.compile(&ep.program)?;
        let share = DataShare::of_rows(rt.local_batch_rows(&ep.program, &exe), rows, 1, "eval batch")?;
        let data_cfg = eval_data_config(cfg);
        DataIterator::new(&data_cfg, share.index, share.count).context("eval data (hf_eval_files)")?;
        Ok(Evaluator { program: ep.program, exe, data_cfg, eval_steps: cfg.train.eval_steps, share })
    }

    /// The evaluation after train step `step` of `trainer`'s params, by every process of `group` together.
    pub fn run(&self, trainer: &Trainer, step: u64, group: &ProcessGroup, timeout: Duration) -> Result<EvalSummary> {
        let mut data = DataIterator::new(&self.data_cfg, self.share.index, self.share.count).context("eval data (hf_eval_files)")?;
        let mut summary = EvalSummary::default();
        while self.eval_steps <= 0 || (summary.steps as i64) < self.eval_steps {
            let batch = match data.next_batch() {
                Ok(b) => Some(b),
                Err(DataError::Exhausted { .. }) => None,
                Err(e) => return Err(e).context("eval data (hf_eval_files)"),
            };
            if group.count() > 1 {
                let key = format!("eval/{step}/{}", summary.steps);
                let has = group.all_gather(&key, &[batch.is_some() as u8], timeout)?;
                if has.iter().any(|h| h.first() != Some(&1)) {
                    break;
                }
            }
            let Some(batch) = batch else { break };
            let inputs: Vec<HostTensor> = BATCH_KEYS.iter().map(|k| batch.host_tensor(k).expect("batch key")).collect();
            let m = trainer.run_on_params_rows(&self.program, &self.exe, &inputs, self.share.row0)?;
            summary.add_step(m[0], m[1], m[2], m[3]);
        }
        if summary.steps == 0 {
            bail!("the eval data gave no batch: check hf_eval_files and eval_per_device_batch_size");
        }
        Ok(summary)
    }
}
