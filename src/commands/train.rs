//! `maxtext train` (MaxText's `train`): the train step on device, data from the pipeline, metrics every
//! step, Orbax checkpoints of the full state every `checkpoint_period` steps and at the end (optionally
//! written in the background while the next steps run), automatic resume from the run's latest
//! checkpoint, and a clean stop on a NaN or Inf loss that keeps the last good checkpoint.

use super::setup::{load_config, load_params_or_init, open_runtime};
use anyhow::{bail, Context, Result};
use maxtext::checkpoint::orbax::OrbaxCheckpoint;
use maxtext::checkpoint::train_state::{latest_step, restore_train_state, restore_train_state_from, save_train_state};
use maxtext::data::DataIterator;
use maxtext::metrics::{MetricsWriter, StepMetrics};
use maxtext::program::{train_program, TrainProgram, BATCH_KEYS, STATE_GROUPS};
use maxtext::runtime::{fresh_train_state, HostTensor, Trainer};
use std::thread::JoinHandle;
use std::time::Instant;

/// A checkpoint being written in the background.
type PendingSave = Option<JoinHandle<Result<std::path::PathBuf>>>;

fn wait(pending: &mut PendingSave) -> Result<()> {
    if let Some(h) = pending.take() {
        let dir = h.join().map_err(|_| anyhow::anyhow!("the checkpoint writer thread panicked"))??;
        tracing::info!("checkpoint written: {}", dir.display());
    }
    Ok(())
}

/// A flat restored state (step, count, params, mu, nu) split into the train program's state groups.
fn regroup(tp: &TrainProgram, (flat, data): (Vec<HostTensor>, serde_json::Value)) -> (Vec<Vec<HostTensor>>, serde_json::Value) {
    let mut rest = flat.into_iter();
    let groups = STATE_GROUPS.iter().map(|g| rest.by_ref().take(tp.program.args(g).len()).collect()).collect();
    (groups, data)
}

pub fn run(args: &[String]) -> Result<()> {
    let (rt, cfg) = open_runtime(load_config(args)?)?;
    let batch = cfg.batch.global_batch_size_to_train_on as i64;
    let seq = cfg.data.max_target_length as i64;
    let steps = cfg.train.steps;
    let tp = train_program(&cfg, batch, seq)?;
    // The state groups' argument types, flattened in group order (the checkpoint's leaf order).
    let state_args: Vec<_> = STATE_GROUPS.iter().flat_map(|g| tp.program.args(g)).collect();
    let want: Vec<_> = state_args.iter().map(|&a| (tp.program.main.params[a].dtype, tp.program.main.params[a].dims.clone())).collect();
    let root = cfg.checkpoint.checkpoint_dir.clone();
    let scan = cfg.compute.scan_layers;
    let ckpt_on = cfg.checkpoint.enable_checkpointing;

    // Initial state: the run's own latest checkpoint, else load_full_state_path, else fresh (params from
    // load_parameters_path / hf_model_path / random init; zero optimizer state).
    let resume = if ckpt_on { latest_step(&root)? } else { None };
    let (state, data_state) = if let Some(s) = resume {
        eprintln!("resuming from checkpoint {}/{s}", root.display());
        regroup(&tp, restore_train_state(&root, s, &tp.decls, &want, scan)?)
    } else if let Some(path) = &cfg.checkpoint.load_full_state_path {
        let item = maxtext::checkpoint::params::resolve_item_dir(path).with_context(|| format!("load_full_state_path={}", path.display()))?;
        let ck = OrbaxCheckpoint::open(&item).with_context(|| format!("load_full_state_path={}", path.display()))?;
        regroup(&tp, restore_train_state_from(&ck, &tp.decls, &want, scan)?)
    } else {
        let params = load_params_or_init(&cfg, &tp.decls)?;
        let state = fresh_train_state(&tp, params);
        (state, serde_json::Value::Null)
    };
    let start = state[0][0].to_i64()[0] as u64;
    if start >= steps {
        println!("nothing to do: the run is at step {start} of steps={steps}");
        return Ok(());
    }
    let mut data = if data_state.is_null() { DataIterator::new(&cfg, 0, 1)? } else { DataIterator::restore(&cfg, 0, 1, &data_state)? };
    let t_compile = Instant::now();
    let mut trainer = Trainer::new(&rt, tp, &state)?;
    tracing::info!("compiled train_step in {:.1} s", t_compile.elapsed().as_secs_f64());
    drop(state);
    let mut metrics = MetricsWriter::new(&cfg)?;
    let mut pending: PendingSave = None;
    let decls = trainer.program().decls.clone();
    let save = |trainer: &Trainer, data: &DataIterator, step: u64, pending: &mut PendingSave| -> Result<()> {
        wait(pending)?;
        let host: Vec<HostTensor> = trainer.state_to_host()?.into_iter().flatten().collect();
        let (root, decls, data_state) = (root.clone(), decls.clone(), data.state());
        let job = move || -> Result<std::path::PathBuf> { Ok(save_train_state(&root, step, &decls, &host, &data_state, scan)?) };
        if cfg.checkpoint.async_checkpointing {
            *pending = Some(std::thread::spawn(job));
        } else {
            job()?;
        }
        Ok(())
    };
    for step in start..steps {
        let b = data.next_batch()?;
        let inputs: Vec<HostTensor> = BATCH_KEYS.iter().map(|k| b.host_tensor(k).expect("batch key")).collect();
        let t0 = Instant::now();
        let out = trainer.step(&inputs)?;
        let dt = t0.elapsed();
        if !out.loss.is_finite() {
            wait(&mut pending)?;
            let last = latest_step(&root)?.map(|s| format!("{}/{s}", root.display())).unwrap_or_else(|| "none".into());
            bail!("loss is {} at step {step}: stopping; the last good checkpoint is {last} (lower learning_rate or check the data)", out.loss);
        }
        metrics.write(&StepMetrics {
            step,
            loss: out.loss,
            grad_norm: out.grad_norm,
            raw_grad_norm: out.raw_grad_norm,
            learning_rate: out.learning_rate,
            step_time: dt,
            tokens: out.total_weights as u64,
            extra: vec![("learning/moe_lb_loss".into(), out.moe_lb_loss), ("learning/lm_loss".into(), out.loss - out.moe_lb_loss)],
        })?;
        let last = step + 1 == steps;
        if ckpt_on && (step % cfg.checkpoint.checkpoint_period.max(1) == 0 || (last && cfg.checkpoint.save_checkpoint_on_completion)) {
            save(&trainer, &data, step, &mut pending)?;
        }
    }
    wait(&mut pending)?;
    metrics.close()?;
    Ok(())
}
