//! `maxtext compile` through the real libtpu, with no TPU attached: libtpu is installed from PyPI by
//! `scripts/setup_libtpu.sh` (it may not be redistributed), the tiny model's train step is compiled for a
//! v5p-8 slice, and what the command prints and writes is checked against the stats of the executable
//! libtpu gives for the same program; an out-of-memory program exits 1 with libtpu's numbers.

use maxtext::config::Config;
use maxtext::emit::emit_program;
use maxtext::pjrt::{slice_options, CompileOptions, Plugin, Topology};
use maxtext::program::train_program;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// libtpu.so, installed once into the cache directory by the project's script (a failure here is loud:
/// PyPI is reachable wherever this suite runs).
fn libtpu() -> PathBuf {
    let out = Command::new(Path::new(ROOT).join("scripts/setup_libtpu.sh")).output().expect("running scripts/setup_libtpu.sh");
    assert!(out.status.success(), "scripts/setup_libtpu.sh failed, so libtpu cannot be tested:\n{}", String::from_utf8_lossy(&out.stderr));
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().expect("the script prints the path").trim());
    assert!(path.is_file(), "{} missing after setup_libtpu.sh", path.display());
    path
}

fn compile(so: &Path, keys: &[String]) -> (bool, String, String) {
    let mut args = vec!["compile".to_string(), "configs/base.yml".into(), format!("pjrt_plugin_path={}", so.display())];
    args.extend(keys.iter().cloned());
    let o = Command::new(env!("CARGO_BIN_EXE_maxtext")).args(&args).current_dir(ROOT).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

fn tiny(extra: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = ["model_name=qwen3-next-tiny", "compile_topology=v5p-8", "per_device_batch_size=1", "max_target_length=256", "log_config=false", "jax_cache_dir="]
        .iter()
        .map(|s| s.to_string())
        .collect();
    k.extend(extra.iter().map(|s| s.to_string()));
    k
}

#[test]
fn tiny_train_step_for_v5p_8_reports_the_executables_own_memory() {
    let so = libtpu();
    let dir = tempfile::tempdir().unwrap();
    let exe_file = dir.path().join("train_step.bin");
    let keys = tiny(&[&format!("out_dir={}", dir.path().display()), &format!("compiled_trainstep_file={}", exe_file.display())]);
    let (ok, out, err) = compile(&so, &keys);
    assert!(ok, "compile failed:\n{out}\n{err}");
    assert!(out.contains("target v5p-8 (v5:2x2x1, 1 slice(s)): 4 TPU v5 devices on 1 host(s)"), "{out}");

    // The same program compiled here for the same slice: its stats are what the command must report.
    let mut cfg_keys = keys.clone();
    cfg_keys.retain(|k| !k.starts_with("out_dir=") && !k.starts_with("compiled_trainstep_file="));
    // As the command does: the target is a TPU (attention=autoselected is flash there).
    cfg_keys.push("hardware=tpu".into());
    let cfg = Config::load(&Path::new(ROOT).join("configs/base.yml"), &cfg_keys).unwrap();
    let tp = train_program(&cfg, cfg.batch.global_batch_size_to_train_on as i64, 256).unwrap();
    let plugin = Plugin::load(&so).unwrap();
    let topo_cfg = cfg.compile_topology().unwrap().unwrap();
    let topology = Topology::create(&plugin, "v5:2x2x1", &slice_options(&topo_cfg, 1)).unwrap();
    let devices = topology.devices().unwrap();
    assert_eq!(devices.len(), 4);
    let mut options = CompileOptions::spmd(4);
    options.device_assignment = Some(devices.iter().map(|d| d.id).collect());
    let exe = topology.compile_mlir(&emit_program(&tp.program), &options).unwrap();
    let want = exe.memory_stats().unwrap();
    assert!(want.argument_size_in_bytes > 0 && want.temp_size_in_bytes > 0, "{want:?}");

    let stats: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("train.v5p-8.stats.json")).unwrap()).unwrap();
    let m = &stats["memory_per_chip"];
    assert_eq!(m["argument_bytes"].as_i64(), Some(want.argument_size_in_bytes), "{m}");
    assert_eq!(m["output_bytes"].as_i64(), Some(want.output_size_in_bytes), "{m}");
    assert_eq!(m["alias_bytes"].as_i64(), Some(want.alias_size_in_bytes), "{m}");
    assert_eq!(m["temp_bytes"].as_i64(), Some(want.temp_size_in_bytes), "{m}");
    let total = want.argument_size_in_bytes + want.output_size_in_bytes + want.temp_size_in_bytes - want.alias_size_in_bytes;
    assert_eq!(m["total_bytes"].as_i64(), Some(total), "{m}");
    assert_eq!(m["hbm_bytes"].as_i64(), topology.device_memory_bytes(), "{m}");
    let gib = |b: i64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
    let line = out.lines().find(|l| l.starts_with("memory per chip:")).unwrap_or_else(|| panic!("no memory line:\n{out}"));
    for (what, bytes) in [("arguments", want.argument_size_in_bytes), ("temporaries", want.temp_size_in_bytes), ("total", total)] {
        assert!(line.contains(&format!("{what} {}", gib(bytes))), "{what} should be {} in: {line}", gib(bytes));
    }
    let flops = exe.cost_analysis().unwrap()["flops"];
    assert!(flops > 0.0 && stats["cost_analysis"]["flops"].as_f64() == Some(flops), "{stats}");

    // Real TPU code, partitioned over the 4 chips, and the serialized executable a v5p host would load.
    let hlo = std::fs::read_to_string(dir.path().join("train.v5p-8.optimized.hlo.txt")).unwrap();
    assert!(hlo.contains("all-gather") || hlo.contains("reduce-scatter") || hlo.contains("all-reduce"), "no collectives in the partitioned HLO");
    // The dropless MoE (the default) as libtpu's own ragged dots, one per chip's tokens.
    assert!(hlo.contains("ragged-dot"), "no ragged dot in the TPU program of the dropless MoE");
    let bytes = std::fs::metadata(&exe_file).unwrap().len();
    assert!(bytes > 1 << 20, "serialized executable of {bytes} bytes");
}

