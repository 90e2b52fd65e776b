//! A fault-injecting HTTP proxy in front of the real GCS emulator: a TCP server on 127.0.0.1 that forwards
//! each request to an [`Emulator`] unless its [`Fault`] says to answer 403 / 503 / 429 itself or to drop the
//! connection without answering. It counts requests and injected faults so tests can assert that retries
//! really happened (a test that "passes" because the client never retried would prove nothing).
//!
//! Point `STORAGE_EMULATOR_HOST` at [`FaultProxy::host`] to put it between the storage layer and the
//! emulator. The emulator's resumable-upload session URLs (`Location` headers) are rewritten to the proxy,
//! so the upload's chunk requests pass through it too.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

use super::gcs::Emulator;

/// Which requests a [`FaultProxy`] answers itself, and how.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Forward everything (a plain pass-through, for comparison).
    None,
    /// 403 with Google's JSON error body to every request, as GCS does when the account lacks permission.
    Deny,
    /// HTTP `status` (503 or 429) with a GCS-style JSON body to the first `first` requests, then forward.
    Status { status: u16, first: usize },
    /// HTTP `status` to the requests numbered in `at` (0-based), forward the rest: faults in mid-upload.
    StatusAt { status: u16, at: Vec<usize> },
    /// Read the request, then close the connection without answering, for the first `first` requests
    /// (`usize::MAX`: all of them), then forward.
    Drop { first: usize },
    /// Drop the requests numbered in `at` (0-based), forward the rest.
    DropAt { at: Vec<usize> },
    /// Forward the first `after` requests, then drop every later one: a server that dies mid-upload.
    DieAfter { after: usize },
    /// Forward every request after holding it `ms` milliseconds: a slow link, so that a save takes long
    /// enough to be killed in the middle.
    Slow { ms: u64 },
}

struct State {
    fault: Fault,
    upstream: String,
    /// `127.0.0.1:EMUPORT` in the emulator's `Location` headers becomes `127.0.0.1:PROXYPORT`.
    upstream_host: String,
    proxy_host: String,
    client: reqwest::Client,
    requests: AtomicUsize,
    faults: AtomicUsize,
    log: Mutex<Vec<String>>,
}

