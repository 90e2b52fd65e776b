//! `maxtext compile`: MaxText's `train_compile` — compiles the train step (or `program=prefill|decode|
//! forward`) for a TPU slice named by `compile_topology` (v5p-8 … v5p-256, v4, v5e, v6e, tpu7x; times
//! `compile_topology_num_slices`) through libtpu with no TPU attached, and reports what one chip needs:
//! arguments, outputs, temporaries and generated code against its HBM, with the cost analysis. It writes
//! the optimized HLO and the numbers (`out_dir`, default `<base_output_directory>/<run_name>/compile`) and,
//! with `compiled_trainstep_file`, the serialized executable. An out-of-memory compile is reported with
//! libtpu's numbers and exits 1.

use super::export_hlo::trace;
use super::setup::{describe_mesh, load_config};
use anyhow::{bail, Context, Result};
use maxtext::config::{Config, TpuTopology};
use maxtext::emit::emit_program;
use maxtext::ir::Program;
use maxtext::pjrt::{locate_plugin, parse_xla_flags, slice_options, tpu_chips_attached, DeviceInfo, Error as PjrtError, ErrorCode, Executable, Hardware, MemoryStats, Plugin, Topology};
use maxtext::runtime::{local_rows, LocalPartitions, Runtime};
use std::time::Instant;

const GIB: f64 = (1u64 << 30) as f64;

/// MaxText's total per chip (`print_compiled_memory_stats`): arguments + outputs + temporaries − aliased
/// (the generated code, a few hundred MB at most, is said apart as MaxText leaves it out).
fn maxtext_total(s: &MemoryStats) -> i64 {
    s.argument_size_in_bytes + s.output_size_in_bytes + s.temp_size_in_bytes - s.alias_size_in_bytes
}

