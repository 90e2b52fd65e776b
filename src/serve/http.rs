//! The HTTP side of `maxtext serve` (axum on tokio): OpenAI's `/v1/completions`, `/v1/chat/completions`
//! (both streaming with SSE), `/v1/models`, `/health`, and the vLLM-style tokenizer routes lm-eval detects
//! (`/tokenizer_info`, `/tokenize`, `/detokenize`). A bad request is a 400 with the reason, a full queue a
//! 503; handlers never panic on input. Connections use TCP_NODELAY (lm-eval keeps connections alive and
//! pays ~45 ms per request to Nagle + delayed ACK otherwise).

use super::api::{self, bad, BadRequest, ChatRequest, CompletionRequest, DetokenizeRequest, Prompt, TokenizeRequest};
use super::chat::ChatTemplate;
use super::engine::{Engine, EngineError, SeqEvent, SeqRequest};
use super::output::{chat_logprobs, completion_logprobs, SeqOutput};
use crate::data::Tokenizer;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What the handlers share.
pub struct ServeState {
    pub engine: Engine,
    pub tok: Tokenizer,
    pub chat: Option<ChatTemplate>,
    /// The name `/v1/models` reports (requests may name any model: there is one).
    pub model: String,
    /// Default `max_tokens` of completions (OpenAI's 16).
    pub default_max_tokens: usize,
}

type Shared = Arc<ServeState>;

/// An error response in OpenAI's shape.
fn error(status: StatusCode, msg: &str) -> Response {
    let kind = if status == StatusCode::SERVICE_UNAVAILABLE { "server_busy" } else if status.is_client_error() { "invalid_request_error" } else { "server_error" };
    (status, Json(json!({"error": {"message": msg, "type": kind, "code": status.as_u16()}}))).into_response()
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, &self.0)
    }
}

fn engine_error(e: EngineError) -> Response {
    match e {
        EngineError::QueueFull { .. } => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/", get(health))
        .route("/tokenizer_info", get(tokenizer_info))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route (see /v1/models, /v1/completions, /v1/chat/completions)") })
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(state)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{:x}{:06x}", now(), NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn models(State(s): State<Shared>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": s.model, "object": "model", "created": 0, "owned_by": "maxtext", "max_model_len": s.engine.info.max_len}]}))
}

async fn tokenizer_info(State(s): State<Shared>) -> Json<Value> {
    Json(json!({
        "eos_token": s.tok.eos_token(),
        "bos_token": s.tok.bos_token(),
        "pad_token": s.tok.id_to_token(s.tok.token_to_id("<|endoftext|>").unwrap_or(-1)),
        "chat_template": s.chat.as_ref().map(|c| c.source.clone()),
        "model_max_length": s.engine.info.max_len,
        "vocab_size": s.tok.vocab_size(),
    }))
}

async fn tokenize(State(s): State<Shared>, body: Bytes) -> Response {
    let r: TokenizeRequest = match api::parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match s.tok.encode(&r.prompt, r.add_special_tokens.unwrap_or(true)) {
        Ok(ids) => Json(json!({"tokens": ids, "count": ids.len(), "max_model_len": s.engine.info.max_len})).into_response(),
        Err(e) => bad(e.to_string()).into_response(),
    }
}

async fn detokenize(State(s): State<Shared>, body: Bytes) -> Response {
    let r: DetokenizeRequest = match api::parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Some(t) = r.tokens.iter().find(|&&t| t < 0 || t as usize >= s.tok.vocab_size()) {
        return bad(format!("token id {t} is outside the tokenizer's vocabulary ({})", s.tok.vocab_size())).into_response();
    }
    match s.tok.decode_all(&r.tokens) {
        Ok(text) => Json(json!({"prompt": text})).into_response(),
        Err(e) => bad(e.to_string()).into_response(),
    }
}

