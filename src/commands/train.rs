//! `maxtext train` (MaxText's `train`): the train step on device, data from the pipeline, metrics every
//! step, Orbax checkpoints of the full state every `checkpoint_period` steps (step 0 only with
//! `save_checkpoint_on_start`) and at the end (optionally written in the background while the next steps
//! run; only the newest `max_num_checkpoints_to_keep` kept, older ones removed once a newer one has
//! committed), evaluation every `eval_interval` steps (stopping early at `target_eval_loss`), automatic
//! resume from the run's latest checkpoint, and a stop on a NaN (`abort_on_nan_loss`) or Inf
//! (`abort_on_inf_loss`) loss that exits nonzero without saving that state, keeping the last good checkpoint.

use super::setup::{has_weights, init_on_device, load_config, open_runtime, take_init, with_param_regions};
use super::processes::join_processes;
use super::train_eval::Evaluator;
use anyhow::{bail, Context, Result};
use maxtext::checkpoint::orbax::OrbaxCheckpoint;
use maxtext::checkpoint::train_state::{latest_step, remove_old_steps, save_train_state_sharded, save_trainer_state, trainer_layouts, TrainStateReader};
use maxtext::config::Config;
use maxtext::data::DataIterator;
use maxtext::distributed::ProcessGroup;
use maxtext::metrics::{MetricsOptions, MetricsWriter, StepMetrics};
use maxtext::program::{train_program, BATCH_KEYS};
use maxtext::runtime::{state_args, state_entries, HostTensor, Runtime, Trainer};
use maxtext::storage::Location;
use std::thread::JoinHandle;
use std::time::Instant;

/// Checkpoints of the run: the one being written in the background, and how many to keep.
struct Saves {
    root: Location,
    keep: Option<usize>,
    pending: Option<JoinHandle<Result<Location>>>,
    /// Process 0 of the run (the one that removes old checkpoints).
    primary: bool,
}

impl Saves {
    /// Waits for the background save, then applies `max_num_checkpoints_to_keep`.
    fn wait(&mut self) -> Result<()> {
        if let Some(h) = self.pending.take() {
            let dir = h.join().map_err(|_| anyhow::anyhow!("the checkpoint writer thread panicked"))??;
            tracing::info!("checkpoint written: {dir}");
            self.committed()?;
        }
        Ok(())
    }