pub fn run(args: &[String]) -> Result<()> {
    // The target is a TPU: kernels chosen by hardware (`attention=autoselected` -> flash) follow it, as
    // MaxText's own default `hardware: tpu` makes them in train_compile.
    let mut args = args.to_vec();
    if !args.iter().any(|a| a.starts_with("hardware=")) {
        args.push("hardware=tpu".into());
    }
    let cfg = load_config(&args)?;
    let Some(topo) = cfg.compile_topology()? else {
        bail!("set compile_topology=<slice> (v5p-8, v5p-64, v5p-128, …): `maxtext compile` compiles for a TPU slice with no TPU attached");
    };
    let Some(topology_name) = topo.topology_name.clone() else {
        bail!("compile_topology={}: no known chip layout for that slice size (MaxText's table has v5p-8 … v5p-8192)", topo.name);
    };
    let slices = cfg.run.compile_topology_num_slices.max(1);
    let kind = cfg.run.program;
    let name = kind.name();
    let out_dir = cfg.run.out_dir.clone().unwrap_or_else(|| default_out_dir(&cfg));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating out_dir {}", out_dir.display()))?;

    let path = locate_plugin(Hardware::Tpu, cfg.run.pjrt_plugin_path.as_deref())?;
    if !tpu_chips_attached() {
        // libtpu reads the slice type from here when no chips are attached (else it warns and guesses).
        if std::env::var_os("TPU_ACCELERATOR_TYPE").is_none() {
            std::env::set_var("TPU_ACCELERATOR_TYPE", &topo.name);
        }
    }
    let plugin = Plugin::load(&path).with_context(|| format!("loading libtpu from {}", path.display()))?;
    let topology = Topology::create(&plugin, &topology_name, &slice_options(&topo, slices))
        .with_context(|| format!("describing {} ({topology_name}, {slices} slice(s)) with libtpu {}", topo.name, path.display()))?;
    let devices = topology.devices()?;
    if devices.len() != cfg.devices.num_devices {
        bail!("libtpu describes {} devices for {} x{slices} but the mesh was laid out for {}", devices.len(), topo.name, cfg.devices.num_devices);
    }
    let hbm = topology.device_memory_bytes();
    let kind_name = devices.first().map(|d| d.kind.clone()).unwrap_or_default();
    // Hosts of the slice: the program is one SPMD program over all of them (each host runs it on its chips).
    let hosts = devices.iter().map(|d| d.process_index).collect::<std::collections::BTreeSet<_>>().len();
    println!(
        "target {} ({topology_name}, {slices} slice(s)): {} {kind_name} devices on {hosts} host(s), {} per chip; libtpu {}",
        topo.name,
        devices.len(),
        hbm.map(|b| format!("{:.2} GiB HBM", b as f64 / GIB)).unwrap_or_else(|| "unknown HBM".into()),
        path.display()
    );

    let t0 = Instant::now();
    let (program, decls) = trace(&cfg, kind)?;
    let text = emit_program(&program);
    let trace_s = t0.elapsed().as_secs_f64();
    let params: i64 = decls.iter().map(|d| d.num_elements()).sum();
    println!(
        "program {name} of {}: {:.2} B parameters, scan_layers={}, devices={}; traced and emitted in {trace_s:.1} s ({:.1} MB of StableHLO)",
        cfg.run.model_name,
        params as f64 / 1e9,
        cfg.compute.scan_layers,
        describe_mesh(&cfg),
        text.len() as f64 / 1e6
    );
    report_host_rows(&program, &devices);
    let mut options = Runtime::compile_options(&program);
    options.xla_flags = parse_xla_flags(&cfg.run.compile_xla_flags)?;
    let n = program.num_partitions() as usize;
    options.device_assignment = Some(devices.iter().take(n).map(|d| d.id).collect());
    let t1 = Instant::now();
    let exe = match topology.compile_mlir(&text, &options) {
        Ok(exe) => exe,
        Err(PjrtError::Pjrt { code: ErrorCode::ResourceExhausted, message, .. }) => {
            eprintln!("error: {name} does not fit {} ({} per chip): libtpu ran out of memory compiling it after {:.1} s:\n{message}", topo.name, hbm.map(|b| format!("{:.2} GiB", b as f64 / GIB)).unwrap_or_default(), t1.elapsed().as_secs_f64());
            eprintln!("try a larger slice, more fsdp (ici_fsdp_parallelism), remat_policy=full, or a smaller per_device_batch_size");
            std::process::exit(1);
        }
        Err(e) => return Err(e).with_context(|| format!("compiling {name} for {}", topo.name)),
    };
    let compile_s = t1.elapsed().as_secs_f64();
    report(&cfg, &exe, name, &topo, hbm, compile_s, &out_dir)
}

/// On a multi-host slice: which rows of each global batch every host feeds, the block its chips hold with
/// partition p on the topology's p-th device, as the runtime assigns them (a multi-host `train` reads and
/// uploads exactly that share; it refuses a mesh that scatters a host's rows).
fn report_host_rows(program: &Program, devices: &[DeviceInfo]) {
    let Some(batch) = program.arg_groups.iter().find(|g| g.name == "batch") else { return };
    let spec = Runtime::arg_spec(program, batch.range.start);
    let n = (program.num_partitions() as usize).min(devices.len());
    let hosts: std::collections::BTreeSet<i64> = devices[..n].iter().map(|d| d.process_index).collect();
    if hosts.len() < 2 {
        return;
    }
    let rows: Vec<(i64, usize, Option<(i64, i64)>)> = hosts
        .into_iter()
        .map(|h| {
            let partitions: Vec<usize> = (0..n).filter(|&p| devices[p].process_index == h).collect();
            let chips = partitions.len();
            (h, chips, local_rows(spec, &LocalPartitions { partitions, multi_process: true }))
        })
        .collect();
    let (count, global) = (rows.len() as i64, spec.dims[0]);
    let r = global / count;
    if rows.iter().enumerate().all(|(k, (_, _, got))| *got == Some((k as i64 * r, (k as i64 + 1) * r))) {
        println!("data: host h of {count} feeds rows {r}h..{r}h+{r} of each global batch of {global} ({} chips each)", rows[0].1);
        return;
    }
    for (h, chips, got) in rows {
        match got {
            Some((lo, hi)) => println!("data: host {h} ({chips} chips) feeds rows {lo}..{hi} of each global batch of {global}"),
            None => println!("data: host {h}'s {chips} chips hold rows of the batch that are not one block: `train` over this slice refuses this mesh"),
        }
    }
}