/// The proxy: listening from `start` until dropped.
pub struct FaultProxy {
    state: Arc<State>,
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    pub fn start(upstream: &Emulator, fault: Fault) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            fault,
            upstream: upstream.endpoint(),
            upstream_host: format!("127.0.0.1:{}", upstream.port),
            proxy_host: format!("127.0.0.1:{port}"),
            // No redirect following: GCS's 308 "resume incomplete" answers must reach the client as they are.
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            requests: AtomicUsize::new(0),
            faults: AtomicUsize::new(0),
            log: Mutex::new(vec![]),
        });
        // Its own runtime: the code under test is synchronous and blocks its callers' threads.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gcs-fault-proxy")
            .enable_all()
            .build()
            .unwrap();
        let st = state.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(st.clone(), stream));
            }
        });
        FaultProxy { state, port, runtime: Some(runtime) }
    }

    /// `127.0.0.1:PORT`, the value for `STORAGE_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests received so far (answered, faulted or dropped).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests the proxy answered itself with an error or dropped.
    pub fn faults(&self) -> usize {
        self.state.faults.load(Ordering::SeqCst)
    }

    /// One line per request: `METHOD /path?query -> outcome`, for assertion messages.
    pub fn log(&self) -> String {
        self.state.log.lock().unwrap().join("\n")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Stops the listener and every connection task at once (the server "dies").
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Serves one client connection; a handler that decides to drop it fires `kill`, and the connection
/// (and its socket) is dropped without a response being written.
async fn serve_connection(state: Arc<State>, stream: tokio::net::TcpStream) {
    let kill = Arc::new(tokio::sync::Notify::new());
    let k = kill.clone();
    let svc = hyper::service::service_fn(move |req| handle(state.clone(), k.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {}
    }
}

enum Action {
    Forward,
    Answer(u16),
    Hangup,
}

async fn handle(state: Arc<State>, kill: Arc<tokio::sync::Notify>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    // The whole request is read before any fault: the client sees a server that took the request and then
    // failed, not a refused write.
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let action = match &state.fault {
        Fault::None => Action::Forward,
        Fault::Deny => Action::Answer(403),
        Fault::Status { status, first } if n < *first => Action::Answer(*status),
        Fault::StatusAt { status, at } if at.contains(&n) => Action::Answer(*status),
        Fault::Drop { first } if n < *first => Action::Hangup,
        Fault::DropAt { at } if at.contains(&n) => Action::Hangup,
        Fault::DieAfter { after } if n >= *after => Action::Hangup,
        Fault::Slow { ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
            Action::Forward
        }
        _ => Action::Forward,
    };
    if let Some(auth) = parts.headers.get("authorization") {
        state.log.lock().unwrap().push(format!("authorization: {}", String::from_utf8_lossy(auth.as_bytes())));
    }
    let line = |outcome: String| format!("{} {target} ({} bytes) -> {outcome}", parts.method, body.len());
    match action {
        Action::Hangup => {
            state.faults.fetch_add(1, Ordering::SeqCst);
            state.log.lock().unwrap().push(line("dropped".into()));
            kill.notify_one();
            // Never answers: the connection task drops the socket first.
            std::future::pending::<()>().await;
            unreachable!()
        }
        Action::Answer(status) => {
            state.faults.fetch_add(1, Ordering::SeqCst);
            state.log.lock().unwrap().push(line(status.to_string()));
            Ok(gcs_error(status, parts.method.as_str(), &target))
        }
        Action::Forward => {
            let resp = forward(&state, &parts, &target, body.clone()).await;
            state.log.lock().unwrap().push(line(format!("{} (forwarded)", resp.status().as_u16())));
            Ok(resp)
        }
    }
}

async fn forward(state: &State, parts: &hyper::http::request::Parts, target: &str, body: Bytes) -> Response<Full<Bytes>> {
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let mut req = state.client.request(method, format!("{}{target}", state.upstream)).body(body);
    for (name, value) in &parts.headers {
        // Host names the proxy; the client recomputes Content-Length; the rest goes through unchanged.
        if !matches!(name.as_str(), "host" | "content-length" | "transfer-encoding" | "connection") {
            req = req.header(name.as_str(), value.as_bytes());
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return text_response(502, format!("fault proxy: emulator unreachable: {e}")),
    };
    let mut out = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        match name.as_str() {
            "content-length" | "transfer-encoding" | "connection" => {}
            // The resumable-upload session URL: keep the upload's later requests on the proxy.
            "location" => {
                let v = String::from_utf8_lossy(value.as_bytes()).replace(&state.upstream_host, &state.proxy_host);
                out = out.header("location", v);
            }
            _ => out = out.header(name.as_str(), value.as_bytes()),
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    out.body(Full::new(bytes)).unwrap()
}

fn text_response(status: u16, text: String) -> Response<Full<Bytes>> {
    Response::builder().status(status).body(Full::new(Bytes::from(text))).unwrap()
}

/// The error bodies GCS itself sends (JSON API), so the client parses them as it would in production.
fn gcs_error(status: u16, method: &str, target: &str) -> Response<Full<Bytes>> {
    let (reason, message) = match status {
        403 => (
            "forbidden",
            format!(
                "maxtext-test@example.iam.gserviceaccount.com does not have storage.objects.{} access to the Google Cloud Storage object. Permission denied on resource (or it may not exist).",
                if method == "GET" { "get" } else { "create" }
            ),
        ),
        429 => ("rateLimitExceeded", "The object exceeded the rate limit for object mutation operations (create, update, and delete). Please reduce your request rate.".into()),
        503 => ("backendError", "We encountered an internal error. Please try again.".into()),
        _ => ("unknown", format!("fault proxy error for {target}")),
    };
    let body = serde_json::json!({
        "error": { "code": status, "message": message, "errors": [{ "message": message, "domain": "global", "reason": reason }] }
    });
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A GCE / TPU VM metadata server on loopback that hands out one access token (what
/// `GCE_METADATA_HOST` points Google's libraries, and ours, at): the credentials a TPU VM's workers use.
pub struct MetadataServer {
    pub port: u16,
    pub token: String,
    requests: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl MetadataServer {
    pub fn start(token: &str) -> MetadataServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (count, body) = (requests.clone(), serde_json::json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}).to_string());
        let app = axum::Router::new().route(
            "/computeMetadata/v1/instance/service-accounts/{account}/token",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let (count, body) = (count.clone(), body.clone());
                async move {
                    // As the real server: only requests that say `Metadata-Flavor: Google` get a token.
                    if headers.get("metadata-flavor").is_none_or(|v| v != "Google") {
                        return (axum::http::StatusCode::FORBIDDEN, String::new());
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    (axum::http::StatusCode::OK, body)
                }
            }),
        );
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        MetadataServer { port, token: token.into(), requests, runtime: Some(runtime) }
    }

    /// Tokens handed out so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
