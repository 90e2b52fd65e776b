//! Google Cloud Storage through `opendal`'s GCS service (the JSON API: media/resumable uploads, ranged
//! downloads, object listings), one operator per bucket.
//!
//! Credentials follow Google's client libraries: `STORAGE_EMULATOR_HOST` (an emulator such as
//! fake-gcs-server: no credentials, that endpoint), else `GOOGLE_APPLICATION_CREDENTIALS` (a service-account
//! key or an authorized-user file), else gcloud's application-default credentials file, else the GCE / TPU
//! VM metadata server (`GCE_METADATA_HOST` moves it, as for Google's libraries); `MAXTEXT_GCS_ENDPOINT`
//! names another endpoint used with those credentials. Requests that fail with 429, 5xx or a dropped connection are retried with
//! exponential backoff (`MAXTEXT_GCS_RETRIES` times, default 6).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use opendal::{blocking, layers, options, services, ErrorKind, Operator};

use super::{Entry, Result, StorageError};

/// The runtime the blocking operators run their requests on (the program's own code is synchronous).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("gcs-io")
        .enable_all()
        .build()
        .expect("cannot start the I/O runtime for gs:// paths")
});

static OPERATORS: LazyLock<Mutex<HashMap<String, blocking::Operator>>> = LazyLock::new(Default::default);

/// The endpoint from `STORAGE_EMULATOR_HOST` (`host:port` or a URL), as Google's libraries read it.
pub fn emulator_endpoint() -> Option<String> {
    let host = std::env::var("STORAGE_EMULATOR_HOST").ok().filter(|h| !h.trim().is_empty())?;
    let host = host.trim().trim_end_matches('/');
    Some(if host.contains("://") { host.to_string() } else { format!("http://{host}") })
}

/// `MAXTEXT_GCS_ENDPOINT`: another GCS JSON API endpoint (a private one), used with the usual credentials.
fn custom_endpoint() -> Option<String> {
    let e = std::env::var("MAXTEXT_GCS_ENDPOINT").ok().filter(|e| !e.trim().is_empty())?;
    Some(e.trim().trim_end_matches('/').to_string())
}

fn retries() -> usize {
    std::env::var("MAXTEXT_GCS_RETRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(6)
}

fn operator(bucket: &str) -> Result<blocking::Operator> {
    let mut ops = OPERATORS.lock().unwrap_or_else(|p| p.into_inner());
    // Keyed by the endpoint too: a process (a test) may point STORAGE_EMULATOR_HOST at another server.
    let cache_key = format!("{}|{}|{bucket}", emulator_endpoint().unwrap_or_default(), custom_endpoint().unwrap_or_default());
    if let Some(op) = ops.get(&cache_key) {
        return Ok(op.clone());
    }
    let setup = |e: opendal::Error| StorageError::Setup { bucket: bucket.into(), detail: e.to_string() };
    opendal::install_default();
    let mut builder = services::Gcs::default().bucket(bucket);
    if let Some(endpoint) = emulator_endpoint() {
        // An emulator takes no credentials (Google's libraries use anonymous ones there too).
        builder = builder.endpoint(&endpoint).skip_signature().disable_vm_metadata().disable_config_load();
    } else {
        if let Some(endpoint) = custom_endpoint() {
            builder = builder.endpoint(&endpoint);
        }
        if let Ok(path) = std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
            if !std::path::Path::new(&path).is_file() {
                return Err(StorageError::Setup {
                    bucket: bucket.into(),
                    detail: format!("GOOGLE_APPLICATION_CREDENTIALS names {path}, which is not a file; point it at a service-account key or unset it"),
                });
            }
            builder = builder.credential_path(&path);
        }
    }
    let _guard = RUNTIME.enter();
    let op = Operator::new(builder)
        .map_err(setup)?
        .layer(
            layers::RetryLayer::new()
                .with_max_times(retries())
                .with_jitter()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(10)),
        )
        .layer(layers::TimeoutLayer::new().with_timeout(Duration::from_secs(120)).with_io_timeout(Duration::from_secs(60)));
    let op = blocking::Operator::new(op).map_err(setup)?;
    ops.insert(cache_key, op.clone());
    Ok(op)
}

/// Runs a blocking storage call. Inside another tokio runtime (the HTTP server's) blocking on ours
/// would panic, so the call moves to a plain thread there.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(f).join().expect("storage call panicked"))
    } else {
        f()
    }
}