    /// A save has committed: older step directories beyond `max_num_checkpoints_to_keep` go.
    fn committed(&self) -> Result<()> {
        if let Some(keep) = self.keep.filter(|_| self.primary) {
            let removed = remove_old_steps(&self.root, keep)?;
            if !removed.is_empty() {
                tracing::info!("max_num_checkpoints_to_keep={keep}: removed checkpoints {removed:?}");
            }
        }
        Ok(())
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let (rt, cfg) = open_runtime(load_config(args)?)?;
    let group = join_processes(&cfg)?;
    let cfg = if group.count() > 1 { across_processes(&rt, cfg, &group)? } else { cfg };
    if cfg.data.dataset_type == maxtext::config::DatasetType::Synthetic {
        // A bad JAX_DEFAULT_PRNG_IMPL fails before the train step compiles, not after.
        maxtext::data::prng::PrngImpl::from_env()?;
    }
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
            eprintln!("resuming from checkpoint {}", root.join(s.to_string()));
            Some(OrbaxCheckpoint::open_step(&root, s)?)
        }
        (None, Some(path)) => {
            let item = maxtext::checkpoint::params::resolve_item_dir(path).with_context(|| format!("load_full_state_path={path}"))?;
            Some(OrbaxCheckpoint::open(&item).with_context(|| format!("load_full_state_path={path}"))?)
        }
        (None, None) => None,
    };
    // MaxText's `nnx_aux` RNG state: the restored checkpoint's (taken once its params have been checked),
    // else fresh; saved with every checkpoint.
    let mut aux = maxtext::checkpoint::nnx_aux::fresh(&cfg.model, scan, cfg.train.init_weights_seed);
    let t_compile = Instant::now();
    // The train step alone, compiled before the state is built (the Trainer then finds it in the executable
    // cache): whole-process benchmarks (benches/commands.rs) read this line, since the timing logged below
    // also covers initialising or reading the state.
    let compile_step = || -> Result<()> {
        let (compiled_before, t) = (rt.cache().compiled(), Instant::now());
        rt.compile(&tp.program)?;
        let how = if rt.cache().compiled() > compiled_before { "compiled" } else { "loaded from jax_cache_dir" };
        // Not "compiled ...": the end-of-run summary is the line that starts with that word.
        eprintln!("train step {how} in {:.2} s", t.elapsed().as_secs_f64());
        Ok(())
    };
    let (mut trainer, data_state, start) = if let Some(ck) = full_state {
        let (reader, data_state) = TrainStateReader::open(ck, &tp.decls, tp.opt_type, &want, scan)?;
        aux = maxtext::checkpoint::nnx_aux::carried(reader.checkpoint(), aux)?;
        let start = reader.step()? as u64;
        if start >= steps {
            println!("nothing to do: the run is at step {start} of steps={steps}");
            return Ok(());
        }
        compile_step()?;
        let trainer = Trainer::from_regions(&rt, tp, |i, o, d| -> Result<Vec<u8>> { Ok(reader.read_region(i, o, d)?) })?;
        (trainer, data_state, start)
    } else if !has_weights(&cfg) {
        // Random init on the devices; step, count and the optimizer moments (if any) start at zero.
        let decls = tp.decls.clone();
        let params = state_entries(&tp.program, "params");
        compile_step()?;
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
        compile_step()?;
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
    let share = DataShare::of(&trainer, &cfg, &group)?;
    let data_state = share.own_state(data_state, group.index())?;
    let mut data = if data_state.is_null() { DataIterator::new(&cfg, share.index, share.count)? } else { DataIterator::restore(&cfg, share.index, share.count, &data_state)? };
    let evaluator = if cfg.train.eval_interval > 0 { Some(Evaluator::new(&rt, &cfg)?) } else { None };
    let mut metrics = {
        // Process 0 writes the metrics file and TensorBoard, as in MaxText.
        let mut o = MetricsOptions::from_config(&cfg);
        if !group.is_primary() {
            (o.metrics_file, o.tensorboard_dir) = (None, None);
        }
        MetricsWriter::with_options(o)?
    };
    let mut saves = Saves { root: root.clone(), keep: cfg.checkpoint.max_num_checkpoints_to_keep, pending: None, primary: group.is_primary() };
    let timeout = std::time::Duration::from_secs(cfg.run.jax_distributed_initialization_timeout);
    let decls = trainer.program().decls.clone();
    let opt_type = trainer.program().opt_type;
    let save = |trainer: &Trainer, data: &DataIterator, step: u64, saves: &mut Saves| -> Result<()> {
        saves.wait()?;
        let layouts = trainer_layouts(trainer);
        let data_state = share.saved_state(data.state(), &group, step, timeout)?;
        let (root, decls, aux, processes) = (root.clone(), decls.clone(), aux.clone(), group.clone());
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
            saves.pending = Some(std::thread::spawn(move || -> Result<Location> {
                save_train_state_sharded(&root, step, &decls, opt_type, &layouts, &aux, &data_state, scan, Some(&processes), |i, put| -> Result<()> {
                    for (o, bytes) in &held[i] {
                        put(o, bytes)?;
                    }
                    Ok(())
                })
            }));
        } else {
            // Leaf by leaf, shard by shard: one shard on the host at a time.
            save_trainer_state(trainer, &root, step, &aux, &data_state, scan, Some(&processes))?;
            saves.committed()?;
        }
        Ok(())
    };
    let t = &cfg.train;
    for step in start..steps {
        let b = data.next_batch()?;
        let inputs: Vec<HostTensor> = BATCH_KEYS.iter().map(|k| b.host_tensor(k).expect("batch key")).collect();
        let t0 = Instant::now();
        let out = trainer.step_on_rows(&inputs, share.row0)?;
        let dt = t0.elapsed();
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
                if matches!(cfg.compute.moe_strategy(cfg.run.hardware), maxtext::config::MoeStrategy::Dropping { .. }) {
                    extra.push(("learning/moe_dropped_fraction".into(), out.moe_dropped_fraction));
                }
                extra
            },
        })?;
        // MaxText writes the step's metrics, then aborts; this state is not saved over a good checkpoint.
        if (out.loss.is_nan() && t.abort_on_nan_loss) || (out.loss.is_infinite() && t.abort_on_inf_loss) {
            saves.wait()?;
            let last = latest_step(&root)?.map(|s| root.join(s.to_string()).to_string()).unwrap_or_else(|| "none".into());
            let key = if out.loss.is_nan() { "abort_on_nan_loss" } else { "abort_on_inf_loss" };
            bail!("loss is {} at step {step}: stopping; the last good checkpoint is {last} ({key}=true; lower learning_rate or check the data)", out.loss);
        }
        // MaxText: every checkpoint_period steps and after the last one, but never at step 0 unless
        // save_checkpoint_on_start.
        let last = step + 1 == steps;
        let period = step % cfg.checkpoint.checkpoint_period.max(1) == 0;
        if ckpt_on && (step != 0 || cfg.checkpoint.save_checkpoint_on_start) && (period || (last && cfg.checkpoint.save_checkpoint_on_completion)) {
            save(&trainer, &data, step, &mut saves)?;
        }
        if let Some(ev) = evaluator.as_ref().filter(|_| step % t.eval_interval as u64 == 0) {
            let summary = ev.run(&trainer, step, &group, timeout)?;
            metrics.write_eval(step, &summary)?;
            // MaxText's StopTraining: no further steps and no final checkpoint.
            if t.target_eval_loss != 0.0 && summary.avg_loss() <= t.target_eval_loss {
                println!("Training stopped: target_eval_loss={} is achieved (eval loss {:.4} after step {step})", t.target_eval_loss, summary.avg_loss());
                break;
            }
        }
    }
    saves.wait()?;
    metrics.close()?;
    eprintln!("{}", rt.cache().summary());
    Ok(())
}

