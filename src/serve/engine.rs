//! The serving engine: one thread owns the device state and runs continuous batching over a decode batch
//! of `slots` rows. A sequence (one prompt of a request) waits in a queue, is prefilled into a free row
//! (`prefill_insert`, which also gives its prompt log-probabilities), then advances one token per
//! `decode_slots` step together with every other row in use, and leaves when it stops, so its row takes
//! the next waiting sequence. Tokens are drawn on the host from log-probabilities computed on the device
//! (greedy needs only the per-row best id; sampling downloads the rows' log-probabilities).
//! Results go back per sequence over a channel; a sequence whose receiver is gone (client went away, or
//! a stop string matched) is cancelled at the next step.

use super::sampling::{draw, top_n, Sampling};
use crate::config::Config;
use crate::pjrt::{Buffer, LoadedExecutable};
use crate::ir::Program;
use crate::program::{decode_slots_program, prefill_insert_program, slot_state_types, DecodeProgram};
use crate::runtime::{prefill_bucket, upload_decode_params, DeviceArray, GenerateError, HostTensor, RunError, Runtime};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// A token with its log-probability (under the model, before temperature) and the best alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub id: i64,
    pub logprob: f32,
    /// The `n` most likely tokens at this position (id, log-probability), best first.
    pub top: Vec<(i64, f32)>,
}

/// Why a sequence stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-sequence token.
    Stop,
    /// `max_tokens`, or the cache is full (`max_target_length`).
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// What the engine reports for a sequence, in order: `Prompt` (when asked), `Token`s, then `Done` or `Failed`.
#[derive(Debug)]
pub enum SeqEvent {
    /// Positions 1.. of the prompt: each prompt token's log-probability given the tokens before it.
    Prompt(Vec<TokenLogprob>),
    Token(TokenLogprob),
    Done(Finish),
    Failed(String),
}

/// One prompt to complete.
pub struct SeqRequest {
    pub prompt: Vec<i64>,
    /// New tokens at most (0: prompt log-probabilities only).
    pub max_new: usize,
    pub sampling: Sampling,
    pub prompt_logprobs: bool,
    /// How many alternatives to report per generated token (0: none).
    pub top_logprobs: usize,
    /// Token ids that end the sequence (EOS), reported as generated.
    pub stop_ids: Vec<i64>,
    pub events: UnboundedSender<SeqEvent>,
}

impl SeqRequest {
    /// A request and the receiver of its events.
    pub fn new(prompt: Vec<i64>, max_new: usize) -> (SeqRequest, UnboundedReceiver<SeqEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let r = SeqRequest { prompt, max_new, sampling: Sampling::greedy(), prompt_logprobs: false, top_logprobs: 0, stop_ids: Vec::new(), events: tx };
        (r, rx)
    }
}

/// Sizes the engine was built with (what requests are checked against).
#[derive(Clone, Debug)]
pub struct EngineInfo {
    pub slots: usize,
    pub max_len: usize,
    pub max_prefill: usize,
    pub vocab: usize,
    pub queue_capacity: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the server is busy: {pending} sequences queued or running, the queue holds {capacity}; retry later")]
    QueueFull { pending: usize, capacity: usize },
    #[error("the engine has stopped")]
    Stopped,
    #[error("starting the engine: {0}")]
    Start(String),
}

/// The handle: submit sequences; dropping it (or `shutdown`) lets the engine finish what it has and stop.
pub struct Engine {
    tx: Option<mpsc::Sender<SeqRequest>>,
    pending: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub info: EngineInfo,
}