fn url(bucket: &str, key: &str) -> String {
    if key.is_empty() {
        format!("gs://{bucket}")
    } else {
        format!("gs://{bucket}/{key}")
    }
}

fn dir_key(key: &str) -> String {
    if key.is_empty() {
        "/".into()
    } else {
        format!("{key}/")
    }
}

/// Turns an opendal error into ours; `op` is the verb for the message.
fn map_err(bucket: &str, key: &str, op: &'static str, e: opendal::Error) -> StorageError {
    let loc = url(bucket, key);
    let text = e.to_string();
    match e.kind() {
        ErrorKind::NotFound if text.contains("bucket does not exist") || text.contains("bucket not found") => {
            StorageError::NoBucket { bucket: bucket.into() }
        }
        ErrorKind::NotFound => StorageError::NotFound { loc },
        ErrorKind::PermissionDenied => StorageError::Denied { loc, detail: describe(&e) },
        _ if was_retried(&e) => {
            // No HTTP answer at all: the endpoint itself is the likely culprit, so name it.
            let hint = match http_status(&text) {
                Some(_) => String::new(),
                None => format!("; is {} reachable?", emulator_endpoint().unwrap_or_else(|| "https://storage.googleapis.com".into())),
            };
            let detail = format!("{} (gave up after {} retries{hint})", describe(&e), retries());
            StorageError::Remote { op, loc, detail }
        }
        _ => StorageError::Remote { op, loc, detail: describe(&e) },
    }
}

/// Whether the RetryLayer retried this error before giving up. Its status cannot tell (the layer marks
/// every error it passes on "persistent", retried or not), so this asks what opendal retries: a 429, a
/// 5xx answer, or a request that got no HTTP answer at all (connection refused or dropped, timeout).
fn was_retried(e: &opendal::Error) -> bool {
    let text = e.to_string();
    e.is_temporary()
        || e.kind() == ErrorKind::RateLimited
        || http_status(&text).is_some_and(|s| (500..600).contains(&s))
        || (http_status(&text).is_none() && std::error::Error::source(e).is_some())
}

/// The HTTP status of the answer behind an error, from the response opendal records in its context.
fn http_status(text: &str) -> Option<u16> {
    let at = text.find("response: Parts { status: ")? + "response: Parts { status: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// One readable line for users: `HTTP 403 from GetObject: <Google's message>` for an error answer, or
/// opendal's message and its causes (`send http request: error sending request: connection closed before
/// message completed`) for a transport failure, instead of opendal's full context dump (headers, dates).
fn describe(e: &opendal::Error) -> String {
    let text = e.to_string();
    let line = match http_status(&text) {
        Some(status) => {
            let operation = context_value(&text, "service_operation: ").map(|o| format!(" from {o}")).unwrap_or_default();
            // GCS's JSON error as opendal prints it (Debug): the first `message: "..."` is Google's reason.
            let msg = quoted_after(e.message(), "message: \"").unwrap_or_else(|| e.message().to_string());
            format!("HTTP {status}{operation}: {msg}")
        }
        None => {
            let mut parts = vec![e.message().to_string()];
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                let s = c.to_string();
                if !parts.iter().any(|p| p.contains(&s)) {
                    parts.push(s);
                }
                cause = c.source();
            }
            parts.join(": ")
        }
    };
    one_line(&line)
}

fn context_value(text: &str, key: &str) -> Option<String> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    Some(rest[..rest.find([',', ' ', '}']).unwrap_or(rest.len())].to_string())
}

/// The Debug-escaped string that starts right after `start` in `s`, unescaped.
fn quoted_after(s: &str, start: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s[s.find(start)? + start.len()..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(match chars.next()? {
                'n' => ' ',
                c => c,
            }),
            c => out.push(c),
        }
    }
    None
}