/// Checks a tokenized prompt against the engine: ids in the vocabulary, within the prefill length, room
/// for at least one token.
fn check_prompt(s: &ServeState, i: usize, ids: &[i64]) -> Result<(), BadRequest> {
    let info = &s.engine.info;
    if ids.is_empty() {
        return Err(bad(format!("prompt {i} is empty")));
    }
    if let Some(t) = ids.iter().find(|&&t| t < 0 || t as usize >= info.vocab) {
        return Err(bad(format!("prompt {i}: token id {t} is outside the model's vocabulary (vocab_size={})", info.vocab)));
    }
    if ids.len() > info.max_prefill || ids.len() >= info.max_len {
        return Err(bad(format!(
            "prompt {i} has {} tokens; this server takes at most {} (max_prefill_predict_length={}, max_target_length={})",
            ids.len(),
            info.max_prefill.min(info.max_len - 1),
            info.max_prefill,
            info.max_len
        )));
    }
    Ok(())
}

/// A sequence ready to submit: its request, receiver and output collector.
struct Seq {
    req: SeqRequest,
    rx: UnboundedReceiver<SeqEvent>,
    out: SeqOutput,
}

fn new_seq(s: &ServeState, ids: Vec<i64>, max_new: Option<usize>, sampling: &super::Sampling, stops: &[String], prompt_lp: bool, top: usize) -> Seq {
    let room = s.engine.info.max_len - ids.len();
    let (mut req, rx) = SeqRequest::new(ids.clone(), max_new.unwrap_or(room).min(room));
    req.sampling = sampling.clone();
    req.prompt_logprobs = prompt_lp;
    req.top_logprobs = top;
    req.stop_ids = s.tok.eos_ids();
    Seq { req, rx, out: SeqOutput::new(ids, stops.to_vec()) }
}

/// Submits the sequences; returns their receivers and collectors.
fn submit(s: &ServeState, seqs: Vec<Seq>) -> Result<Vec<(UnboundedReceiver<SeqEvent>, SeqOutput)>, Response> {
    let mut reqs = Vec::with_capacity(seqs.len());
    let mut rest = Vec::with_capacity(seqs.len());
    for q in seqs {
        reqs.push(q.req);
        rest.push((q.rx, q.out));
    }
    s.engine.submit(reqs).map_err(engine_error)?;
    Ok(rest)
}

/// Waits for every sequence to finish (non-streaming).
async fn collect(s: &ServeState, mut seqs: Vec<(UnboundedReceiver<SeqEvent>, SeqOutput)>) -> Result<Vec<SeqOutput>, Response> {
    for (rx, out) in seqs.iter_mut() {
        while !out.done() {
            match rx.recv().await {
                Some(ev) => {
                    out.on_event(&s.tok, ev);
                }
                None => out.on_closed(),
            }
        }
        if let Some(e) = &out.error {
            return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e));
        }
    }
    Ok(seqs.into_iter().map(|(_, o)| o).collect())
}

fn usage(outs: &[SeqOutput]) -> Value {
    let p: usize = outs.iter().map(|o| o.prompt.len()).sum();
    let c: usize = outs.iter().map(|o| o.generated.len()).sum();
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

/// Streams each sequence's chunks (made by `chunk(index, delta, out, finished)`) as SSE, then `[DONE]`.
fn sse(s: Shared, seqs: Vec<(UnboundedReceiver<SeqEvent>, SeqOutput)>, chunk: fn(&ServeState, usize, &str, &SeqOutput, bool) -> Value) -> Response {
    let (tx, rx) = unbounded_channel::<Value>();
    for (i, (mut erx, mut out)) in seqs.into_iter().enumerate() {
        let (tx, s): (UnboundedSender<Value>, Shared) = (tx.clone(), s.clone());
        tokio::spawn(async move {
            if let Some(first) = chunk(&s, i, "", &out, false).get("first").cloned() {
                if tx.send(first).is_err() {
                    return;
                }
            }
            while !out.done() {
                let delta = match erx.recv().await {
                    Some(ev) => out.on_event(&s.tok, ev),
                    None => {
                        out.on_closed();
                        String::new()
                    }
                };
                if let Some(e) = &out.error {
                    let _ = tx.send(json!({"error": {"message": e, "type": "server_error", "code": 500}}));
                    return;
                }
                if (!delta.is_empty() || out.done()) && tx.send(chunk(&s, i, &delta, &out, out.done())).is_err() {
                    return; // the client went away: dropping `erx` cancels the sequence
                }
            }
        });
    }
    drop(tx);
    let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (Ok::<Event, Infallible>(Event::default().data(v.to_string())), rx)) })
        .chain(stream::once(async { Ok(Event::default().data("[DONE]")) }));
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