/// A run over several processes (a multi-host slice): every process runs this same loop over the global
/// mesh of all their devices (partition `p` on the plugin's `p`-th device, as `jax.devices()` orders
/// them), uploads and restores only the shards its own devices hold, reads only its share of each global
/// batch (the rows its devices hold: [`DataShare`]), and writes only the shards it owns of every
/// checkpoint, which process 0 merges and commits. Returns the config fitted to the global mesh.
fn across_processes(rt: &Runtime, cfg: Config, group: &ProcessGroup) -> Result<Config> {
    let (count, local, known) = (group.count(), rt.client().addressable_devices().len(), rt.client().devices().len());
    if known < local * count {
        return stop_without_cross_process_client(rt, cfg, group);
    }
    if known != local * count {
        bail!("the plugin sees {known} devices, but {count} processes with {local} each make {}: every process of the run needs the same number of devices", local * count);
    }
    eprintln!("process {} of {count}: {local} of the run's {known} devices are here", group.index());
    cfg.with_num_devices(known).context("fitting the mesh to every process's devices")
}

/// Which share of every global batch this process reads: the rows `row0..row0 + rows` its devices hold,
/// which is share `index` of `count` equal shares of [`DataIterator`] (processes whose devices hold the same
/// rows read the same share). One process: all rows, share 0 of 1.
pub(super) struct DataShare {
    pub index: usize,
    pub count: usize,
    pub row0: i64,
    processes: usize,
}

impl DataShare {
    /// The share of a global batch of `global` rows whose rows `rows` this process's devices hold
    /// ([`Runtime::local_batch_rows`]); `what` names the batch in errors.
    pub fn of_rows(rows: Option<(i64, i64)>, global: i64, processes: usize, what: &str) -> Result<DataShare> {
        let (lo, hi) = rows.with_context(|| format!("this process's devices hold rows of the {what} that are not one block: the mesh's device order splits it across processes"))?;
        let n = hi - lo;
        if n <= 0 || global % n != 0 || lo % n != 0 {
            bail!("this process's devices hold rows {lo}..{hi} of a {what} of {global}: not one of equal shares");
        }
        Ok(DataShare { index: (lo / n) as usize, count: (global / n) as usize, row0: lo, processes })
    }

    fn of(trainer: &Trainer, cfg: &Config, group: &ProcessGroup) -> Result<DataShare> {
        let global = cfg.batch.global_batch_size_to_train_on as i64;
        let share = DataShare::of_rows(trainer.local_batch_rows(), global, group.count(), "global batch")?;
        if group.count() > 1 && cfg.batch.global_batch_size_to_load as i64 != global {
            bail!("a multi-process run loads the batch it trains on: global_batch_size_to_load {} differs from {global}", cfg.batch.global_batch_size_to_load);
        }
        if share.processes > 1 {
            let (lo, hi) = (share.row0, share.row0 + global / share.count as i64);
            eprintln!("data: process {} of {} reads rows {lo}..{hi} of each global batch of {global} rows (share {} of {})", group.index(), share.processes, share.index, share.count);
        }
        Ok(share)
    }

