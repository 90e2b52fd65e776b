//! Which process of a multi-host run this is (MaxText's `maybe_initialize_jax_distributed_system`): the
//! keys `num_processes`, `process_id` and `coordinator_address` (named after `jax.distributed.initialize`'s
//! arguments), else the variables MaxText's GPU launchers set (`NNODES`, `NODE_RANK`,
//! `JAX_COORDINATOR_IP` / `JAX_COORDINATOR_PORT`) or JAX reads (`JAX_COORDINATOR_ADDRESS`). One process
//! when none is set or `skip_jax_distributed_system=true`.

use anyhow::{bail, Context, Result};
use maxtext::config::Config;
use maxtext::distributed::ProcessGroup;
use std::sync::Arc;
use std::time::Duration;

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn env_number(key: &str) -> Result<Option<usize>> {
    env(key).map(|v| v.trim().parse::<usize>().with_context(|| format!("${key}={v} is not a non-negative integer"))).transpose()
}

/// How many processes the config (or the launcher's environment) says the run has.
pub fn configured_count(cfg: &Config) -> Result<usize> {
    Ok(match cfg.run.num_processes {
        0 => env_number("NNODES")?.unwrap_or(1),
        n => n,
    })
}

/// Joins the run's processes through process 0's coordinator (or returns the one process).
pub fn join_processes(cfg: &Config) -> Result<Arc<ProcessGroup>> {
    let r = &cfg.run;
    let count = configured_count(cfg)?;
    if r.skip_jax_distributed_system || count <= 1 {
        if r.skip_jax_distributed_system && r.num_processes > 1 {
            bail!("num_processes={} with skip_jax_distributed_system=true: drop one of them", r.num_processes);
        }
        return Ok(Arc::new(ProcessGroup::single()));
    }
    let index = match r.process_id {
        -1 => env_number("NODE_RANK")?.with_context(|| {
            format!("num_processes={count} needs this process's index: pass process_id=0..{} (or set $NODE_RANK)", count - 1)
        })?,
        i => i as usize,
    };
    let address = r
        .coordinator_address
        .clone()
        .or_else(|| env("JAX_COORDINATOR_ADDRESS"))
        .or_else(|| Some(format!("{}:{}", env("JAX_COORDINATOR_IP")?, env("JAX_COORDINATOR_PORT")?)))
        .with_context(|| {
            format!("num_processes={count} needs process 0's address: pass coordinator_address=HOST:PORT (the same on every process)")
        })?;
    eprintln!("process {index} of {count}: joining the coordinator at {address}");
    let group = ProcessGroup::join(&address, count, index, Duration::from_secs(r.jax_distributed_initialization_timeout))?;
    eprintln!("process {index} of {count}: all {count} processes joined");
    Ok(Arc::new(group))
}

/// Refuses a multi-process run of a command that runs on one process's devices only (`decode`, `serve`,
/// `eval`, `check-logits`): started on every host with the process keys, each host would run the whole
/// command on its own chips alone.
pub fn one_process_only(cfg: &Config, command: &str) -> Result<()> {
    let count = configured_count(cfg)?;
    if count > 1 && !cfg.run.skip_jax_distributed_system {
        bail!(
            "`maxtext {command}` runs in one process, but num_processes={count} (or $NNODES) asks for {count}: only `train` and \
             `convert` run across processes yet. Run {command} on a single-host slice (v5p-8) or one machine; \
             `maxtext compile program=prefill|decode` checks the program for a larger slice"
        );
    }
    Ok(())
}