async fn completions(State(s): State<Shared>, body: Bytes) -> Response {
    match completions_inner(s, &body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn completions_inner(s: Shared, body: &[u8]) -> Result<Response, Response> {
    let r: CompletionRequest = api::parse(body).map_err(IntoResponse::into_response)?;
    r.validate().map_err(IntoResponse::into_response)?;
    let sampling = api::sampling(r.temperature, r.top_p, r.top_k, r.seed).map_err(IntoResponse::into_response)?;
    let (ids, texts): (Vec<Vec<i64>>, Vec<Option<String>>) = match &r.prompt {
        Prompt::Text(t) => (vec![encode(&s, t)?], vec![Some(t.clone())]),
        Prompt::Texts(ts) => (ts.iter().map(|t| encode(&s, t)).collect::<Result<_, _>>()?, ts.iter().cloned().map(Some).collect()),
        Prompt::Ids(v) => (vec![v.clone()], vec![None]),
        Prompt::IdLists(v) => (v.clone(), vec![None; v.len()]),
    };
    for (i, p) in ids.iter().enumerate() {
        check_prompt(&s, i, p).map_err(IntoResponse::into_response)?;
    }
    let max_new = api::max_tokens(r.max_tokens, "max_tokens").map_err(IntoResponse::into_response)?.unwrap_or(s.default_max_tokens);
    let stops = r.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    let want_lp = r.logprobs.is_some();
    let top = r.logprobs.unwrap_or(0) as usize;
    let seqs: Vec<Seq> = ids.into_iter().map(|p| new_seq(&s, p, Some(max_new), &sampling, &stops, r.echo && want_lp, top)).collect();
    let seqs = submit(&s, seqs)?;
    let id = request_id("cmpl");
    let model = r.model.clone().unwrap_or_else(|| s.model.clone());
    // Echoed prompt text: the request's own text, or the ids decoded.
    let prompt_text = |i: usize, out: &SeqOutput| -> String {
        texts[i].clone().unwrap_or_else(|| s.tok.decode_all(&out.prompt).unwrap_or_default())
    };
    if r.stream {
        // Streaming: the echoed prompt goes out with the first chunk of each choice.
        fn chunk(s: &ServeState, i: usize, delta: &str, out: &SeqOutput, finished: bool) -> Value {
            if delta.is_empty() && !finished {
                return json!({});
            }
            json!({"object": "text_completion", "model": s.model, "choices": [{"index": i, "text": delta, "logprobs": null, "finish_reason": if finished { out.finish.map(Value::from).unwrap_or(Value::Null) } else { Value::Null }}]})
        }
        if r.echo {
            // Echo and streaming: the prompt text goes out first, one chunk per choice.
            let head: Vec<Value> = seqs
                .iter()
                .enumerate()
                .map(|(i, (_, out))| json!({"object": "text_completion", "model": model, "choices": [{"index": i, "text": prompt_text(i, out), "logprobs": null, "finish_reason": null}]}))
                .collect();
            return Ok(prepend(head, sse(s.clone(), seqs, chunk)));
        }
        return Ok(sse(s.clone(), seqs, chunk));
    }
    let outs = collect(&s, seqs).await?;
    let choices: Vec<Value> = outs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            let head = if r.echo { prompt_text(i, out) } else { String::new() };
            let logprobs = if want_lp { completion_logprobs(&s.tok, out, r.echo, top, 0) } else { Value::Null };
            json!({"index": i, "text": format!("{head}{}", out.text), "logprobs": logprobs, "finish_reason": out.finish})
        })
        .collect();
    Ok(Json(json!({"id": id, "object": "text_completion", "created": now(), "model": model, "choices": choices, "usage": usage(&outs)})).into_response())
}