/// Whitespace (newlines included) collapsed to single spaces, cut at 400 characters.
fn one_line(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(400) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

/// Whether the bucket itself is missing (its root cannot be listed): what a `NotFound` for an object
/// or a prefix means then.
fn bucket_missing(bucket: &str) -> bool {
    matches!(list_page(bucket, "", 1), Err(StorageError::NotFound { .. }) | Err(StorageError::NoBucket { .. }))
}

/// A `NotFound` for an object is a missing bucket when the bucket itself cannot be listed.
fn not_found_or_no_bucket(bucket: &str, key: &str, e: StorageError) -> StorageError {
    match e {
        StorageError::NotFound { .. } if bucket_missing(bucket) => StorageError::NoBucket { bucket: bucket.into() },
        StorageError::NotFound { .. } => StorageError::NotFound { loc: url(bucket, key) },
        other => other,
    }
}

/// Ranged GETs in flight for one large read, and the bytes each fetches.
const PARALLEL_READS: usize = 4;
const PARALLEL_READ_CHUNK: u64 = 16 << 20;

pub fn read(bucket: &str, key: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
    off_runtime(|| {
        let op = operator(bucket)?;
        let got = match &range {
            // A large range (a whole array's chunk file on restore) is fetched as several ranged GETs in
            // flight: one stream is bound by one connection's round trips and one server thread. (opendal's
            // own `concurrent`/`chunk` read options still sent one GET here.)
            Some(r) if r.end - r.start > PARALLEL_READ_CHUNK => read_parallel(&op, key, r.clone()),
            _ => {
                let opts = options::ReadOptions { range: range.clone().map_or_else(Default::default, Into::into), ..Default::default() };
                op.read_options(key, opts).map(|b| b.to_vec())
            }
        };
        got.map_err(|e| {
            if e.to_string().contains("got too little data") {
                let detail = format!("the object is shorter than the byte range {range:?} asked for (truncated?)");
                return StorageError::Remote { op: "read", loc: url(bucket, key), detail };
            }
            not_found_or_no_bucket(bucket, key, map_err(bucket, key, "read", e))
        })
    })
}

/// `range` in [`PARALLEL_READ_CHUNK`] pieces, [`PARALLEL_READS`] at a time, each into its place in one
/// buffer. A piece that comes back short ends the result there (the caller reports the truncation).
fn read_parallel(op: &blocking::Operator, key: &str, range: Range<u64>) -> opendal::Result<Vec<u8>> {
    let total = (range.end - range.start) as usize;
    let mut out = vec![0u8; total];
    let slots: Vec<Mutex<&mut [u8]>> = out.chunks_mut(PARALLEL_READ_CHUNK as usize).map(Mutex::new).collect();
    let got: Vec<Mutex<usize>> = slots.iter().map(|_| Mutex::new(0)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || -> opendal::Result<()> {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(slot) = slots.get(i) else { return Ok(()) };
            let mut slot = slot.lock().unwrap();
            let start = range.start + i as u64 * PARALLEL_READ_CHUNK;
            let opts = options::ReadOptions { range: (start..start + slot.len() as u64).into(), ..Default::default() };
            let bytes = op.read_options(key, opts)?;
            let n = bytes.len().min(slot.len());
            slot[..n].copy_from_slice(&bytes.to_bytes()[..n]);
            *got[i].lock().unwrap() = n;
        }
    };
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..PARALLEL_READS.min(slots.len())).map(|_| s.spawn(&work)).collect();
        threads.into_iter().map(|t| t.join().expect("ranged read thread panicked")).collect::<opendal::Result<Vec<()>>>()
    })?;
    let full = PARALLEL_READ_CHUNK as usize;
    let len = match got.iter().map(|g| *g.lock().unwrap()).enumerate().find(|&(i, n)| n < slots[i].lock().unwrap().len()) {
        Some((i, n)) => i * full + n,
        None => total,
    };
    drop(slots);
    out.truncate(len);
    Ok(out)
}

