//! The coordinator's key-value store over HTTP/1.1: the server process 0 runs (axum, on its own thread and
//! tokio runtime) and the blocking client every process uses (reqwest).
//!
//! The protocol is two routes, so that a stuck run can be inspected with `curl`:
//! - `PUT /kv/<key>` stores the body under the key once: 201 Created, or 409 Conflict with the existing value
//!   as the body (a key is written once; the holder's value names who got there first).
//! - `GET /kv/<key>?wait_ms=N` answers 200 with the value as soon as the key exists, or 404 after N ms. The
//!   long poll is what makes barriers cheap: a waiting process costs one idle connection, not a polling loop.
//!
//! Values stay in memory until process 0 exits (barrier and gather keys are small and few per step).
//! The client never gives up on a dropped or refused connection before its caller's deadline: the
//! coordinator may start after the other processes, and a slow start must not look like a failure.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::sync::{oneshot, watch, Notify};

use super::{secs, DistributedError};

/// The longest one GET waits on the server. Longer waits are several requests, so that a connection a
/// middlebox drops silently costs at most one slice.
const POLL_SLICE: Duration = Duration::from_secs(5);
/// What the server allows a single GET to wait, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// A request's own time limit beyond the wait it asks for (the answer still has to travel).
const REQUEST_SLACK: Duration = Duration::from_secs(5);
/// The pause between attempts while the coordinator cannot be reached.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a stopping server lets open connections finish before it closes them.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The largest value one PUT may carry (all_gather values are host-side metadata, not tensors).
const MAX_VALUE: usize = 256 << 20;

/// The store: values, a wake-up for waiting GETs on every PUT, and whether the server is stopping.
#[derive(Default)]
struct Store {
    values: Mutex<HashMap<String, Bytes>>,
    changed: Notify,
    closing: AtomicBool,
}

impl Store {
    fn lookup(&self, key: &str) -> Option<Bytes> {
        self.values.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }
}

type Shared = Arc<Store>;

fn router(store: Shared) -> Router {
    Router::new()
        .route("/kv/{*key}", get(get_key).put(put_key))
        .fallback(|| async { (StatusCode::NOT_FOUND, "the coordinator serves GET and PUT /kv/<key>\n") })
        .layer(DefaultBodyLimit::max(MAX_VALUE))
        .with_state(store)
}

async fn put_key(State(store): State<Shared>, Path(key): Path<String>, body: Bytes) -> Response {
    {
        let mut values = store.values.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = values.get(&key) {
            return (StatusCode::CONFLICT, existing.clone()).into_response();
        }
        values.insert(key, body);
    }
    store.changed.notify_waiters();
    StatusCode::CREATED.into_response()
}

#[derive(serde::Deserialize)]
struct Wait {
    wait_ms: Option<u64>,
}

async fn get_key(State(store): State<Shared>, Path(key): Path<String>, Query(wait): Query<Wait>) -> Response {
    let wait = Duration::from_millis(wait.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before the lookup, so a PUT between the lookup and the wait still wakes this one.
        let notified = store.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(value) = store.lookup(&key) {
            return (StatusCode::OK, value).into_response();
        }
        if store.closing.load(Ordering::SeqCst) {
            return (StatusCode::SERVICE_UNAVAILABLE, "the coordinator is shutting down\n").into_response();
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => return StatusCode::NOT_FOUND.into_response(),
        }
    }
}

/// The coordinator's server, running until this is dropped. Dropping it answers the GETs still waiting
/// with 503, lets requests in flight finish (up to a few seconds), and joins the server's thread.
pub(super) struct KvServer {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl KvServer {
    /// Binds `0.0.0.0:port` here, so that a port in use is an error of `join` and not of a thread.
    pub(super) fn start(port: u16) -> std::io::Result<KvServer> {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
        listener.set_nonblocking(true)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new().name("coordinator".into()).spawn(move || rt.block_on(serve(listener, stopped)))?;
        tracing::info!("coordinator listening on 0.0.0.0:{port}");
        Ok(KvServer { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for KvServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("the coordinator's server thread panicked");
            }
        }
    }
}

async fn serve(listener: TcpListener, stopped: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the coordinator cannot serve its socket: {e}");
            return;
        }
    };
    // Small requests and answers: Nagle plus delayed ACKs would add tens of milliseconds to every barrier.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let store = Shared::default();
    let (closed_tx, mut closed_rx) = watch::channel(false);
    let signal = {
        let store = store.clone();
        async move {
            // A dropped sender (the owner went away without `Drop`) stops the server too.
            let _ = stopped.await;
            store.closing.store(true, Ordering::SeqCst);
            store.changed.notify_waiters();
            let _ = closed_tx.send(true);
        }
    };
    let server = axum::serve(listener, router(store)).with_graceful_shutdown(signal).into_future();
    let grace = async move {
        let _ = closed_rx.wait_for(|closed| *closed).await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        r = server => if let Err(e) = r {
            tracing::warn!("the coordinator's server stopped: {e}");
        },
        _ = grace => tracing::warn!("the coordinator closed connections still open {} after it was told to stop", secs(STOP_GRACE)),
    }
}

/// What a PUT found.
pub(super) enum Put {
    Created,
    /// The key was there already; the value is the one stored.
    Exists(Vec<u8>),
}

/// One attempt's outcome.
enum Attempt<T> {
    Done(T),
    /// The server answered "not there yet" (a long-poll slice ended): ask again at once.
    Again,
    /// The server was not reached or is stopping (the reason): ask again after a pause.
    Failed(String),
}