impl Engine {
    /// Compiles the decode program, uploads the parameters and starts the engine thread. Parameter `i`
    /// (declaration order) is `upload(rt, program, exe, argument, i)`: its per-device buffers laid out as
    /// that argument of the decode program (e.g. read shard by shard from a checkpoint, or an on-device
    /// init's results). The decode batch has `global_batch_size_to_load` rows; caches hold
    /// `max_target_length` positions.
    pub fn start<E: std::fmt::Display>(
        rt: Runtime,
        cfg: &Config,
        queue_capacity: usize,
        upload: impl FnMut(&Runtime, &Program, &LoadedExecutable, usize, usize) -> Result<Vec<Buffer>, E>,
    ) -> Result<Engine, EngineError> {
        let params = upload_params(&rt, cfg, upload).map_err(EngineError::Start)?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel::<SeqRequest>();
        let pending = Arc::new(AtomicUsize::new(0));
        let cfg = cfg.clone();
        let p = pending.clone();
        // The worker traces its programs on its own thread (a traced program is not `Send`); only the
        // runtime and the parameter buffers cross.
        let thread = std::thread::Builder::new()
            .name("serve-engine".into())
            .spawn(move || match Worker::new(rt, &cfg, params, p) {
                Ok(mut w) => {
                    let _ = ready_tx.send(Ok(w.info()));
                    w.run(rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            })
            .map_err(|e| EngineError::Start(e.to_string()))?;
        let info = ready_rx.recv().map_err(|_| EngineError::Start("the engine thread died".into()))?.map_err(EngineError::Start)?;
        Ok(Engine { tx: Some(tx), pending, thread: Some(thread), info: EngineInfo { queue_capacity, ..info } })
    }

    /// [`Engine::start`] with whole host parameters (declaration order), split over the devices here.
    pub fn start_with_params(rt: Runtime, cfg: &Config, queue_capacity: usize, params: &[HostTensor]) -> Result<Engine, EngineError> {
        Self::start(rt, cfg, queue_capacity, |rt, program, exe, arg, i| rt.upload_arg(program, exe, arg, &params[i]))
    }

    /// Queues all of `reqs`, or none of them when the queue cannot take them all.
    pub fn submit(&self, reqs: Vec<SeqRequest>) -> Result<(), EngineError> {
        let n = reqs.len();
        let cap = self.info.queue_capacity;
        let mut cur = self.pending.load(Ordering::SeqCst);
        loop {
            if cur + n > cap {
                return Err(EngineError::QueueFull { pending: cur, capacity: cap });
            }
            match self.pending.compare_exchange(cur, cur + n, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let tx = self.tx.as_ref().ok_or(EngineError::Stopped)?;
        for r in reqs {
            if tx.send(r).is_err() {
                return Err(EngineError::Stopped);
            }
        }
        Ok(())
    }

    /// Sequences queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Stops taking sequences, finishes the ones queued and running, and joins the engine thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Compiles the whole-batch decode program and uploads the parameters as its `params` group.
fn upload_params<E: std::fmt::Display>(
    rt: &Runtime,
    cfg: &Config,
    mut upload: impl FnMut(&Runtime, &Program, &LoadedExecutable, usize, usize) -> Result<Vec<Buffer>, E>,
) -> Result<Vec<DeviceArray>, String> {
    let slots = cfg.batch.global_batch_size_to_load.max(1) as i64;
    let decode = decode_slots_program(cfg, slots, slots, cfg.data.max_target_length as i64).map_err(|e| e.to_string())?;
    let exe = rt.compile(&decode.program).map_err(|e| e.to_string())?;
    let decls = &decode.decls;
    let loaded = upload_decode_params(rt, cfg, &decode, &exe, |p, exe, arg, i| -> Result<Vec<Buffer>, LoadError> {
        upload(rt, p, exe, arg, i).map_err(|e| LoadError(format!("parameter {}: {e}", decls[i].path)))
    });
    loaded.map_err(|e| e.0)
}

/// A parameter that could not be loaded, said as text (the engine reports start-up failures as text).
struct LoadError(String);

impl From<RunError> for LoadError {
    fn from(e: RunError) -> Self {
        LoadError(e.to_string())
    }
}

impl From<GenerateError> for LoadError {
    fn from(e: GenerateError) -> Self {
        LoadError(e.to_string())
    }
}

/// Traces and compiles `trace()` into `programs[key]` unless it is there already.
fn compile_once(
    rt: &Runtime,
    programs: &mut HashMap<usize, (DecodeProgram, Arc<LoadedExecutable>)>,
    key: usize,
    trace: impl FnOnce() -> Result<DecodeProgram, crate::sharding::ShardingError>,
) -> Res<()> {
    if !programs.contains_key(&key) {
        let p = trace()?;
        let _span = tracing::info_span!("compile", program = %p.program.name, key).entered();
        let exe = rt.compile(&p.program)?;
        programs.insert(key, (p, exe));
    }
    Ok(())
}

/// Runs `program` on `inputs`, the donated decode state `cache` and `params`; `cache` becomes the program's
/// new state (or, when the execution fails, is put back: the caller resets it).
fn run_on_cache(rt: &Runtime, program: &Program, exe: &LoadedExecutable, inputs: &[DeviceArray], cache: &mut Vec<DeviceArray>, params: &[DeviceArray]) -> Res<crate::runtime::Outputs> {
    let state = std::mem::take(cache);
    match rt.execute(program, exe, &[("inputs", inputs), ("cache", &state), ("params", params)]) {
        Ok(mut outs) => {
            *cache = outs.take("cache");
            Ok(outs)
        }
        Err(e) => {
            *cache = state;
            Err(e.into())
        }
    }
}

/// A sequence in a row of the decode batch.
struct Active {
    req: SeqRequest,
    /// Tokens in the cache so far plus the one to feed next (prompt + generated).
    len: usize,
    generated: usize,
    last: i64,
    rng: StdRng,
}

struct Worker {
    rt: Runtime,
    cfg: Config,
    slots: usize,
    max_len: usize,
    vocab: usize,
    decode: DecodeProgram,
    decode_exe: Arc<LoadedExecutable>,
    inserts: HashMap<usize, (DecodeProgram, Arc<LoadedExecutable>)>,
    /// Decode steps by the number of leading rows they advance.
    steps: HashMap<usize, (DecodeProgram, Arc<LoadedExecutable>)>,
    /// The parameters (shared by every program).
    params: Vec<DeviceArray>,
    /// kv_k, kv_v, conv, rec of all rows.
    state: Vec<DeviceArray>,
    rows: Vec<Option<Active>>,
    waiting: VecDeque<SeqRequest>,
    pending: Arc<AtomicUsize>,
}

/// What can go wrong in the engine thread: tracing a program for a new prefill length, or running one.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Sharding(#[from] crate::sharding::ShardingError),
    #[error(transparent)]
    Pjrt(#[from] crate::pjrt::Error),
}

type Res<T> = Result<T, StepError>;

impl Worker {
    /// The worker over parameters uploaded by [`upload_params`] (the decode program is traced again here:
    /// the same text, so its executable comes from the cache).
    fn new(rt: Runtime, cfg: &Config, params: Vec<DeviceArray>, pending: Arc<AtomicUsize>) -> Res<Worker> {
        let slots = cfg.batch.global_batch_size_to_load.max(1);
        let max_len = cfg.data.max_target_length;
        let decode = decode_slots_program(cfg, slots as i64, slots as i64, max_len as i64)?;
        let decode_exe = rt.compile(&decode.program)?;
        let mut w = Worker {
            rt,
            cfg: cfg.clone(),
            slots,
            max_len,
            vocab: cfg.model.vocab_size,
            decode,
            decode_exe,
            inserts: HashMap::new(),
            steps: HashMap::new(),
            params,
            state: Vec::new(),
            rows: (0..slots).map(|_| None).collect(),
            waiting: VecDeque::new(),
            pending,
        };
        w.reset_state()?;
        w.step_exe(slots)?; // the same program: a hit in the executable cache
        Ok(w)
    }

    fn info(&self) -> EngineInfo {
        EngineInfo { slots: self.slots, max_len: self.max_len, max_prefill: self.cfg.data.max_prefill_predict_length, vocab: self.vocab, queue_capacity: 0 }
    }

    /// Zero state for every row.
    fn reset_state(&mut self) -> Res<()> {
        let zeros: Vec<HostTensor> = slot_state_types(&self.cfg, self.slots as i64, self.max_len as i64)
            .iter()
            .map(|t| {
                let n: i64 = t.dims.iter().product();
                HostTensor::from_bytes(t.dtype, &t.dims, vec![0u8; n as usize * t.dtype.size_bytes()])
            })
            .collect();
        self.state = self.rt.upload_group(&self.decode.program, &self.decode_exe, "cache", &zeros)?;
        Ok(())
    }

    fn run(&mut self, rx: mpsc::Receiver<SeqRequest>) {
        let mut open = true;
        loop {
            let busy = self.rows.iter().any(|r| r.is_some()) || !self.waiting.is_empty();
            if !busy {
                if !open {
                    return;
                }
                match rx.recv() {
                    Ok(r) => self.waiting.push_back(r),
                    Err(_) => return,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(r) => self.waiting.push_back(r),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if let Err(e) = self.admit().and_then(|_| self.step()) {
                self.fail_all(&e.to_string());
            }
        }
    }

    fn release(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// A device error: every sequence in a row fails, and the state starts afresh.
    fn fail_all(&mut self, msg: &str) {
        tracing::error!("serve engine: {msg}");
        for row in self.rows.iter_mut() {
            if let Some(a) = row.take() {
                let _ = a.req.events.send(SeqEvent::Failed(msg.to_string()));
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if let Err(e) = self.reset_state() {
            tracing::error!("serve engine: cannot reset the decode state: {e}");
        }
    }

    /// Prefills waiting sequences into free rows.
    fn admit(&mut self) -> Res<()> {
        while let Some(slot) = self.rows.iter().position(|r| r.is_none()) {
            let Some(req) = self.waiting.pop_front() else { break };
            if req.events.is_closed() {
                self.release();
                continue;
            }
            match self.insert(slot, req) {
                Ok(Some(active)) => self.rows[slot] = Some(active),
                Ok(None) => self.release(),
                Err((req, e)) => {
                    let _ = req.events.send(SeqEvent::Failed(e.to_string()));
                    self.release();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The decode step over rows 0..rows (compiled on first use; the whole batch is compiled at start).
    fn step_exe(&mut self, rows: usize) -> Res<()> {
        let (cfg, slots, max_len) = (&self.cfg, self.slots as i64, self.max_len as i64);
        compile_once(&self.rt, &mut self.steps, rows, || decode_slots_program(cfg, slots, rows as i64, max_len))
    }

    /// The prefill-and-insert program for prompts of up to `bucket` tokens (compiled on first use).
    fn insert_exe(&mut self, bucket: usize) -> Res<()> {
        let (cfg, slots, max_len) = (&self.cfg, self.slots as i64, self.max_len as i64);
        compile_once(&self.rt, &mut self.inserts, bucket, || prefill_insert_program(cfg, slots, bucket as i64, max_len))
    }

    /// Prefills `req` into row `slot`; returns it as active, or None when it is already finished.
    fn insert(&mut self, slot: usize, req: SeqRequest) -> Result<Option<Active>, (SeqRequest, StepError)> {
        let n = req.prompt.len();
        let bucket = prefill_bucket(n, self.cfg.data.max_prefill_predict_length);
        if let Err(e) = self.insert_exe(bucket) {
            return Err((req, e));
        }
        let outs = match self.run_insert(slot, bucket, &req.prompt) {
            Ok(o) => o,
            Err(e) => return Err((req, e)),
        };
        let (target_lp, top_lp, top_id, last) = outs;
        if req.prompt_logprobs {
            let prompt: Vec<TokenLogprob> = (1..n)
                .map(|i| TokenLogprob { id: req.prompt[i], logprob: target_lp[i - 1], top: vec![(top_id[i - 1], top_lp[i - 1])] })
                .collect();
            let _ = req.events.send(SeqEvent::Prompt(prompt));
        }
        if req.max_new == 0 {
            let _ = req.events.send(SeqEvent::Done(Finish::Length));
            return Ok(None);
        }
        let mut rng = match req.sampling.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let id = draw(&last, &req.sampling, &mut rng);
        let tok = TokenLogprob { id, logprob: last[id as usize], top: top_n(&last, req.top_logprobs) };
        let mut active = Active { req, len: n + 1, generated: 1, last: id, rng };
        Ok(self.emit(&mut active, tok).then_some(active))
    }

    /// Sends a generated token; false when the sequence is over (Done sent) or its receiver is gone.
    fn emit(&self, a: &mut Active, tok: TokenLogprob) -> bool {
        let id = tok.id;
        if a.req.events.send(SeqEvent::Token(tok)).is_err() {
            return false;
        }
        let finish = if a.req.stop_ids.contains(&id) {
            Some(Finish::Stop)
        } else if a.generated >= a.req.max_new || a.len >= self.max_len {
            Some(Finish::Length)
        } else {
            None
        };
        match finish {
            Some(f) => {
                let _ = a.req.events.send(SeqEvent::Done(f));
                false
            }
            None => true,
        }
    }

    fn run_insert(&mut self, slot: usize, bucket: usize, prompt: &[i64]) -> Res<(Vec<f32>, Vec<f32>, Vec<i64>, Vec<f32>)> {
        let n = prompt.len();
        let mut targets = vec![0i32; bucket];
        let mut tokens = vec![0i32; bucket];
        let mut seg = vec![0i32; bucket];
        for t in 0..n {
            tokens[t] = prompt[t] as i32;
            seg[t] = 1;
            if t + 1 < n {
                targets[t] = prompt[t + 1] as i32;
            }
        }
        let positions: Vec<i32> = (0..bucket as i32).collect();
        let dims = [1, bucket as i64];
        let host = [
            HostTensor::from_i32(&targets, &dims),
            HostTensor::from_i32(&tokens, &dims),
            HostTensor::from_i32(&positions, &dims),
            HostTensor::from_i32(&seg, &dims),
            HostTensor::from_i32(&[n as i32], &[1]),
            HostTensor::from_i32(&[slot as i32], &[]),
        ];
        let (p, exe) = &self.inserts[&bucket];
        let inputs = self.rt.upload_group(&p.program, exe, "inputs", &host)?;
        let outs = run_on_cache(&self.rt, &p.program, exe, &inputs, &mut self.state, &self.params)?;
        let lp = self.rt.download_group(&p.program, &outs, "logprobs")?;
        Ok((lp[0].to_f32(), lp[1].to_f32(), lp[2].to_i64(), lp[3].to_f32()))
    }

    /// One decode step for every row in use.
    fn step(&mut self) -> Res<()> {
        // Rows whose client went away leave before the step.
        for row in self.rows.iter_mut() {
            if row.as_ref().is_some_and(|a| a.req.events.is_closed()) {
                *row = None;
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if self.rows.iter().all(|r| r.is_none()) {
            return Ok(());
        }
        // Rows are filled lowest first: step only 0..s, the power of two covering the rows in use.
        let hi = self.rows.iter().rposition(|r| r.is_some()).map_or(1, |r| r + 1);
        let s = hi.next_power_of_two().min(self.slots);
        self.step_exe(s)?;
        let mut toks = vec![0i32; s];
        let mut poss = vec![0i32; s];
        let mut need_full = false;
        for (r, a) in self.rows.iter().enumerate().take(s) {
            if let Some(a) = a {
                toks[r] = a.last as i32;
                poss[r] = (a.len - 1) as i32;
                need_full |= !a.req.sampling.is_greedy() || a.req.top_logprobs > 0;
            }
        }
        let (step, exe) = &self.steps[&s];
        let dp = &step.program;
        let inputs = self.rt.upload_group(dp, exe, "inputs", &[HostTensor::from_i32(&toks, &[s as i64, 1]), HostTensor::from_i32(&poss, &[s as i64, 1])])?;
        let outs = run_on_cache(&self.rt, dp, exe, &inputs, &mut self.state, &self.params)?;
        // (top_id, top_logprob, logprobs): the [rows, vocab] logprobs come down only when needed.
        let (results, arrays): (Vec<usize>, _) = (dp.results("logprobs").collect(), outs.get("logprobs"));
        let (top_id, top_lp) = (self.rt.download(dp, results[0], &arrays[0])?.to_i64(), self.rt.download(dp, results[1], &arrays[1])?.to_f32());
        let full = if need_full { Some(self.rt.download(dp, results[2], &arrays[2])?.to_f32()) } else { None };
        let v = self.vocab;
        for r in 0..s {
            let Some(mut a) = self.rows[r].take() else { continue };
            let row = full.as_ref().map(|f| &f[r * v..(r + 1) * v]);
            let tok = match row {
                Some(row) if !a.req.sampling.is_greedy() => {
                    let id = draw(row, &a.req.sampling, &mut a.rng);
                    TokenLogprob { id, logprob: row[id as usize], top: top_n(row, a.req.top_logprobs) }
                }
                _ => TokenLogprob { id: top_id[r], logprob: top_lp[r], top: row.map(|row| top_n(row, a.req.top_logprobs)).unwrap_or_default() },
            };
            a.last = tok.id;
            a.len += 1;
            a.generated += 1;
            if self.emit(&mut a, tok) {
                self.rows[r] = Some(a);
            } else {
                self.release();
            }
        }
        Ok(())
    }
}