    /// This process's data-iterator position out of a checkpoint's: several processes save theirs as a
    /// list in process order.
    fn own_state(&self, saved: serde_json::Value, index: usize) -> Result<serde_json::Value> {
        match saved {
            serde_json::Value::Array(states) if self.processes > 1 => {
                if states.len() != self.processes {
                    bail!("the checkpoint holds the data positions of {} processes, but this run has {}", states.len(), self.processes);
                }
                Ok(states[index].clone())
            }
            serde_json::Value::Array(states) => bail!("the checkpoint was written by {} processes; resume it with as many", states.len()),
            s => Ok(s),
        }
    }

    /// What a checkpoint saves as the data position: this process's, or every process's in order.
    fn saved_state(&self, own: serde_json::Value, group: &ProcessGroup, step: u64, timeout: std::time::Duration) -> Result<serde_json::Value> {
        if self.processes == 1 {
            return Ok(own);
        }
        let all = group.all_gather(&format!("data_state/{step}"), own.to_string().as_bytes(), timeout)?;
        let states: Vec<serde_json::Value> = all.iter().map(|b| serde_json::from_slice(b)).collect::<Result<_, _>>().context("a process's data position")?;
        Ok(serde_json::Value::Array(states))
    }
}

/// Where a multi-process run stops on a plugin whose client sees only its own process's devices (the XLA
/// CPU plugin): each process still reads its data share (reported with the first batch's opening
/// tokens), then the train step over every process's devices is compiled through this client, which
/// fails. Always an error, the one that says so.
fn stop_without_cross_process_client(rt: &Runtime, cfg: Config, group: &ProcessGroup) -> Result<Config> {
    let (index, count) = (group.index(), group.count());
    let local = rt.client().addressable_devices().len();
    let known = rt.client().devices().len();
    // The mesh and the global batch span every process's devices, as `jax.devices()` does.
    let cfg = cfg.with_num_devices(local * count)?;
    let mut data = DataIterator::new(&cfg, index, count)?;
    let batch = data.next_batch()?;
    let (rows, global) = (batch.rows, cfg.batch.global_batch_size_to_load);
    eprintln!("data: process {index} of {count} reads rows {}..{} of each global batch of {global} rows", index * rows, (index + 1) * rows);
    for r in 0..rows {
        let head = &batch.inputs[r * batch.len..r * batch.len + batch.len.min(8)];
        eprintln!("data: row {} begins {head:?}", index * rows + r);
    }
    let timeout = std::time::Duration::from_secs(cfg.run.jax_distributed_initialization_timeout);
    group.barrier("train/first_batch", timeout)?;
    // The train step over every process's devices, compiled through this process's client (the runtime's
    // own device check is bypassed on purpose): this is where a plugin without cross-process support stops.
    let tp = train_program(&cfg, cfg.batch.global_batch_size_to_train_on as i64, cfg.data.max_target_length as i64)?;
    let mlir = maxtext::emit::emit_program(&tp.program);
    let why = match rt.cache().get_or_compile(rt.client(), &mlir, &Runtime::compile_options(&tp.program)) {
        Err(e) => format!("compiling it for {} devices fails: {e}", local * count),
        Ok(_) => "it compiles, but no process can run it".to_string(),
    };
    bail!(
        "the train step spans {count} processes x {local} devices, but this plugin's client sees only its own {known} \
         device(s) and {why}. The XLA CPU plugin runs programs on one process's devices only (it ignores \
         PJRT_Client_Create's node_id/num_nodes and never calls the key-value callbacks). Run multi-process on \
         TPU (libtpu); on one machine use one process with cpu_device_count={} instead. The cross-host program \
         itself is checked by `maxtext compile compile_topology=v5p-16` (2 hosts)",
        local * count
    )
}

#[cfg(test)]
mod tests {
    use super::DataShare;
    use serde_json::json;

    #[test]
    fn each_process_resumes_its_own_data_position() {
        let two = DataShare { index: 1, count: 2, row0: 4, processes: 2 };
        let saved = json!([{"batches": 3, "p": 0}, {"batches": 3, "p": 1}]);
        assert_eq!(two.own_state(saved.clone(), 1).unwrap(), json!({"batches": 3, "p": 1}));
        assert_eq!(two.own_state(json!(null), 0).unwrap(), json!(null), "a fresh run");
        let three = DataShare { processes: 3, ..two };
        assert!(three.own_state(saved.clone(), 2).unwrap_err().to_string().contains("data positions of 2 processes, but this run has 3"));
        let one = DataShare { index: 0, count: 1, row0: 0, processes: 1 };
        assert!(one.own_state(saved, 0).unwrap_err().to_string().contains("written by 2 processes"));
        assert_eq!(one.own_state(json!({"batches": 3}), 0).unwrap(), json!({"batches": 3}));
    }
}