fn default_out_dir(cfg: &Config) -> std::path::PathBuf {
    match cfg.run.base_output_directory.as_local() {
        Some(base) => base.join(&cfg.run.run_name).join("compile"),
        // A gs:// output root: the local files go under the working directory.
        None => std::path::Path::new(".").join(&cfg.run.run_name).join("compile"),
    }
}

fn report(cfg: &Config, exe: &Executable, name: &str, topo: &TpuTopology, hbm: Option<i64>, compile_s: f64, out_dir: &std::path::Path) -> Result<()> {
    let mem = exe.memory_stats()?;
    let total = maxtext_total(&mem);
    let cost = exe.cost_analysis()?;
    let flops = cost.get("flops").copied().unwrap_or(f64::NAN);
    let bytes = cost.get("bytes accessed").copied().unwrap_or(f64::NAN);
    let g = |b: i64| b as f64 / GIB;
    println!("compiled {name} for {} in {compile_s:.1} s", topo.name);
    println!(
        "memory per chip: arguments {:.2} GiB, outputs {:.2} GiB, aliased {:.2} GiB, temporaries {:.2} GiB, generated code {:.3} GiB; total {:.2} GiB{}",
        g(mem.argument_size_in_bytes),
        g(mem.output_size_in_bytes),
        g(mem.alias_size_in_bytes),
        g(mem.temp_size_in_bytes),
        g(mem.generated_code_size_in_bytes),
        g(total),
        hbm.map(|h| format!(" of {:.2} GiB HBM ({:.0}%)", g(h), 100.0 * total as f64 / h as f64)).unwrap_or_default()
    );
    println!("cost analysis per chip: {:.4e} FLOPs, {:.4e} bytes accessed", flops, bytes);
    let hlo_path = out_dir.join(format!("{name}.{}.optimized.hlo.txt", topo.name));
    std::fs::write(&hlo_path, exe.optimized_hlo_text()?).with_context(|| format!("writing {}", hlo_path.display()))?;
    let stats = serde_json::json!({
        "program": name,
        "model_name": cfg.run.model_name,
        "compile_topology": topo.name,
        "topology_name": topo.topology_name,
        "num_slices": cfg.run.compile_topology_num_slices.max(1),
        "devices": cfg.devices.num_devices,
        "mesh": cfg.mesh_shape,
        "compile_seconds": compile_s,
        "memory_per_chip": {
            "argument_bytes": mem.argument_size_in_bytes,
            "output_bytes": mem.output_size_in_bytes,
            "alias_bytes": mem.alias_size_in_bytes,
            "temp_bytes": mem.temp_size_in_bytes,
            "generated_code_bytes": mem.generated_code_size_in_bytes,
            "total_bytes": total,
            "hbm_bytes": hbm,
        },
        "cost_analysis": cost,
    });
    let stats_path = out_dir.join(format!("{name}.{}.stats.json", topo.name));
    std::fs::write(&stats_path, serde_json::to_string_pretty(&stats)?)?;
    println!("optimized HLO -> {}, numbers -> {}", hlo_path.display(), stats_path.display());
    if let Some(path) = &cfg.run.compiled_trainstep_file {
        let bytes = exe.serialize()?;
        std::fs::write(path, &bytes).with_context(|| format!("writing compiled_trainstep_file {}", path.display()))?;
        println!("serialized executable ({:.1} MB) -> {}", bytes.len() as f64 / 1e6, path.display());
    }
    if let Some(h) = hbm {
        if total > h {
            bail!("{name} needs {:.2} GiB per chip, more than the {:.2} GiB of HBM", g(total), g(h));
        }
    }
    Ok(())
}
