//! Multi-process runs: what `jax.distributed.initialize` gives MaxText. Process 0 runs a coordinator (a
//! key-value store over HTTP, [`kv`]); every process, process 0 included, joins through it, and the group
//! then offers barriers, an all-gather of small host-side values, and raw key-value access.
//!
//! Joining registers the process under `process/<index>` (written once, so two processes started with the
//! same process_id are told so) with its hostname, pid and process count, and waits until all `count`
//! processes registered (the barrier "join"). Barrier `name` writes `barrier/<name>/<index>` and waits for
//! every process's key; all_gather does the same under `gather/<name>/` with values. Keys are written
//! once, which is why barrier names must be unique per use (include the step), and why a process that
//! repeats one is told at once instead of passing a barrier the others have not reached.
//!
//! Leaving: dropping a joined group is a last barrier "shutdown", after which each other process tells
//! process 0 it is done (`shutdown_done/<index>`) and process 0 stops the server only when all have — so
//! the coordinator never goes away under a process that still waits on it. Raw keys should stay clear
//! of the prefixes above.

mod kv;

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use kv::{KvClient, KvServer, Put};

/// How long the barrier "shutdown" of a dropped group waits for the other processes.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long process 0 waits for the others to confirm they passed the barrier "shutdown".
const DONE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long process 0 keeps serving after its own join failed, so that the others can read the records
/// and fail with the same diagnosis instead of "unreachable".
const FAILED_JOIN_GRACE: Duration = Duration::from_secs(1);

/// What can go wrong coordinating processes. Every message says what to check or change.
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    #[error("the number of processes must be at least 1 (got 0): set num_processes to how many processes run this job")]
    BadCount,

    #[error("process_id {index} is out of range for {count} processes: give each process its own id from 0 to {}", count.saturating_sub(1))]
    BadIndex { index: usize, count: usize },

    #[error("coordinator address {address:?} is not usable: {reason}")]
    BadAddress { address: String, reason: String },

    #[error("process 0 cannot run the coordinator on port {port} ({source}): is a previous run still holding the port? stop it or choose another coordinator port")]
    Bind { port: u16, source: std::io::Error },

    #[error("cannot reach the coordinator at {address} after {}: is process 0 running with the same coordinator_address (and is the port open between the hosts)?", secs(*waited))]
    Unreachable { address: String, waited: Duration },

    #[error("process_id {index} is already taken by {holder}: give every process its own process_id from 0 to num_processes - 1 (or stop the leftover process)")]
    IndexTaken { index: usize, holder: String },

    #[error("process {index} was started for {count} processes but process {other} for {other_count}: start every process with the same num_processes")]
    CountMismatch { index: usize, count: usize, other: usize, other_count: usize },

    #[error("processes {missing:?} did not reach barrier '{name}' within {}: check that every process runs the same command with its own process_id", secs(*waited))]
    Timeout { name: String, missing: Vec<usize>, waited: Duration },

    #[error("key '{key}' already exists in the coordinator's store: keys are written once, so barrier and all_gather names must be unique per use (include e.g. the step number)")]
    KeyExists { key: String },

    #[error("key '{key}' did not appear in the coordinator's store within {}: is the process that writes it running (and using the same key)?", secs(*waited))]
    KeyMissing { key: String, waited: Duration },

    #[error("key {key:?} is not usable: {reason}")]
    BadKey { key: String, reason: String },

    #[error("the coordinator at {address} answered unexpectedly: {detail}")]
    Protocol { address: String, detail: String },
}

