//! Storage-layer throughput on gs:// (the real GCS emulator, fake-gcs-server, on loopback) against a local
//! temp dir, measured in the same run: a checkpoint-shaped write of several large data files through
//! `Location::create()` (streamed resumable uploads), read back through `Location::open()` (read-ahead) and
//! through one `read_range` per file (a large ranged read, as a restore of a whole array does).
//!
//! Printed: one JSON line per operation and backend, one JSON line per operation with the gs:// / local
//! ratio, and a human summary. The bytes read back are compared with those written (a fast but wrong path
//! would not count). Local reads come from the page cache, so "local" is an upper bound, not a disk figure;
//! the emulator stores objects in files under a temp dir and runs on the same cores as this process.
//!
//! Then the same bytes as an Orbax checkpoint (one f32 leaf per file, OCDBT + zarr3 as `maxtext train`
//! saves it, zstd included) written with `write_checkpoint` and restored leaf by leaf with
//! `OrbaxCheckpoint::read`: what a user's save and restore of a ~1 GB checkpoint cost.
//!
//! `cargo bench --bench gcs_throughput`; sizes: `GCS_BENCH_FILES` (default 4) files of `GCS_BENCH_FILE_MB`
//! (default 256) MiB, so ~1 GB; `GCS_BENCH_FILES=2 GCS_BENCH_FILE_MB=32` for a quick run.

#[path = "../tests/common/gcs.rs"]
#[allow(dead_code)]
mod gcs;

use std::io::{Read, Write};
use std::time::Instant;

use maxtext::checkpoint::orbax::{write_checkpoint, OrbaxCheckpoint};
use maxtext::runtime::HostTensor;
use maxtext::storage::Location;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Cheap, position-dependent bytes (every 8-byte word differs), so misplaced blocks are caught.
fn file_bytes(index: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ index as u64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

struct Figure {
    op: &'static str,
    bytes: u64,
    secs: f64,
}

impl Figure {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
}

/// Runs `f` over every file of `root`, timed as one operation.
fn timed(op: &'static str, backend: &'static str, bytes: u64, f: impl FnOnce()) -> Figure {
    let t = Instant::now();
    f();
    let fig = Figure { op, bytes, secs: t.elapsed().as_secs_f64() };
    println!(
        "{}",
        serde_json::json!({"bench": "gcs_throughput", "op": op, "backend": backend, "bytes": bytes, "secs": fig.secs, "mb_s": fig.mb_s()})
    );
    fig
}

fn run(backend: &'static str, root: &Location, files: &[Vec<u8>]) -> Vec<Figure> {
    let total: u64 = files.iter().map(|f| f.len() as u64).sum();
    let name = |i: usize| root.join(format!("ckpt/0/items/d/{i:08x}"));
    let mut figs = vec![];
    figs.push(timed("upload", backend, total, || {
        for (i, data) in files.iter().enumerate() {
            let mut w = name(i).create().unwrap();
            // 4 MiB writes: the size a chunk encoder hands over, smaller than an upload part.
            for c in data.chunks(4 << 20) {
                w.write_all(c).unwrap();
            }
            w.finish().unwrap();
        }
    }));
    figs.push(timed("upload_concurrent", backend, total, || {
        // Every file at once, one thread each, as a checkpoint writer with several arrays in flight does.
        std::thread::scope(|s| {
            for (i, data) in files.iter().enumerate() {
                let loc = root.join(format!("ckpt/1/items/d/{i:08x}"));
                s.spawn(move || {
                    let mut w = loc.create().unwrap();
                    for c in data.chunks(4 << 20) {
                        w.write_all(c).unwrap();
                    }
                    w.finish().unwrap();
                });
            }
        });
    }));
    figs.push(timed("download_open", backend, total, || {
        for (i, data) in files.iter().enumerate() {
            let mut r = name(i).open().unwrap();
            let mut got = Vec::with_capacity(data.len());
            // 1 MiB reads, as a decoder pulling from a reader does.
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == *data, "{} read back through open() differs", name(i));
        }
    }));
    figs.push(timed("download_read_range", backend, total, || {
        for (i, data) in files.iter().enumerate() {
            let got = name(i).read_range(0, data.len() as u64).unwrap();
            assert!(got == *data, "{} read back through read_range differs", name(i));
        }
    }));
    // The files as f32 leaves of a checkpoint: saved and restored through the Orbax writer and reader.
    let leaves: Vec<(String, HostTensor)> = files
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let vals: Vec<f32> = data.chunks_exact(4).map(|c| f32::from(u16::from_le_bytes([c[0], c[1]])) * 1e-3).collect();
            (format!("params.layer_{i}.kernel"), HostTensor::from_f32(&vals, &[vals.len() as i64]))
        })
        .collect();
    figs.push(timed("checkpoint_save", backend, total, || {
        write_checkpoint(root.join("orbax"), 7, &leaves, serde_json::json!({})).unwrap();
    }));
    figs.push(timed("checkpoint_restore", backend, total, || {
        let ck = OrbaxCheckpoint::open_step(root.join("orbax"), 7).unwrap();
        for (name, want) in &leaves {
            assert!(ck.read(name).unwrap() == *want, "{name} restored from {root} differs");
        }
    }));
    figs
}

fn main() {
    let n_files = env_usize("GCS_BENCH_FILES", 4);
    let file_mb = env_usize("GCS_BENCH_FILE_MB", 256);
    let files: Vec<Vec<u8>> = (0..n_files).map(|i| file_bytes(i, file_mb << 20)).collect();
    let total_mb = (n_files * file_mb) as f64 * 1.048576;
    println!("gcs_throughput: {n_files} files of {file_mb} MiB ({total_mb:.0} MB), gs:// on fake-gcs-server vs a local temp dir");

    let local_dir = tempfile::tempdir().unwrap();
    let local = run("local", &Location::Local(local_dir.path().into()), &files);
    drop(local_dir);

    let emu = gcs::shared_emulator();
    emu.create_bucket("bench");
    let remote = run("gcs", &Location::parse("gs://bench/run").unwrap(), &files);
    // What the emulator holds is what was written (checked once, outside the code under test).
    let stored = emu.objects("bench", "run/ckpt/0/items/d");
    assert_eq!(stored.len(), n_files);
    assert!(stored.iter().zip(&files).all(|((_, got), want)| got == want), "the emulator holds other bytes");

    let mut human = vec![];
    for (l, r) in local.iter().zip(&remote) {
        let ratio = r.mb_s() / l.mb_s();
        println!(
            "{}",
            serde_json::json!({"bench": "gcs_throughput", "op": l.op, "gcs_mb_s": r.mb_s(), "local_mb_s": l.mb_s(), "gcs_over_local": ratio})
        );
        human.push(format!("{} {:.0} MB/s ({:.2}x local {:.0})", l.op, r.mb_s(), ratio, l.mb_s()));
    }
    println!("gs:// (emulator): {}", human.join("; "));
}
