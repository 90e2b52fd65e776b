//! Loading an Orbax checkpoint onto 8 CPU devices with `fsdp=8`: peak host RSS of the sharded load (each
//! device's box read from just the chunks it needs, one shard on the host at a time) next to the old
//! whole-array path (each parameter read whole, split on the host, uploaded), in the same run.
//!
//! The checkpoint is the convert bench's synthetic 2.6 GB bf16 model (emb 1024, 12 layers, 64 experts x
//! 512, vocab 32768), converted once with `maxtext convert` and cached under
//! `target/load_sharded_bench/` (`LOAD_BENCH_DIR=DIR` puts it elsewhere; it needs ~5 GB while building).
//! Each load runs in its own child process, which prints its own peak RSS (`VmHWM`) and the bytes its
//! device buffers hold. On the CPU plugin "device" memory is host memory, so peak RSS includes the whole
//! loaded model; peak RSS minus the device-buffer bytes is the host staging overhead, which is what
//! sharded loading bounds.
//!
//! `cargo bench --bench load_sharded`

#[path = "../tests/convert_synthetic/mod.rs"]
mod convert_synthetic;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use maxtext::checkpoint::params::ModelCheckpoint;
use maxtext::config::Config;
use maxtext::ir::DType;
use maxtext::pjrt::{open_client, Buffer, Hardware};
use maxtext::runtime::{device_bytes, shard_host, upload_sharded, LocalPartitions, RunError, ShardSpec};

const CHILD_ENV: &str = "LOAD_SHARDED_BENCH_CHILD";

fn config() -> Config {
    convert_synthetic::scaled_config(
        1024,
        12,
        64,
        512,
        32768,
        &["weight_dtype=bfloat16", "cpu_device_count=8", "ici_fsdp_parallelism=-1", "scan_layers=true"],
    )
}

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
    kb / 1e3
}

/// Loads the checkpoint onto the 8 devices (`sharded` or the old `whole` path) and prints one RESULT line.
fn child(mode: &str, items: &Path) {
    let cfg = config();
    let decls = maxtext::program::param_decls(&cfg);
    let ctx = maxtext::sharding::sharding_context(&cfg).unwrap();
    let shardings = maxtext::program::param_shardings(&decls, &ctx);
    let mesh = ctx.mesh;
    let client = open_client(Hardware::Cpu, None, Some(8)).unwrap();
    let devices = client.addressable_devices();
    let start_mb = vm_hwm_mb();
    let t = Instant::now();
    let ckpt = ModelCheckpoint::open(items).unwrap();
    let mut held: Vec<Buffer> = Vec::new();
    match mode {
        "sharded" => {
            let sources = ckpt.plan(&decls, &cfg.model).unwrap();
            for (i, d) in decls.iter().enumerate() {
                let spec = ShardSpec { dtype: d.dtype, dims: &d.dims, sharding: Some(&shardings[i]), mesh: Some(&mesh) };
                let bufs = upload_sharded(&client, devices, &LocalPartitions::all(devices.len()), spec, |o, b| -> Result<Vec<u8>, RunError> {
                    Ok(ckpt.read_param_region(d, &sources[i], o, b).expect("read box"))
                })
                .unwrap();
                held.extend(bufs);
            }
        }
        _ => {
            // What `Runtime::upload_arg` does with a restored parameter: whole on the host, split, uploaded.
            ckpt.restore_params_each(&decls, &cfg.model, |i, t| -> Result<(), maxtext::checkpoint::params::RestoreError> {
                for (p, (bytes, dims)) in shard_host(&t, Some(&shardings[i]), Some(&mesh), devices.len()).into_iter().enumerate() {
                    held.push(client.buffer_from_bytes(&bytes, t.dtype, &dims, &devices[p]).unwrap());
                }
                Ok(())
            })
            .unwrap();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let dev_mb = device_bytes(&held).unwrap() as f64 / 1e6;
    let peak = vm_hwm_mb();
    println!("RESULT {mode} peak_rss_mb={peak:.0} device_mb={dev_mb:.0} start_rss_mb={start_mb:.0} secs={secs:.1} buffers={}", held.len());
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).unwrap().parse().unwrap()
}

fn ensure_checkpoint(dir: &Path) -> PathBuf {
    let items = dir.join("orbax/0/items");
    if items.join("_METADATA").is_file() {
        println!("cached checkpoint: {}", items.display());
        return items;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let hf = dir.join("hf");
    let t = Instant::now();
    let total = convert_synthetic::write_synthetic_hf(&hf, &config(), DType::BF16, 512 << 20, 1);
    println!("synthetic HF checkpoint: {:.2} GB bf16 in {:.1} s", total as f64 / 1e9, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .args(["convert", "configs/base.yml"])
        .arg(format!("hf_model_path={}", hf.display()))
        .arg(format!("base_output_directory={}", dir.join("orbax").display()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "convert failed: {}", String::from_utf8_lossy(&out.stderr));
    println!("converted to Orbax in {:.1} s", t.elapsed().as_secs_f64());
    std::fs::remove_dir_all(&hf).unwrap();
    items
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        let items = std::env::args().find(|a| a.ends_with("items")).expect("the item dir");
        child(&mode, Path::new(&items));
        return;
    }
    let dir = std::env::var("LOAD_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/load_sharded_bench"));
    let items = ensure_checkpoint(&dir);
    let decls = maxtext::program::param_decls(&config());
    let model_mb = decls.iter().map(|d| d.num_elements() as f64 * d.dtype.size_bytes() as f64).sum::<f64>() / 1e6;
    let largest = decls.iter().map(|d| d.num_elements() as f64 * d.dtype.size_bytes() as f64).fold(0.0, f64::max) / 1e6;
    let budget = model_mb / 4.0 + 300.0;
    println!("checkpoint {model_mb:.0} MB of bf16 parameters (largest {largest:.0} MB); loading onto 8 CPU devices, fsdp=8");
    println!("acceptance: peak host RSS of the sharded load under a quarter of the checkpoint + 300 MB = {budget:.0} MB");
    let mut results = Vec::new();
    for mode in ["sharded", "whole"] {
        let out = Command::new(std::env::current_exe().unwrap()).arg(&items).env(CHILD_ENV, mode).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{mode} load failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let line = stdout.lines().find(|l| l.starts_with("RESULT")).unwrap().to_string();
        let (peak, dev, start, secs) = (field(&line, "peak_rss_mb"), field(&line, "device_mb"), field(&line, "start_rss_mb"), field(&line, "secs"));
        println!(
            "{mode:>7}: peak RSS {peak:.0} MB, device buffers {dev:.0} MB, peak RSS - device buffers {:.0} MB (host staging; process baseline before loading {start:.0} MB), {secs:.1} s",
            peak - dev
        );
        results.push((peak, dev));
    }
    let (s, w) = (results[0], results[1]);
    println!(
        "sharded / whole: peak RSS {:.2}, staging (peak - device) {:.0} MB vs {:.0} MB ({:.2}); sharded staging {} the {budget:.0} MB budget; \
         full peak RSS {:.0} MB {} it (on the CPU plugin the loaded model itself lives in host memory)",
        s.0 / w.0,
        s.0 - s.1,
        w.0 - w.1,
        (s.0 - s.1) / (w.0 - w.1),
        if s.0 - s.1 < budget { "is under" } else { "EXCEEDS" },
        s.0,
        if s.0 < budget { "is under" } else { "exceeds" },
    );
}