/// An SSE response with `head` events first.
fn prepend(head: Vec<Value>, resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let mut pre = String::new();
    for v in head {
        pre.push_str(&format!("data: {v}\n\n"));
    }
    let pre = stream::once(async move { Ok::<Bytes, axum::Error>(Bytes::from(pre)) });
    let rest = body.into_data_stream();
    Response::from_parts(parts, axum::body::Body::from_stream(pre.chain(rest)))
}

fn encode(s: &ServeState, text: &str) -> Result<Vec<i64>, Response> {
    s.tok.encode(text, false).map_err(|e| bad(e.to_string()).into_response())
}

async fn chat_completions(State(s): State<Shared>, body: Bytes) -> Response {
    match chat_inner(s, &body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn chat_inner(s: Shared, body: &[u8]) -> Result<Response, Response> {
    let r: ChatRequest = api::parse(body).map_err(IntoResponse::into_response)?;
    r.validate().map_err(IntoResponse::into_response)?;
    let sampling = api::sampling(r.temperature, r.top_p, r.top_k, r.seed).map_err(IntoResponse::into_response)?;
    let template = s.chat.as_ref().ok_or_else(|| bad("this tokenizer has no chat_template; use /v1/completions").into_response())?;
    let text = template.render(&r.messages, r.chat_template_kwargs.as_ref()).map_err(IntoResponse::into_response)?;
    let ids = encode(&s, &text)?;
    check_prompt(&s, 0, &ids).map_err(IntoResponse::into_response)?;
    let max_new = match api::max_tokens(r.max_completion_tokens, "max_completion_tokens").map_err(IntoResponse::into_response)? {
        Some(m) => Some(m),
        None => api::max_tokens(r.max_tokens, "max_tokens").map_err(IntoResponse::into_response)?,
    };
    let stops = r.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    let top = r.top_logprobs.unwrap_or(0) as usize;
    let seq = new_seq(&s, ids, max_new, &sampling, &stops, false, if r.logprobs { top } else { 0 });
    let seqs = submit(&s, vec![seq])?;
    let model = r.model.clone().unwrap_or_else(|| s.model.clone());
    if r.stream {
        fn chunk(s: &ServeState, i: usize, delta: &str, out: &SeqOutput, finished: bool) -> Value {
            let base = |delta: Value, finish: Value| json!({"object": "chat.completion.chunk", "model": s.model, "choices": [{"index": i, "delta": delta, "logprobs": null, "finish_reason": finish}]});
            if delta.is_empty() && !finished {
                // Called once before any event: the role chunk.
                return json!({"first": base(json!({"role": "assistant", "content": ""}), Value::Null)});
            }
            let finish = if finished { out.finish.map(Value::from).unwrap_or(Value::Null) } else { Value::Null };
            base(json!({"content": delta}), finish)
        }
        return Ok(sse(s.clone(), seqs, chunk));
    }
    let outs = collect(&s, seqs).await?;
    let out = &outs[0];
    let logprobs = if r.logprobs { chat_logprobs(&s.tok, out, top) } else { Value::Null };
    Ok(Json(json!({
        "id": request_id("chatcmpl"), "object": "chat.completion", "created": now(), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text}, "logprobs": logprobs, "finish_reason": out.finish}],
        "usage": usage(&outs),
    }))
    .into_response())
}