pub fn size(bucket: &str, key: &str) -> Result<Option<u64>> {
    if key.is_empty() {
        return Ok(None);
    }
    off_runtime(|| {
        let op = operator(bucket)?;
        match op.stat(key) {
            Ok(m) if m.is_file() => Ok(Some(m.content_length())),
            Ok(_) => Ok(None),
            Err(e) => match not_found_or_no_bucket(bucket, key, map_err(bucket, key, "look up", e)) {
                StorageError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    })
}

fn list_page(bucket: &str, key: &str, limit: usize) -> Result<Vec<opendal::Entry>> {
    let op = operator(bucket)?;
    let opts = options::ListOptions { limit: Some(limit), ..Default::default() };
    op.list_options(&dir_key(key), opts).map_err(|e| map_err(bucket, key, "list", e))
}

pub fn has_children(bucket: &str, key: &str) -> Result<bool> {
    off_runtime(|| {
        let prefix = dir_key(key);
        Ok(list_page(bucket, key, 2)?.iter().any(|e| e.path() != prefix && e.path() != "/"))
    })
}

fn listing(bucket: &str, key: &str, recursive: bool) -> Result<Vec<opendal::Entry>> {
    let op = operator(bucket)?;
    let opts = options::ListOptions { recursive, ..Default::default() };
    match op.list_options(&dir_key(key), opts) {
        Ok(v) => Ok(v),
        Err(e) => match map_err(bucket, key, "list", e) {
            // A missing "directory" is an empty listing; a missing bucket is an error.
            StorageError::NotFound { .. } if bucket_missing(bucket) => Err(StorageError::NoBucket { bucket: bucket.into() }),
            StorageError::NotFound { .. } => Ok(vec![]),
            other => Err(other),
        },
    }
}

pub fn list(bucket: &str, key: &str) -> Result<Vec<Entry>> {
    off_runtime(|| {
        let prefix = dir_key(key);
        let prefix = if key.is_empty() { "" } else { prefix.as_str() };
        Ok(listing(bucket, key, false)?
            .into_iter()
            .filter_map(|e| {
                let rel = e.path().strip_prefix(prefix)?;
                let (name, is_dir) = match rel.strip_suffix('/') {
                    Some(d) => (d, true),
                    None => (rel, false),
                };
                (!name.is_empty() && !name.contains('/')).then(|| Entry { name: name.into(), is_dir })
            })
            .collect())
    })
}

pub fn walk(bucket: &str, key: &str) -> Result<Vec<(String, u64)>> {
    off_runtime(|| {
        let prefix = dir_key(key);
        let prefix = if key.is_empty() { "" } else { prefix.as_str() };
        Ok(listing(bucket, key, true)?
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .filter_map(|e| Some((e.path().strip_prefix(prefix)?.to_string(), e.metadata().content_length())))
            .collect())
    })
}

pub fn write(bucket: &str, key: &str, bytes: Vec<u8>) -> Result<()> {
    off_runtime(|| {
        let op = operator(bucket)?;
        op.write(key, bytes).map(|_| ()).map_err(|e| match map_err(bucket, key, "write", e) {
            StorageError::NotFound { .. } => StorageError::NoBucket { bucket: bucket.into() },
            other => other,
        })
    })
}

pub fn remove_all(bucket: &str, key: &str) -> Result<()> {
    off_runtime(|| {
        let op = operator(bucket)?;
        let mut names: Vec<String> = listing(bucket, key, true)?
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| e.path().to_string())
            .collect();
        if size(bucket, key)?.is_some() {
            names.push(key.to_string());
        }
        for name in names {
            match op.delete(&name) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(map_err(bucket, &name, "delete", e)),
                _ => {}
            }
        }
        Ok(())
    })
}

/// A resumable upload of one new object (GCS refuses it if the object already exists).
pub struct Upload {
    bucket: String,
    key: String,
    writer: Option<blocking::Writer>,
}

impl Upload {
    pub fn start(bucket: &str, key: &str) -> Result<Upload> {
        let op = operator(bucket)?;
        // `if_not_exists` selects opendal's resumable upload (chunks retried individually); plain writes of
        // large objects would take GCS's XML multipart API, which emulators lack.
        let opts = options::WriteOptions { if_not_exists: true, chunk: Some(super::stream::UPLOAD_PART), ..Default::default() };
        let writer = off_runtime(|| op.writer_options(key, opts)).map_err(|e| map_err(bucket, key, "start uploading", e))?;
        Ok(Upload { bucket: bucket.into(), key: key.into(), writer: Some(writer) })
    }

    fn err(&self, op: &'static str, e: opendal::Error) -> StorageError {
        match map_err(&self.bucket, &self.key, op, e) {
            StorageError::NotFound { .. } => StorageError::NoBucket { bucket: self.bucket.clone() },
            other => other,
        }
    }

    pub fn write(&mut self, bytes: Vec<u8>) -> Result<()> {
        let r = self.writer.as_mut().expect("upload in progress").write(bytes);
        r.map_err(|e| self.err("upload", e))
    }

    pub fn finish(mut self) -> Result<()> {
        let mut w = self.writer.take().expect("upload in progress");
        w.close().map(|_| ()).map_err(|e| self.err("finish uploading", e))
    }

    /// Abandons the upload; the object never appears.
    pub fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            drop(w);
        }
    }
}
