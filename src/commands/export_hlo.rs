//! `maxtext export-hlo program=forward out_dir=DIR`: writes the program's StableHLO, then compiles it and
//! writes the optimized HLO and a JSON of memory stats and cost analysis. Needs no weights.

use super::setup::{client, load_config};
use anyhow::{bail, Context, Result};
use maxtext::config::Program as ProgramKind;
use maxtext::emit::emit_program;
use maxtext::program::forward_program;
use maxtext::runtime::Runtime;
use std::time::Instant;

pub fn run(args: &[String]) -> Result<()> {
    let cfg = load_config(args)?;
    let out = cfg.run.out_dir.clone().context("set out_dir=DIR for the exported files")?;
    match cfg.run.program {
        ProgramKind::Forward => {}
        other => bail!("program={} cannot be exported yet: only program=forward is built so far", other.name()),
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating out_dir {}", out.display()))?;
    let batch = cfg.batch.global_batch_size_to_train_on.max(1) as i64;
    let seq = cfg.data.max_target_length as i64;
    let t0 = Instant::now();
    let fp = forward_program(&cfg, batch, seq)?;
    let t1 = Instant::now();
    let text = emit_program(&fp.program);
    let t2 = Instant::now();
    let mlir_path = out.join("forward.stablehlo.mlir");
    std::fs::write(&mlir_path, &text).with_context(|| format!("writing {}", mlir_path.display()))?;
    let params = fp.num_params();
    println!("model {}: {} parameters ({:.2} B) in {} arrays", cfg.run.model_name, params, params as f64 / 1e9, fp.decls.len());
    println!(
        "program forward: batch {batch} x {seq} tokens, scan_layers={}, {} ops; trace {:.2} s, emit {:.2} s, {:.1} MB of StableHLO -> {}",
        cfg.compute.scan_layers,
        fp.program.main.num_ops(),
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        text.len() as f64 / 1e6,
        mlir_path.display()
    );
    let rt = Runtime::new(client(&cfg)?);
    let t3 = Instant::now();
    let exe = rt.compile(&fp.program)?;
    let compile_s = t3.elapsed().as_secs_f64();
    let hlo_path = out.join("forward.optimized.hlo.txt");
    std::fs::write(&hlo_path, exe.optimized_hlo_text()?).with_context(|| format!("writing {}", hlo_path.display()))?;
    let mem = exe.memory_stats()?;
    let cost = exe.cost_analysis()?;
    let stats = serde_json::json!({
        "program": "forward",
        "platform": rt.client().platform_name(),
        "num_partitions": fp.program.num_partitions(),
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
    let stats_path = out.join("forward.stats.json");
    std::fs::write(&stats_path, serde_json::to_string_pretty(&stats)?)?;
    println!("compiled in {compile_s:.1} s on {}: peak {:.1} MB/device -> {}, {}", rt.client().platform_name(), mem.peak_memory_in_bytes as f64 / 1e6, hlo_path.display(), stats_path.display());
    Ok(())
}
