//! `maxtext train` (MaxText's `train`): the train step on device, data from the pipeline, metrics every
//! step, Orbax checkpoints of the full state every `checkpoint_period` steps and at the end (optionally
//! written in the background while the next steps run), automatic resume from the run's latest
//! checkpoint, and a clean stop on a NaN or Inf loss that keeps the last good checkpoint.

use super::setup::{has_weights, init_on_device, load_config, open_runtime, take_init, with_param_regions};
use anyhow::{bail, Context, Result};
use maxtext::checkpoint::orbax::OrbaxCheckpoint;
use maxtext::checkpoint::train_state::{latest_step, save_train_state_sharded, save_trainer_state, trainer_layouts, TrainStateReader};
use maxtext::data::DataIterator;
use maxtext::metrics::{MetricsWriter, StepMetrics};
use maxtext::program::{train_program, BATCH_KEYS};
use maxtext::runtime::{state_args, state_entries, HostTensor, Trainer};
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

pub fn run(args: &[String]) -> Result<()> {
    let (rt, cfg) = open_runtime(load_config(args)?)?;
    let batch = cfg.batch.global_batch_size_to_train_on as i64;
    let seq = cfg.data.max_target_length as i64;
    let steps = cfg.train.steps;
    let tp = train_program(&cfg, batch, seq)?;
    // Each state entry's (dtype, dims): the train program's state arguments, in the checkpoint's leaf order.
    let want: Vec<_> = state_args(&tp.program).into_iter().map(|a| (tp.program.main.params[a].dtype, tp.program.main.params[a].dims.clone())).collect();
    let root = cfg.checkpoint.checkpoint_dir.clone();
    let scan = cfg.compute.scan_layers;
    let ckpt_on = cfg.checkpoint.enable_checkpointing;

    // Initial state: the run's own latest checkpoint, else load_full_state_path, else fresh (params from
    // load_parameters_path / hf_model_path / random init; zero optimizer state). Either way it goes to the
    // devices shard by shard, each device's box read straight from the checkpoint.
    let resume = if ckpt_on { latest_step(&root)? } else { None };
    let full_state = match (resume, &cfg.checkpoint.load_full_state_path) {
        (Some(s), _) => {
            eprintln!("resuming from checkpoint {}/{s}", root.display());
            Some(OrbaxCheckpoint::open_step(&root, s)?)
        }
        (None, Some(path)) => {
            let item = maxtext::checkpoint::params::resolve_item_dir(path).with_context(|| format!("load_full_state_path={}", path.display()))?;
            Some(OrbaxCheckpoint::open(&item).with_context(|| format!("load_full_state_path={}", path.display()))?)
        }
        (None, None) => None,
    };
    let t_compile = Instant::now();
    let (mut trainer, data_state, start) = if let Some(ck) = full_state {
        let (reader, data_state) = TrainStateReader::open(ck, &tp.decls, &want, scan)?;
        let start = reader.step()? as u64;
        if start >= steps {
            println!("nothing to do: the run is at step {start} of steps={steps}");
            return Ok(());
        }
        let trainer = Trainer::from_regions(&rt, tp, |i, o, d| -> Result<Vec<u8>> { Ok(reader.read_region(i, o, d)?) })?;
        (trainer, data_state, start)
    } else if !has_weights(&cfg) {
        // Random init on the devices; step, count and the optimizer moments start at zero.
        let decls = tp.decls.clone();
        let params = state_entries(&tp.program, "params");
        let mut init = init_on_device(&rt, &cfg, &decls)?;
        let trainer = Trainer::from_uploads(&rt, tp, |p, exe, arg, i| -> Result<Vec<maxtext::pjrt::Buffer>> {
            if params.contains(&i) {
                return take_init(&mut init, i - params.start, exe.addressable_devices());
            }
            let elem = want[i].0.size_bytes();
            rt.upload_arg_sharded(p, exe, arg, |_, d| -> Result<Vec<u8>> { Ok(vec![0u8; d.iter().product::<i64>() as usize * elem]) })
        })?;
        (trainer, serde_json::Value::Null, 0)
    } else {
        let decls = tp.decls.clone();
        let entries = state_entries(&tp.program, "params");
        let trainer = with_param_regions(&cfg, &decls, |params| {
            // step, count and the optimizer moments start at zero.
            Trainer::from_regions(&rt, tp, |i, o, d| {
                if entries.contains(&i) {
                    return params(i - entries.start, o, d);
                }
                let elem = want[i].0.size_bytes();
                Ok(vec![0u8; d.iter().product::<i64>() as usize * elem])
            })
        })?;
        (trainer, serde_json::Value::Null, 0)
    };
    tracing::info!("compiled train_step and loaded the state in {:.1} s", t_compile.elapsed().as_secs_f64());
    let mut data = if data_state.is_null() { DataIterator::new(&cfg, 0, 1)? } else { DataIterator::restore(&cfg, 0, 1, &data_state)? };
    let mut metrics = MetricsWriter::new(&cfg)?;
    let mut pending: PendingSave = None;
    let decls = trainer.program().decls.clone();
    let save = |trainer: &Trainer, data: &DataIterator, step: u64, pending: &mut PendingSave| -> Result<()> {
        wait(pending)?;
        let layouts = trainer_layouts(trainer);
        let (root, decls, data_state) = (root.clone(), decls.clone(), data.state());
        if cfg.checkpoint.async_checkpointing {
            // As orbax's async save: the distinct shards are copied to the host now (the next step donates
            // the buffers) and written in the background.
            let mut held: Vec<Vec<(Vec<i64>, Vec<u8>)>> = Vec::new();
            for i in 0..layouts.len() {
                let mut shards = Vec::new();
                trainer.for_each_state_shard(i, |o, _, bytes| -> Result<()> {
                    shards.push((o.to_vec(), bytes));
                    Ok(())
                })?;
                held.push(shards);
            }
            *pending = Some(std::thread::spawn(move || -> Result<std::path::PathBuf> {
                save_train_state_sharded(&root, step, &decls, &layouts, &data_state, scan, |i, put| -> Result<()> {
                    for (o, bytes) in &held[i] {
                        put(o, bytes)?;
                    }
                    Ok(())
                })
            }));
        } else {
            // Leaf by leaf, shard by shard: one shard on the host at a time.
            save_trainer_state(trainer, &root, step, &data_state, scan)?;
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
            extra: {
                let mut extra = vec![
                    ("learning/moe_lb_loss".into(), out.moe_lb_loss),
                    ("learning/lm_loss".into(), out.loss - out.moe_lb_loss),
                    ("learning/moe_max_expert_load".into(), out.moe_max_expert_load),
                ];
                if matches!(cfg.compute.moe_strategy(), maxtext::config::MoeStrategy::Dropping { .. }) {
                    extra.push(("learning/moe_dropped_fraction".into(), out.moe_dropped_fraction));
                }
                extra
            },
        })?;
        let last = step + 1 == steps;
        if ckpt_on && (step % cfg.checkpoint.checkpoint_period.max(1) == 0 || (last && cfg.checkpoint.save_checkpoint_on_completion)) {
            save(&trainer, &data, step, &mut pending)?;
        }
    }
    wait(&mut pending)?;
    metrics.close()?;
    eprintln!("{}", rt.cache().summary());
    Ok(())
}

