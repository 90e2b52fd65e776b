//! `maxtext serve [base.yml] key=value ... [--host 127.0.0.1] [--port 8000] [--max-queue 256]`: an
//! OpenAI-compatible server (src/serve) on the model the config describes (weights as in `decode`). The
//! decode batch has `per_device_batch_size` x devices rows, caches `max_target_length` positions, prompts
//! up to `max_prefill_predict_length` tokens. Loopback only unless `--host` says otherwise. SIGTERM or
//! Ctrl-C stops taking connections, finishes the requests in flight, and exits.

use super::decode::tokenizer;
use super::processes::one_process_only;
use super::setup::{load_config, start_engine};
use anyhow::{bail, Context, Result};
use axum::serve::ListenerExt;
use maxtext::serve::chat::ChatTemplate;
use maxtext::serve::http::{router, ServeState};

use std::sync::Arc;

struct Flags {
    host: String,
    port: u16,
    max_queue: usize,
    rest: Vec<String>,
}

fn flags(args: &[String]) -> Result<Flags> {
    let mut f = Flags { host: "127.0.0.1".into(), port: 8000, max_queue: 256, rest: Vec::new() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if !name.starts_with("--") {
            f.rest.push(a.clone());
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().with_context(|| format!("{name} needs a value"))?.clone(),
        };
        match name.as_str() {
            "--host" => f.host = value,
            "--port" => f.port = value.parse().with_context(|| format!("--port {value}: not a port number"))?,
            "--max-queue" => f.max_queue = value.parse().with_context(|| format!("--max-queue {value}: not a count"))?,
            _ => bail!("unknown flag {name} (serve takes --host, --port, --max-queue, then key=value config overrides)"),
        }
    }
    if f.max_queue == 0 {
        bail!("--max-queue must be at least 1");
    }
    Ok(f)
}

pub fn run(args: &[String]) -> Result<()> {
    let f = flags(args)?;
    let cfg = load_config(&f.rest)?;
    let tok = tokenizer(&cfg)?.context("serve needs a tokenizer: set tokenizer_path to a directory with tokenizer.json")?;
    let chat = ChatTemplate::load(tok.dir()).map_err(anyhow::Error::msg)?;
    if chat.is_none() {
        eprintln!("the tokenizer has no chat_template: /v1/chat/completions will answer 400");
    }
    one_process_only(&cfg, "serve")?;
    let (engine, cfg) = start_engine(cfg, f.max_queue)?;
    let info = engine.info.clone();
    let model = if cfg.run.model_name.is_empty() { "maxtext".to_string() } else { cfg.run.model_name.clone() };
    let state = Arc::new(ServeState { engine, tok, chat, model, default_max_tokens: 16 });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((f.host.as_str(), f.port))
            .await
            .with_context(|| format!("binding {}:{}", f.host, f.port))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "maxtext serve: listening on http://{addr} (decode batch {} rows, max_target_length {}, prompts up to {} tokens, queue {})",
            info.slots, info.max_len, info.max_prefill, info.queue_capacity
        );
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await?;
        eprintln!("maxtext serve: shut down (in-flight requests finished)");
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("maxtext serve: shutting down: no new connections, finishing requests in flight");
}