/// The blocking client of one coordinator. Like any reqwest blocking client, it must not be created or
/// dropped inside an async runtime.
pub(super) struct KvClient {
    http: reqwest::blocking::Client,
    /// `http://host:port/kv/`.
    base: String,
    address: String,
}

impl KvClient {
    pub(super) fn new(address: &str) -> Result<KvClient, DistributedError> {
        let base = format!("http://{address}/kv/");
        reqwest::Url::parse(&base).map_err(|e| DistributedError::BadAddress { address: address.into(), reason: e.to_string() })?;
        let http = reqwest::blocking::Client::builder()
            // The coordinator is on the cluster's own network: an HTTP_PROXY meant for the internet must not apply.
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .timeout(None)
            .build()
            .map_err(|e| DistributedError::Protocol { address: address.into(), detail: format!("cannot set up an HTTP client: {e}") })?;
        Ok(KvClient { http, base, address: address.into() })
    }

    pub(super) fn address(&self) -> &str {
        &self.address
    }

    /// Stores `value` under `key` unless the key exists. Unreachable only after `timeout` of failed tries.
    pub(super) fn put(&self, key: &str, value: &[u8], timeout: Duration) -> Result<Put, DistributedError> {
        let url = format!("{}{}", self.base, encode_key(key)?);
        // After a failed attempt the PUT may have landed and only its answer got lost: finding our own
        // value then is success, not a conflict.
        let mut maybe_landed = false;
        self.retrying(timeout, |left| {
            let per_request = left.clamp(Duration::from_secs(1), MAX_WAIT);
            let answer = match self.http.put(&url).body(value.to_vec()).timeout(per_request).send() {
                Ok(r) => r,
                Err(e) => {
                    maybe_landed = true;
                    return Ok(Attempt::Failed(e.to_string()));
                }
            };
            match answer.status() {
                StatusCode::CREATED => Ok(Attempt::Done(Put::Created)),
                StatusCode::CONFLICT => match answer.bytes() {
                    Ok(existing) if maybe_landed && existing.as_ref() == value => Ok(Attempt::Done(Put::Created)),
                    Ok(existing) => Ok(Attempt::Done(Put::Exists(existing.to_vec()))),
                    Err(e) => Ok(Attempt::Failed(e.to_string())),
                },
                StatusCode::SERVICE_UNAVAILABLE => Ok(Attempt::Failed("the coordinator is shutting down".into())),
                s => Err(self.unexpected("PUT", key, s, answer)),
            }
        })?
        .ok_or_else(|| DistributedError::Protocol { address: self.address.clone(), detail: format!("PUT of key '{key}' got no answer") })
    }

    /// The value under `key`, waiting up to `timeout` for it to appear (None if it did not). A zero
    /// timeout asks once.
    pub(super) fn get(&self, key: &str, timeout: Duration) -> Result<Option<Vec<u8>>, DistributedError> {
        let url = format!("{}{}", self.base, encode_key(key)?);
        self.retrying(timeout, |left| {
            let wait = left.min(POLL_SLICE);
            let answer = match self.http.get(format!("{url}?wait_ms={}", wait.as_millis())).timeout(wait + REQUEST_SLACK).send() {
                Ok(r) => r,
                Err(e) => return Ok(Attempt::Failed(e.to_string())),
            };
            match answer.status() {
                StatusCode::OK => match answer.bytes() {
                    Ok(value) => Ok(Attempt::Done(value.to_vec())),
                    Err(e) => Ok(Attempt::Failed(e.to_string())),
                },
                StatusCode::NOT_FOUND => Ok(Attempt::Again),
                StatusCode::SERVICE_UNAVAILABLE => Ok(Attempt::Failed("the coordinator is shutting down".into())),
                s => Err(self.unexpected("GET", key, s, answer)),
            }
        })
    }

    /// Runs `attempt` (given the time left) until it is done or `timeout` has passed; always at least
    /// once. When time runs out the last attempt decides: the server answered "not there" is `Ok(None)`,
    /// the server not reached is `Unreachable`.
    fn retrying<T>(
        &self,
        timeout: Duration,
        mut attempt: impl FnMut(Duration) -> Result<Attempt<T>, DistributedError>,
    ) -> Result<Option<T>, DistributedError> {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let failure = match attempt(left)? {
                Attempt::Done(v) => return Ok(Some(v)),
                Attempt::Again => None,
                Attempt::Failed(reason) => Some(reason),
            };
            let left = timeout.saturating_sub(start.elapsed());
            match failure {
                None if left.is_zero() => return Ok(None),
                None => {}
                Some(reason) if left.is_zero() => {
                    tracing::debug!("the coordinator at {} is unreachable: {reason}", self.address);
                    return Err(DistributedError::Unreachable { address: self.address.clone(), waited: start.elapsed() });
                }
                Some(_) => std::thread::sleep(RETRY_PAUSE.min(left)),
            }
        }
    }

    fn unexpected(&self, method: &str, key: &str, status: StatusCode, answer: reqwest::blocking::Response) -> DistributedError {
        let body = answer.text().unwrap_or_default();
        DistributedError::Protocol {
            address: self.address.clone(),
            detail: format!(
                "{method} of key '{key}' answered {status}: {}; is something other than process 0's coordinator listening there?",
                body.trim()
            ),
        }
    }
}

/// The key as a URL path: segments kept, everything outside RFC 3986's unreserved set percent-encoded.
/// Empty, `.` and `..` segments are refused (URL normalisation would rewrite them into another key).
fn encode_key(key: &str) -> Result<String, DistributedError> {
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(DistributedError::BadKey {
            key: key.into(),
            reason: "keys are '/'-separated names with no empty, '.' or '..' part".into(),
        });
    }
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}