/// The CPU plugin cannot form a client across processes (xla-cpu-pjrt 0.0.1 ignores `num_nodes` /
/// `node_id` and never calls the key-value callbacks), so the cross-host program is covered by compiling
/// for multi-host slices: v5p-16 is 8 chips on 2 hosts, the train step one SPMD program over both; and
/// for two v5p-8 slices.
#[test]
fn tiny_train_step_compiles_for_a_two_host_slice_and_two_slices() {
    let so = libtpu();
    let dir = tempfile::tempdir().unwrap();
    let mut keys = tiny(&[&format!("out_dir={}", dir.path().display())]);
    keys.retain(|k| !k.starts_with("compile_topology="));
    keys.push("compile_topology=v5p-16".into());
    let (ok, out, err) = compile(&so, &keys);
    assert!(ok, "compile failed:\n{out}\n{err}");
    assert!(out.contains("target v5p-16 (v5:2x2x2, 1 slice(s)): 8 TPU v5 devices on 2 host(s)"), "{out}");
    assert!(out.contains("devices=8 mesh fsdp=8"), "{out}");
    // libtpu numbers the chips host by host: each host's chips hold one block of the batch, the rows a
    // multi-host `train` has that host read.
    assert!(out.contains("data: host h of 2 feeds rows 4h..4h+4 of each global batch of 8 (4 chips each)"), "{out}");
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("train.v5p-16.stats.json")).unwrap()).unwrap();
    assert!(stats["memory_per_chip"]["total_bytes"].as_i64().unwrap() > 0, "{stats}");

    // Two slices (MegaScale over DCN): MaxText's dcn_data_parallelism=-1 puts the slices on `data`.
    let mut keys = tiny(&[&format!("out_dir={}", dir.path().display()), "compile_topology_num_slices=2"]);
    keys.retain(|k| !k.is_empty());
    let (ok, out, err) = compile(&so, &keys);
    assert!(ok, "two-slice compile failed:\n{out}\n{err}");
    assert!(out.contains("target v5p-8 (v5:2x2x1, 2 slice(s)): 8 TPU v5 devices"), "{out}");
    assert!(out.contains("devices=8 mesh data=2 fsdp=4"), "{out}");
    assert!(out.contains("data: host h of 2 feeds rows 4h..4h+4 of each global batch of 8 (4 chips each)"), "{out}");
}

#[test]
fn a_program_larger_than_hbm_is_refused_with_libtpus_numbers() {
    let so = libtpu();
    let dir = tempfile::tempdir().unwrap();
    // 64 rows of 16384 tokens per chip: the logits alone ([64 x 16384, 151936] per chip) are terabytes.
    let keys = tiny(&[&format!("out_dir={}", dir.path().display()), "per_device_batch_size=64", "max_target_length=16384"]);
    let (ok, out, err) = compile(&so, &keys);
    assert!(!ok, "an over-HBM program compiled:\n{out}");
    assert!(err.contains("ran out of memory") && err.contains("exceeds available HBM"), "{err}");
}

#[test]
fn unknown_slice_and_missing_topology_are_clear_errors() {
    let so = libtpu();
    let (ok, _, err) = compile(&so, &["model_name=qwen3-next-tiny".into(), "compile_topology=v5p-7".into()]);
    assert!(!ok && err.contains("compile_topology=v5p-7"), "{err}");
    let (ok, _, err) = compile(&so, &["model_name=qwen3-next-tiny".into()]);
    assert!(!ok && err.contains("set compile_topology="), "{err}");
}
