//! The persistent compile cache (`jax_cache_dir`): serialized executables on disk, so that a second run
//! of the same command loads its programs instead of compiling them — what JAX's persistent compilation
//! cache does for MaxText.
//!
//! One file per executable, named by the sha256 of everything that decides the compiled code: the module
//! text, the encoded compile options (devices, partitioning, `compile_xla_flags`), the plugin (path,
//! platform name and version), the client's devices (count and kinds) and `XLA_FLAGS`. Local files are
//! written to a temporary name and renamed, so a crash never leaves a partial entry under a real name; in
//! a bucket (`jax_cache_dir=gs://...`) an entry is one object uploaded in one request, which GCS makes
//! visible only whole. An entry that fails to load is reported, removed and recompiled. Like JAX (`jax_persistent_cache_min_compile_time_secs`, default 1 s, read from
//! the `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` environment variable as JAX reads it), only
//! compilations that took at least that long are stored.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::CacheKey;
use crate::pjrt::{Client, LoadedExecutable};
use crate::storage::Location;

/// JAX's default `jax_persistent_cache_min_compile_time_secs`.
const DEFAULT_MIN_COMPILE_SECS: f64 = 1.0;

/// A directory of serialized executables (local or `gs://`).
#[derive(Clone, Debug)]
pub struct DiskCache {
    dir: Location,
    min_compile_time: Duration,
}

impl DiskCache {
    /// The cache in `dir` (created on the first store).
    pub fn new(dir: &Location) -> DiskCache {
        let secs = std::env::var("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(DEFAULT_MIN_COMPILE_SECS);
        DiskCache { dir: dir.clone(), min_compile_time: Duration::from_secs_f64(secs) }
    }

    pub fn dir(&self) -> &Location {
        &self.dir
    }

    /// The entry's file: `<dir>/maxtext-rs-<sha256>.pjrt`.
    fn path(&self, client: &Client, key: &CacheKey) -> Location {
        let mut h = Sha256::new();
        h.update(b"maxtext-rs persistent compile cache v1\0");
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(key.module_sha256);
        h.update((key.options.len() as u64).to_le_bytes());
        h.update(&key.options);
        let plugin = client.plugin();
        for part in [plugin.path().to_string_lossy().as_bytes(), client.platform_name().as_bytes(), client.platform_version().as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update((client.addressable_devices().len() as u64).to_le_bytes());
        // The device kinds (one GPU model's code does not suit another) and XLA_FLAGS, which XLA reads at
        // compile time from the environment.
        for d in client.addressable_devices() {
            h.update(d.kind().as_bytes());
            h.update([0]);
        }
        h.update(std::env::var("XLA_FLAGS").unwrap_or_default().as_bytes());
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("maxtext-rs-{hex}.pjrt"))
    }

    /// The stored executable for `key`, if there is one that loads.
    pub fn load(&self, client: &Client, key: &CacheKey) -> Option<LoadedExecutable> {
        let path = self.path(client, key);
        let bytes = match path.read_if_exists() {
            Ok(b) => b?,
            Err(e) => {
                eprintln!("jax_cache_dir: cannot read {path} ({e}); compiling again");
                return None;
            }
        };
        match client.deserialize_executable(&bytes) {
            Ok(exe) => Some(exe),
            Err(e) => {
                eprintln!("jax_cache_dir: dropping unreadable entry {path} ({e}); compiling again");
                let _ = path.remove_all();
                None
            }
        }
    }

    /// Stores `exe` if its compilation took at least the minimum; failures only warn (the run goes on).
    pub fn store(&self, client: &Client, key: &CacheKey, exe: &LoadedExecutable, compile_time: Duration) {
        if compile_time < self.min_compile_time {
            return;
        }
        let path = self.path(client, key);
        let result = (|| -> std::io::Result<()> {
            let bytes = exe.serialize().map_err(std::io::Error::other)?;
            match &path {
                Location::Local(p) => {
                    std::fs::create_dir_all(p.parent().expect("an entry lies in the cache directory"))?;
                    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
                    std::fs::write(&tmp, &bytes)?;
                    std::fs::rename(&tmp, p)
                }
                // GCS makes an object visible only once its upload has completed: it appears whole or not at all.
                Location::Gcs { .. } => Ok(path.write(&bytes)?),
            }
        })();
        if let Err(e) = result {
            eprintln!("jax_cache_dir: could not store a compiled program in {} ({e}); the run goes on", self.dir);
        }
    }
}
