//! `maxtext export-hlo program=forward|train|prefill|decode out_dir=DIR`: writes the program's StableHLO,
//! then compiles it for the configured devices and writes the optimized HLO and `<program>.stats.json`
//! (memory per device, cost analysis), and prints the memory per device. Needs no weights.

use super::setup::{describe_mesh, load_config, open_runtime};
use anyhow::{Context, Result};
use maxtext::config::Program as ProgramKind;
use maxtext::emit::emit_program;
use maxtext::ir::Program;
use maxtext::nn::ParamDecl;
use maxtext::program::{decode_program, forward_program, prefill_program, train_program};
use std::time::Instant;

/// The program `kind` for `cfg`'s shapes: forward and train over the training batch of
/// `max_target_length` tokens; prefill over `max_prefill_predict_length` tokens and decode over one token
/// per row, both with caches of `max_target_length`.
pub(super) fn trace(cfg: &maxtext::config::Config, kind: ProgramKind) -> Result<(Program, Vec<ParamDecl>)> {
    let seq = cfg.data.max_target_length as i64;
    Ok(match kind {
        ProgramKind::Forward => {
            let fp = forward_program(cfg, cfg.batch.global_batch_size_to_train_on.max(1) as i64, seq)?;
            (fp.program, fp.decls)
        }
        ProgramKind::Train => {
            let tp = train_program(cfg, cfg.batch.global_batch_size_to_train_on.max(1) as i64, seq)?;
            (tp.program, tp.decls)
        }
        ProgramKind::Prefill => {
            let dp = prefill_program(cfg, cfg.batch.global_batch_size_to_load.max(1) as i64, cfg.data.max_prefill_predict_length as i64, seq)?;
            (dp.program, dp.decls)
        }
        ProgramKind::Decode => {
            let dp = decode_program(cfg, cfg.batch.global_batch_size_to_load.max(1) as i64, seq)?;
            (dp.program, dp.decls)
        }
    })
}

pub fn run(args: &[String]) -> Result<()> {
    let (rt, cfg) = open_runtime(load_config(args)?)?;
    let out = cfg.run.out_dir.clone().context("set out_dir=DIR for the exported files")?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating out_dir {}", out.display()))?;
    let kind = cfg.run.program;
    let name = kind.name();
    let t0 = Instant::now();
    let (program, decls) = trace(&cfg, kind)?;
    let t1 = Instant::now();
    let text = emit_program(&program);
    let t2 = Instant::now();
    let mlir_path = out.join(format!("{name}.stablehlo.mlir"));
    std::fs::write(&mlir_path, &text).with_context(|| format!("writing {}", mlir_path.display()))?;
    let params: i64 = decls.iter().map(|d| d.num_elements()).sum();
    println!("model {}: {} parameters ({:.2} B) in {} arrays", cfg.run.model_name, params, params as f64 / 1e9, decls.len());
    println!(
        "program {name}: scan_layers={}, {} ops, devices={}; trace {:.2} s, emit {:.2} s, {:.1} MB of StableHLO -> {}",
        cfg.compute.scan_layers,
        program.main.num_ops(),
        describe_mesh(&cfg),
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        text.len() as f64 / 1e6,
        mlir_path.display()
    );
    let t3 = Instant::now();
    let exe = rt.compile(&program)?;
    let compile_s = t3.elapsed().as_secs_f64();
    let hlo_path = out.join(format!("{name}.optimized.hlo.txt"));
    std::fs::write(&hlo_path, exe.optimized_hlo_text()?).with_context(|| format!("writing {}", hlo_path.display()))?;
    let mem = exe.memory_stats()?;
    let cost = exe.cost_analysis()?;
    let stats = serde_json::json!({
        "program": name,
        "platform": rt.client().platform_name(),
        "num_partitions": program.num_partitions(),
        "mesh": program.mesh.as_ref().map(|m| m.axes.clone()).unwrap_or_default(),
        "parameters": params,
        "compile_seconds": compile_s,
        "memory_per_device": {
            "argument_bytes": mem.argument_size_in_bytes,
            "output_bytes": mem.output_size_in_bytes,
            "alias_bytes": mem.alias_size_in_bytes,
            "temp_bytes": mem.temp_size_in_bytes,
            "peak_bytes": mem.peak_memory_in_bytes,
        },
        "cost_analysis": cost,
    });
    let stats_path = out.join(format!("{name}.stats.json"));
    std::fs::write(&stats_path, serde_json::to_string_pretty(&stats)?)?;
    let gb = |b: i64| b as f64 / (1u64 << 30) as f64;
    println!(
        "compiled in {compile_s:.1} s on {}: per device arguments {:.3} GiB, outputs {:.3} GiB, temporaries {:.3} GiB, peak {:.3} GiB -> {}, {}",
        rt.client().platform_name(),
        gb(mem.argument_size_in_bytes),
        gb(mem.output_size_in_bytes),
        gb(mem.temp_size_in_bytes),
        gb(mem.peak_memory_in_bytes),
        hlo_path.display(),
        stats_path.display()
    );
    eprintln!("{}", rt.cache().summary());
    Ok(())
}