/// A duration as a user reads it in a message: "30 s", "2.5 s".
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 || d.as_secs() >= 10 {
        format!("{:.0} s", d.as_secs_f64())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// What a process writes under `process/<index>` when it joins.
#[derive(serde::Serialize, serde::Deserialize)]
struct Registration {
    host: String,
    pid: u32,
    count: usize,
    /// Tells apart two registrations from the same host and pid (threads of one test, or a restart).
    token: u64,
}

impl Registration {
    fn describe(bytes: &[u8]) -> String {
        match serde_json::from_slice::<Registration>(bytes) {
            Ok(r) => format!("{} (pid {})", r.host, r.pid),
            Err(_) => "a process this program does not recognise".into(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A single process's store, so that code written for a group runs unchanged alone.
#[derive(Default)]
struct LocalStore {
    values: Mutex<HashMap<String, Vec<u8>>>,
    changed: Condvar,
}

enum Backend {
    Local(LocalStore),
    Remote(KvClient),
}

/// This process's place in a group of processes, and the coordinator they share. `Send + Sync`; create
/// and drop it outside any async runtime (its HTTP client is a blocking one).
pub struct ProcessGroup {
    index: usize,
    count: usize,
    backend: Backend,
    /// `join`'s timeout: how long `put` keeps trying to reach the coordinator.
    timeout: Duration,
    /// Process 0's coordinator; dropped (stopped) after the barrier "shutdown".
    server: Option<KvServer>,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let coordinator = match &self.backend {
            Backend::Local(_) => None,
            Backend::Remote(c) => Some(c.address()),
        };
        f.debug_struct("ProcessGroup").field("index", &self.index).field("count", &self.count).field("coordinator", &coordinator).finish()
    }
}

impl ProcessGroup {
    /// One process, no coordinator: index 0 of 1. barrier/all_gather are no-ops / return just this
    /// process's value; put/get use an in-process store.
    pub fn single() -> ProcessGroup {
        ProcessGroup { index: 0, count: 1, backend: Backend::Local(LocalStore::default()), timeout: Duration::ZERO, server: None }
    }

    /// Joins a group of `count` processes as process `index`, through the coordinator at `address`
    /// ("host:port"). Process 0 starts the coordinator on that port on all interfaces. Every process then
    /// connects (retrying until `timeout`: the coordinator may start later), registers, and waits until all
    /// `count` processes have registered with the same `count`.
    pub fn join(address: &str, count: usize, index: usize, timeout: Duration) -> Result<ProcessGroup, DistributedError> {
        if count == 0 {
            return Err(DistributedError::BadCount);
        }
        if index >= count {
            return Err(DistributedError::BadIndex { index, count });
        }
        let port = parse_address(address)?;
        let start = Instant::now();
        let client = KvClient::new(address)?;
        let server = if index == 0 { Some(start_coordinator(&client, port)?) } else { None };
        match register(&client, count, index, timeout, start) {
            Ok(()) => {
                tracing::info!("process {index} of {count} joined the group (coordinator {address})");
                Ok(ProcessGroup { index, count, backend: Backend::Remote(client), timeout, server })
            }
            Err(e) => {
                if server.is_some() {
                    std::thread::sleep(FAILED_JOIN_GRACE);
                }
                Err(e)
            }
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn is_primary(&self) -> bool {
        self.index == 0
    }

    /// All processes reach barrier `name` (unique per use: include e.g. the step number) before any
    /// returns. `Timeout` lists the processes that did not arrive; the name stays spent (this process's
    /// arrival is recorded), so a retry needs a new name.
    pub fn barrier(&self, name: &str, timeout: Duration) -> Result<(), DistributedError> {
        match &self.backend {
            Backend::Local(_) => Ok(()),
            Backend::Remote(c) => gather(c, &format!("barrier/{name}"), name, self.index, self.count, b"", timeout).map(drop),
        }
    }

    /// Every process contributes `value` under `name`; returns all processes' values in index order. A
    /// barrier too.
    pub fn all_gather(&self, name: &str, value: &[u8], timeout: Duration) -> Result<Vec<Vec<u8>>, DistributedError> {
        match &self.backend {
            Backend::Local(_) => Ok(vec![value.to_vec()]),
            Backend::Remote(c) => gather(c, &format!("gather/{name}"), name, self.index, self.count, value, timeout),
        }
    }

    /// Stores `value` under `key`; `KeyExists` if the key has a value already (from any process).
    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), DistributedError> {
        match &self.backend {
            Backend::Local(store) => {
                let mut values = store.values.lock().unwrap_or_else(|p| p.into_inner());
                if values.contains_key(key) {
                    return Err(DistributedError::KeyExists { key: key.into() });
                }
                values.insert(key.into(), value.to_vec());
                store.changed.notify_all();
                Ok(())
            }
            Backend::Remote(c) => match c.put(key, value, self.timeout)? {
                Put::Created => Ok(()),
                Put::Exists(_) => Err(DistributedError::KeyExists { key: key.into() }),
            },
        }
    }

    /// The value under `key`, waiting up to `timeout` for some process to put it (`KeyMissing` after).
    pub fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, DistributedError> {
        let found = match &self.backend {
            Backend::Local(store) => {
                let values = store.values.lock().unwrap_or_else(|p| p.into_inner());
                let (values, _) =
                    store.changed.wait_timeout_while(values, timeout, |v| !v.contains_key(key)).unwrap_or_else(|p| p.into_inner());
                values.get(key).cloned()
            }
            Backend::Remote(c) => c.get(key, timeout)?,
        };
        found.ok_or_else(|| DistributedError::KeyMissing { key: key.into(), waited: timeout })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.leave();
        // Process 0's coordinator stops only now, when every process that got this far is done with it.
        drop(self.server.take());
    }
}

impl ProcessGroup {
    /// The barrier "shutdown", then the others' "done" to process 0. Failures are only logged: leaving
    /// must not turn a finished run into an error.
    fn leave(&self) {
        let Backend::Remote(client) = &self.backend else { return };
        if std::thread::panicking() {
            // Waiting up to a minute for processes that may be waiting on this one would only hide the panic.
            tracing::warn!("process {} leaves the group while panicking, without the barrier 'shutdown'", self.index);
            return;
        }
        if let Err(e) = gather(client, "shutdown", "shutdown", self.index, self.count, b"", SHUTDOWN_TIMEOUT) {
            tracing::warn!("process {} leaving the group: {e}", self.index);
            return;
        }
        if self.index != 0 {
            if let Err(e) = client.put(&format!("shutdown_done/{}", self.index), b"", DONE_TIMEOUT) {
                tracing::warn!("process {} could not tell process 0 it is done: {e}", self.index);
            }
            return;
        }
        let start = Instant::now();
        for other in 1..self.count {
            match client.get(&format!("shutdown_done/{other}"), DONE_TIMEOUT.saturating_sub(start.elapsed())) {
                Ok(Some(_)) => {}
                Ok(None) => tracing::warn!("process {other} did not confirm it left the group; stopping the coordinator anyway"),
                Err(e) => tracing::warn!("waiting for process {other} to leave the group: {e}"),
            }
        }
    }
}

/// The port of "host:port" (IPv6 hosts in brackets), checked before any network use.
fn parse_address(address: &str) -> Result<u16, DistributedError> {
    let bad = |reason: &str| DistributedError::BadAddress { address: address.into(), reason: reason.into() };
    if address.contains("://") {
        return Err(bad("give host:port without a scheme, e.g. 10.130.0.2:8476"));
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("expected host:port, e.g. 10.130.0.2:8476"))?;
    if host.is_empty() || host.contains(['/', ' ', '?', '#', '@']) {
        return Err(bad("expected host:port, e.g. 10.130.0.2:8476"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("write an IPv6 host in brackets, e.g. [fd00::2]:8476"));
    }
    let port: u16 = port.parse().map_err(|_| bad("the port is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(bad("port 0 would be a random port the other processes cannot know; choose a fixed port"));
    }
    Ok(port)
}

/// Starts process 0's server. When the port is taken by a coordinator that already has a process 0, the
/// error is `IndexTaken` naming it (two processes started as process 0 on one host), not a bare bind error.
fn start_coordinator(client: &KvClient, port: u16) -> Result<KvServer, DistributedError> {
    match KvServer::start(port) {
        Ok(server) => Ok(server),
        Err(source) => {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                if let Ok(Some(holder)) = client.get("process/0", Duration::ZERO) {
                    return Err(DistributedError::IndexTaken { index: 0, holder: Registration::describe(&holder) });
                }
            }
            Err(DistributedError::Bind { port, source })
        }
    }
}

/// Registers this process and waits (barrier "join") until all `count` have, with the same count.
fn register(client: &KvClient, count: usize, index: usize, timeout: Duration, start: Instant) -> Result<(), DistributedError> {
    let left = || timeout.saturating_sub(start.elapsed());
    let me = Registration { host: hostname(), pid: std::process::id(), count, token: rand::random() };
    let record = serde_json::to_vec(&me).expect("a registration serialises");
    if let Put::Exists(holder) = client.put(&format!("process/{index}"), &record, left())? {
        return Err(DistributedError::IndexTaken { index, holder: Registration::describe(&holder) });
    }
    for other in 0..count {
        let key = format!("process/{other}");
        let Some(bytes) = client.get(&key, left())? else {
            return Err(timeout_error(client, "process", "join", other, count, timeout));
        };
        let theirs: Registration = serde_json::from_slice(&bytes).map_err(|e| DistributedError::Protocol {
            address: client.address().into(),
            detail: format!("the record of process {other} is not a registration ({e}); is another program using this coordinator?"),
        })?;
        if theirs.count != count {
            return Err(DistributedError::CountMismatch { index, count, other, other_count: theirs.count });
        }
    }
    Ok(())
}

/// Writes `value` under `<prefix>/<index>` and collects every process's value in index order.
fn gather(
    client: &KvClient,
    prefix: &str,
    name: &str,
    index: usize,
    count: usize,
    value: &[u8],
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, DistributedError> {
    let start = Instant::now();
    let mine = format!("{prefix}/{index}");
    if let Put::Exists(_) = client.put(&mine, value, timeout)? {
        return Err(DistributedError::KeyExists { key: mine });
    }
    let mut values = Vec::with_capacity(count);
    for other in 0..count {
        if other == index {
            values.push(value.to_vec());
            continue;
        }
        match client.get(&format!("{prefix}/{other}"), timeout.saturating_sub(start.elapsed()))? {
            Some(v) => values.push(v),
            None => return Err(timeout_error(client, prefix, name, other, count, timeout)),
        }
    }
    Ok(values)
}

/// The `Timeout` for a barrier whose wait ran out on process `first`: it and every later process whose
/// key is still missing (earlier ones were all seen).
fn timeout_error(client: &KvClient, prefix: &str, name: &str, first: usize, count: usize, waited: Duration) -> DistributedError {
    let mut missing = vec![first];
    for other in first + 1..count {
        if !matches!(client.get(&format!("{prefix}/{other}"), Duration::ZERO), Ok(Some(_))) {
            missing.push(other);
        }
    }
    DistributedError::Timeout { name: name.into(), missing, waited }
}
