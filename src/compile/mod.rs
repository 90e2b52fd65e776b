//! Executable cache: PJRT plugins do not cache compilations, and compiling costs 0.1-0.5 s even for
//! small modules, so executables are reused by (module hash, encoded compile options, client) — in
//! memory, and across runs through [`DiskCache`] when `jax_cache_dir` is set.

mod disk;

pub use disk::DiskCache;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::pjrt::{Client, CompileOptions, LoadedExecutable, Result};

/// What identifies a compiled executable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// sha256 of the MLIR text.
    pub module_sha256: [u8; 32],
    /// The serialized `CompileOptionsProto`.
    pub options: Vec<u8>,
    /// [`Client::id`].
    pub client_id: u64,
}

impl CacheKey {
    pub fn new(client: &Client, mlir: &str, options: &CompileOptions) -> Result<CacheKey> {
        Ok(CacheKey {
            module_sha256: Sha256::digest(mlir.as_bytes()).into(),
            options: options.encode()?,
            client_id: client.id(),
        })
    }

    /// The first 12 hex digits of the module hash (for logs).
    pub fn short_hash(&self) -> String {
        self.module_sha256[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A thread-safe cache of loaded executables with hit/miss counters.
#[derive(Default)]
pub struct ExecutableCache {
    map: Mutex<HashMap<CacheKey, Arc<LoadedExecutable>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    disk: Option<DiskCache>,
    disk_hits: AtomicU64,
}

impl ExecutableCache {
    pub fn new() -> ExecutableCache {
        ExecutableCache::default()
    }

    /// A cache that also keeps executables in `disk` across runs.
    pub fn with_disk(disk: Option<DiskCache>) -> ExecutableCache {
        ExecutableCache { disk, ..ExecutableCache::default() }
    }

    /// The executable for (`mlir`, `options`) on `client`, compiling it on a miss. Concurrent misses on
    /// the same key may compile twice; the first result inserted wins.
    pub fn get_or_compile(&self, client: &Client, mlir: &str, options: &CompileOptions) -> Result<Arc<LoadedExecutable>> {
        let key = CacheKey::new(client, mlir, options)?;
        if let Some(exe) = self.lock().get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(module = %key.short_hash(), "executable cache hit");
            return Ok(exe.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        if let Some(exe) = self.disk.as_ref().and_then(|d| d.load(client, &key)) {
            self.disk_hits.fetch_add(1, Ordering::Relaxed);
            tracing::info!(module = %key.short_hash(), "loaded from the persistent compile cache");
            return Ok(self.lock().entry(key).or_insert(Arc::new(exe)).clone());
        }
        let exe = {
            let span = tracing::info_span!(
                "compile",
                module = %key.short_hash(),
                mlir_bytes = mlir.len(),
                partitions = options.num_partitions,
                replicas = options.num_replicas
            );
            let _entered = span.enter();
            let start = Instant::now();
            let exe = client.compile_mlir(mlir, options)?;
            let took = start.elapsed();
            tracing::info!(ms = took.as_secs_f64() * 1e3, "compiled");
            if let Some(d) = &self.disk {
                d.store(client, &key, &exe, took);
            }
            Arc::new(exe)
        };
        Ok(self.lock().entry(key).or_insert(exe).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Arc<LoadedExecutable>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Programs compiled by this process (misses not served by the persistent cache).
    pub fn compiled(&self) -> u64 {
        self.misses() - self.disk_hits()
    }

    /// Programs loaded from the persistent cache.
    pub fn disk_hits(&self) -> u64 {
        self.disk_hits.load(Ordering::Relaxed)
    }

    /// `compiled 3 programs, loaded 0 from jax_cache_dir /x` — what the commands print at the end.
    pub fn summary(&self) -> String {
        match &self.disk {
            Some(d) => format!("compiled {} programs, loaded {} from jax_cache_dir {}", self.compiled(), self.disk_hits(), d.dir()),
            None => format!("compiled {} programs (jax_cache_dir is off)", self.compiled()),
        }
    }

    /// Number of cached executables.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every cached executable (those still in use elsewhere stay alive until released).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

impl std::fmt::Debug for ExecutableCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutableCache")
            .field("entries", &self.len())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .field("disk_hits", &self.disk_hits())
            .finish()
    }
}
