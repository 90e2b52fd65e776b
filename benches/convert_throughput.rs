//! `maxtext convert` throughput and memory on a synthetic HF checkpoint of at least 2 GB.
//!
//! The tiny fixture's architecture scaled up (`base_emb_dim=1024`, 12 layers, 64 experts of 512, vocab
//! 32768: ~2.6 GB of bf16 in 64 expert-sized tensors per layer and projection), random bf16 weights written
//! with `hf::write_safetensors` into 512 MB shards in a temp dir; then `maxtext convert` runs on it as a child
//! process (default `weight_dtype=bfloat16`, `scan_layers=true`). Printed: MB/s (wall clock of the child,
//! and the child's own figure), the child's peak RSS (its `VmHWM`, polled from /proc and reported by the
//! child itself) next to the size of the largest stacked tensor, and the total.
//!
//! `cargo bench --bench convert_throughput`; `CONVERT_BENCH_DIR=DIR` puts the temp dir elsewhere (it needs
//! ~5.5 GB), `CONVERT_BENCH_SCALE=N` multiplies the layer count (N * 12 layers).

#[path = "../tests/convert_synthetic/mod.rs"]
mod convert_synthetic;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use maxtext::ir::DType;

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

fn main() {
    let scale: usize = std::env::var("CONVERT_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let parent = std::env::var("CONVERT_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let tmp = tempfile::tempdir_in(&parent).expect("temp dir");
    let layers = 12 * scale;
    let cfg = convert_synthetic::scaled_config(1024, layers, 64, 512, 32768, &[]);
    let hf = tmp.path().join("hf");
    let t0 = Instant::now();
    let total = convert_synthetic::write_synthetic_hf(&hf, &cfg, DType::BF16, 512 << 20, 1);
    let shards = std::fs::read_dir(&hf).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "safetensors")).count();
    println!(
        "synthetic HF checkpoint: {:.2} GB of bf16 in {shards} shards ({layers} layers, emb 1024, 64 experts x 512, vocab 32768), written in {:.1} s",
        total as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );
    assert!(total >= 2_000_000_000, "the synthetic checkpoint must be at least 2 GB, it is {total} bytes");

    let decls = maxtext::program::param_decls(&convert_synthetic::scaled_config(1024, layers, 64, 512, 32768, &["weight_dtype=bfloat16"]));
    let bytes = |d: &maxtext::nn::ParamDecl| d.num_elements() as u64 * d.dtype.size_bytes() as u64;
    let largest = decls.iter().max_by_key(|d| bytes(d)).unwrap();
    let out = tmp.path().join("out");

    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_maxtext"))
        .args(["convert", "configs/base.yml"])
        .arg(format!("hf_model_path={}", hf.display()))
        .arg(format!("base_output_directory={}", out.display()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn maxtext convert");
    let pid = child.id();
    let mut peak_kb = 0;
    let status = loop {
        if let Some(kb) = vm_hwm_kb(pid) {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = t.elapsed().as_secs_f64();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "convert failed:\n{stdout}{stderr}");
    let self_peak_mb = stdout.split("peak RSS ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse::<f64>().ok());
    let peak_mb = (peak_kb as f64 / 1e3).max(self_peak_mb.unwrap_or(0.0));
    let written: u64 = walk_size(&out);

    println!("convert output: {}", stdout.trim());
    println!(
        "convert throughput: {:.1} MB/s ({:.2} GB in {:.1} s wall, child process start to exit; {:.2} GB on disk after zstd)",
        total as f64 / 1e6 / secs,
        total as f64 / 1e9,
        secs,
        written as f64 / 1e9
    );
    println!(
        "peak RSS {:.0} MB vs largest stacked tensor {} {:?} bf16 = {:.0} MB (ratio {:.2}); model {:.0} MB",
        peak_mb,
        largest.path,
        largest.dims,
        bytes(largest) as f64 / 1e6,
        peak_mb / (bytes(largest) as f64 / 1e6),
        total as f64 / 1e6
    );
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        total += if p.is_dir() { walk_size(&p) } else { p.metadata().map(|m| m.len()).unwrap_or(0) };
    }
    total
}
