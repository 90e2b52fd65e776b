//! The training data iterator: synthetic batches, or files (local or gs://) read, tokenized, packed and
//! prefetched on a background thread, with a JSON state that resumes exactly.
//!
//! **Order.** Epoch e visits all documents in a permutation seeded by (`data_shuffle_seed`, e) (the
//! natural order when `enable_data_shuffling=false`); host p of P takes positions p, p+P, ... of it. The
//! example stream of a host is its documents' examples in that order, epoch after epoch, and packing runs
//! over that stream without resetting at epoch boundaries (MaxText concatenates the epochs). After
//! `num_epoch` epochs the last partial batch is emitted and then `next_batch` fails with
//! [`DataError::Exhausted`].
//!
//! **State.** A batch is finished when the next example does not fit; that example opens the next batch.
//! So at every batch boundary the data still to come is exactly "the examples from stream position X on",
//! where X = (epoch, document cursor in the host's share, example within the document) of the example
//! that opens the next batch. [`DataIterator::state`] is X (plus the settings it depends on), and
//! [`DataIterator::restore`] replays from X with an empty batch, which gives the same batches as the
//! uninterrupted iterator. The state follows the batches handed out, not the prefetched ones. It reads
//! `{"version": 1, "batches": 7, "epoch": 1, "document": 12, "example": 0, "config": {...}}`, where
//! `config` holds the settings the order depends on (seed, hosts, rows, lengths, packing, document count);
//! a restore under other settings fails naming the key.
//!
//! **Tokens.** A text value is tokenized with the configured HuggingFace tokenizer: the BOS token first
//! when `add_bos` and the tokenizer has one (Qwen3 has none), the tokenizer's `eos_token` last when
//! `add_eos`. A token-id list is used as is. Every id must be below `vocab_size`.
//!
//! **Hosts.** Each host's batch has `global_batch_size_to_load / process_count` rows.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use serde_json::{json, Map, Value};

use super::batch::Batch;
use super::error::DataError;
use super::packing::{example_window, num_examples, Packer};
use super::shuffle::{epoch_order, host_share};
use super::source::{Corpus, Doc, FileFormat};
use super::prng::PrngImpl;
use super::synthetic::synthetic_batch;
use super::tokenizer::{require_huggingface, Tokenizer};
use crate::config::{Config, DatasetType, TokenizerType};

/// Batches prefetched ahead of the train step.
const PREFETCH: usize = 2;
const STATE_VERSION: u64 = 1;
const SHIPPED_QWEN3: &str = "assets/tokenizers/qwen3-tokenizer";

/// Where the not yet handed-out examples start: see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Position {
    epoch: u64,
    /// Index into the host's share of the epoch's document order.
    document: u64,
    /// Example of that document (> 0 only with `use_truncation=false`).
    example: u64,
}

/// Everything the file pipeline needs, taken from the config once.
#[derive(Clone, Debug)]
struct Settings {
    pattern: String,
    column: String,
    rows: usize,
    len: usize,
    packing: bool,
    max_segments_per_seq: i64,
    truncate: bool,
    shuffle: bool,
    seed: u64,
    num_epoch: usize,
    process_index: usize,
    process_count: usize,
    vocab_size: usize,
    tokenize: bool,
    add_bos: bool,
    add_eos: bool,
    tokenizer_path: Option<String>,
    tokenizer_type: TokenizerType,
}

/// Yields [`Batch`]es for one host; see the module docs.
pub struct DataIterator {
    source: Source,
    /// Batches handed out (over all restores).
    batches: u64,
    fingerprint: Map<String, Value>,
}

enum Source {
    Synthetic(Batch),
    Files(Files),
}

/// Why the worker stopped: every later `next_batch` reports it again.
enum Stop {
    Exhausted { num_epoch: usize, batches: u64 },
    Failed(String),
}

struct Files {
    rx: Option<Receiver<Result<(Batch, Position), DataError>>>,
    worker: Option<JoinHandle<()>>,
    position: Position,
    stopped: Option<Stop>,
    documents: usize,
    host_documents: usize,
}

impl DataIterator {
    /// The iterator of host `process_index` of `process_count`, from the start of the data.
    pub fn new(cfg: &Config, process_index: usize, process_count: usize) -> Result<DataIterator, DataError> {
        DataIterator::start(cfg, process_index, process_count, None)
    }

    /// The iterator that continues where the one that returned `state` (from [`DataIterator::state`]) was.
    pub fn restore(cfg: &Config, process_index: usize, process_count: usize, state: &Value) -> Result<DataIterator, DataError> {
        DataIterator::start(cfg, process_index, process_count, Some(state))
    }

    fn start(cfg: &Config, process_index: usize, process_count: usize, state: Option<&Value>) -> Result<DataIterator, DataError> {
        if process_count == 0 || process_index >= process_count {
            return Err(DataError::ProcessIndex { index: process_index, count: process_count });
        }
        let d = &cfg.data;
        let global_rows = cfg.batch.global_batch_size_to_load;
        if global_rows == 0 || !global_rows.is_multiple_of(process_count) {
            return Err(DataError::BatchSplit { rows: global_rows, process_count });
        }
        let rows = global_rows / process_count;
        let mut fingerprint = Map::new();
        fingerprint.insert("dataset_type".into(), json!(d.dataset_type.name()));
        fingerprint.insert("process_index".into(), json!(process_index));
        fingerprint.insert("process_count".into(), json!(process_count));
        fingerprint.insert("rows".into(), json!(rows));
        fingerprint.insert("max_target_length".into(), json!(d.max_target_length));
        match d.dataset_type {
            DatasetType::Synthetic => {
                let imp = PrngImpl::from_env()?;
                let global = synthetic_batch(imp, global_rows, d.max_target_length, cfg.model.vocab_size, d.packing, d.max_segments_per_seq)?;
                let batch = global.slice_rows(process_index * rows, rows);
                let batches = match state {
                    Some(s) => check_state(s, &fingerprint)?.1,
                    None => 0,
                };
                Ok(DataIterator { source: Source::Synthetic(batch), batches, fingerprint })
            }
            DatasetType::Hf => {
                let settings = settings(cfg, rows, process_index, process_count)?;
                let format = FileFormat::from_hf_path(d.hf_path.as_deref().unwrap_or(""))?;
                let corpus = Corpus::open(format, &settings.pattern, &settings.column)?;
                if corpus.is_empty() {
                    return Err(DataError::NoExamples { pattern: settings.pattern.clone() });
                }
                let host_documents = host_share(&(0..corpus.len() as u32).collect::<Vec<_>>(), process_index, process_count).len();
                if host_documents == 0 {
                    return Err(DataError::EmptyShare { documents: corpus.len(), process_index, process_count });
                }
                for (k, v) in [
                    ("documents", json!(corpus.len())),
                    ("packing", json!(settings.packing)),
                    ("max_segments_per_seq", json!(if settings.packing { settings.max_segments_per_seq } else { 1 })),
                    ("use_truncation", json!(settings.truncate)),
                    ("enable_data_shuffling", json!(settings.shuffle)),
                    ("data_shuffle_seed", json!(settings.seed)),
                    ("add_bos", json!(settings.add_bos)),
                    ("add_eos", json!(settings.add_eos)),
                ] {
                    fingerprint.insert(k.into(), v);
                }
                let (position, batches) = match state {
                    Some(s) => check_state(s, &fingerprint)?,
                    None => (Position::default(), 0),
                };
                // Text data: load the tokenizer now so that a bad tokenizer_path fails here, not in the thread.
                let tokenizer = match corpus.get(0)? {
                    Doc::Text(_) if settings.tokenize => Some(load_tokenizer(&settings)?),
                    Doc::Text(_) => {
                        let (path, record) = corpus.locate(0);
                        return Err(DataError::TextNotTokenized { path, record, column: settings.column.clone() });
                    }
                    Doc::Ids(_) => None,
                };
                let documents = corpus.len();
                tracing::info!(documents, host_documents, files = corpus.num_files(), remote_bytes = corpus.remote_bytes(), pattern = %settings.pattern, "training data");
                let producer = Producer::new(corpus, tokenizer, settings, position, batches);
                let (tx, rx) = sync_channel(PREFETCH);
                let worker = std::thread::Builder::new()
                    .name("maxtext-data".into())
                    .spawn(move || producer.run(tx))
                    .map_err(|e| DataError::Io { path: PathBuf::from("<data thread>"), source: e })?;
                let files = Files { rx: Some(rx), worker: Some(worker), position, stopped: None, documents, host_documents };
                Ok(DataIterator { source: Source::Files(files), batches, fingerprint })
            }
            other => Err(DataError::UnsupportedDatasetType(other.name().to_string())),
        }
    }

    /// The next batch (`[rows, max_target_length]` per key).
    pub fn next_batch(&mut self) -> Result<Batch, DataError> {
        let batch = match &mut self.source {
            Source::Synthetic(b) => b.clone(),
            Source::Files(f) => {
                match &f.stopped {
                    Some(Stop::Exhausted { num_epoch, batches }) => {
                        return Err(DataError::Exhausted { num_epoch: *num_epoch, batches: *batches })
                    }
                    Some(Stop::Failed(msg)) => return Err(DataError::Stopped(msg.clone())),
                    None => {}
                }
                let got = f.rx.as_ref().expect("receiver lives until drop").recv();
                match got {
                    Ok(Ok((batch, position))) => {
                        f.position = position;
                        batch
                    }
                    Ok(Err(e)) => {
                        f.stopped = Some(match &e {
                            DataError::Exhausted { num_epoch, batches } => Stop::Exhausted { num_epoch: *num_epoch, batches: *batches },
                            other => Stop::Failed(other.to_string()),
                        });
                        return Err(e);
                    }
                    Err(_) => {
                        let msg = "the data thread ended unexpectedly".to_string();
                        f.stopped = Some(Stop::Failed(msg.clone()));
                        return Err(DataError::Stopped(msg));
                    }
                }
            }
        };
        self.batches += 1;
        Ok(batch)
    }

    /// The state after the batches handed out so far, as JSON (for the checkpoint).
    pub fn state(&self) -> Value {
        let mut s = Map::new();
        s.insert("version".into(), json!(STATE_VERSION));
        s.insert("batches".into(), json!(self.batches));
        if let Source::Files(f) = &self.source {
            s.insert("epoch".into(), json!(f.position.epoch));
            s.insert("document".into(), json!(f.position.document));
            s.insert("example".into(), json!(f.position.example));
        }
        s.insert("config".into(), Value::Object(self.fingerprint.clone()));
        Value::Object(s)
    }

    /// Batches handed out since the start of training (restores included).
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Documents in all files, and in this host's share of each epoch (0, 0 for synthetic data).
    pub fn documents(&self) -> (usize, usize) {
        match &self.source {
            Source::Synthetic(_) => (0, 0),
            Source::Files(f) => (f.documents, f.host_documents),
        }
    }
}

impl Iterator for DataIterator {
    type Item = Result<Batch, DataError>;

    /// `None` once the data is exhausted; other errors are yielded.
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_batch() {
            Err(DataError::Exhausted { .. }) => None,
            other => Some(other),
        }
    }
}

impl Drop for DataIterator {
    fn drop(&mut self) {
        if let Source::Files(f) = &mut self.source {
            // Dropping the receiver makes the worker's next send fail, so it returns.
            drop(f.rx.take());
            if let Some(w) = f.worker.take() {
                let _ = w.join();
            }
        }
    }
}

fn settings(cfg: &Config, rows: usize, process_index: usize, process_count: usize) -> Result<Settings, DataError> {
    let d = &cfg.data;
    let hf_path = d.hf_path.clone().unwrap_or_default();
    FileFormat::from_hf_path(&hf_path)?;
    let Some(pattern) = d.hf_train_files.clone().filter(|p| !p.is_empty()) else {
        return Err(DataError::MissingTrainFiles { hf_path });
    };
    if d.use_sft {
        return Err(DataError::Unsupported("use_sft=true (supervised fine-tuning data)"));
    }
    if d.train_data_columns.len() != 1 {
        return Err(DataError::Columns(d.train_data_columns.clone()));
    }
    Ok(Settings {
        pattern,
        column: d.train_data_columns[0].clone(),
        rows,
        len: d.max_target_length,
        packing: d.packing,
        max_segments_per_seq: d.max_segments_per_seq,
        truncate: d.use_truncation,
        shuffle: d.enable_data_shuffling,
        seed: d.data_shuffle_seed,
        num_epoch: d.num_epoch,
        process_index,
        process_count,
        vocab_size: cfg.model.vocab_size,
        tokenize: d.tokenize_train_data,
        add_bos: d.add_bos,
        add_eos: d.add_eos,
        tokenizer_path: d.tokenizer_path.clone(),
        tokenizer_type: d.tokenizer_type,
    })
}

/// `tokenizer_path` as a local directory or tokenizer.json; a Qwen3 hub id (the default for Qwen3-Next)
/// or no path falls back to the shipped Qwen3 tokenizer, as `maxtext decode` does. Only
/// `tokenizer_type=huggingface` is built (MaxText's Qwen3-Next commands set it).
fn load_tokenizer(s: &Settings) -> Result<Tokenizer, DataError> {
    require_huggingface(s.tokenizer_type).map_err(DataError::TokenizerType)?;
    let given = s.tokenizer_path.as_deref().unwrap_or("");
    let staged = super::tokenizer::local_tokenizer_path(given).map_err(|e| DataError::Io { path: PathBuf::from(given), source: e.into() })?;
    if let Some(p) = staged {
        return Tokenizer::load(&p).map_err(|source| DataError::Tokenizer { path: given.to_string(), source });
    }
    let local = PathBuf::from(given);
    let chosen = if !given.is_empty() && local.exists() {
        local
    } else if given.is_empty() || given.to_ascii_lowercase().contains("qwen3") {
        let shipped = [PathBuf::from(SHIPPED_QWEN3), PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_QWEN3)];
        match shipped.into_iter().find(|p| p.is_dir()) {
            Some(p) => {
                tracing::warn!("tokenizer_path={given:?} is not a local path; tokenizing with the shipped Qwen3 tokenizer {}", p.display());
                p
            }
            None if given.is_empty() => return Err(DataError::NoTokenizer),
            None => local,
        }
    } else {
        local
    };
    Tokenizer::load(&chosen).map_err(|source| DataError::Tokenizer { path: given.to_string(), source })
}

/// Checks a saved state against this run's settings; returns its position and batch count.
fn check_state(state: &Value, fingerprint: &Map<String, Value>) -> Result<(Position, u64), DataError> {
    let bad = |m: &str| DataError::BadState(m.to_string());
    let int = |key: &str| state.get(key).and_then(Value::as_u64).ok_or_else(|| bad(&format!("no integer {key:?}")));
    let version = int("version")?;
    if version != STATE_VERSION {
        return Err(bad(&format!("version {version}; this build reads version {STATE_VERSION}")));
    }
    let saved = state.get("config").and_then(Value::as_object).ok_or_else(|| bad("no \"config\" object"))?;
    for (key, now) in fingerprint {
        let was = saved.get(key).cloned().unwrap_or(Value::Null);
        if &was != now {
            return Err(DataError::StateMismatch { key: key.clone(), saved: was.to_string(), now: now.to_string() });
        }
    }
    let batches = int("batches")?;
    if fingerprint.get("dataset_type") == Some(&json!("synthetic")) {
        return Ok((Position::default(), batches));
    }
    Ok((Position { epoch: int("epoch")?, document: int("document")?, example: int("example")? }, batches))
}

/// The background half: reads, tokenizes and packs, one batch ahead of the channel.
struct Producer {
    corpus: Corpus,
    tokenizer: Option<Tokenizer>,
    s: Settings,
    position: Position,
    /// The host's documents in `share_epoch`'s order.
    share: Vec<u32>,
    share_epoch: Option<u64>,
    /// The ids of the document at (epoch, document), while its examples are read.
    current: Option<((u64, u64), Vec<i64>)>,
    packer: Packer,
    /// The example that did not fit into the last batch, with its position: it opens the next batch.
    pending: Option<(Position, Vec<i64>)>,
    start: Position,
    produced: u64,
}

impl Producer {
    fn new(corpus: Corpus, tokenizer: Option<Tokenizer>, s: Settings, position: Position, produced: u64) -> Producer {
        let per_row = if !s.packing {
            Some(1)
        } else if s.max_segments_per_seq > 0 {
            Some(s.max_segments_per_seq as usize)
        } else {
            None
        };
        let packer = Packer::new(s.rows, s.len, per_row);
        Producer { corpus, tokenizer, s, position, share: Vec::new(), share_epoch: None, current: None, packer, pending: None, start: position, produced }
    }

    fn run(mut self, tx: std::sync::mpsc::SyncSender<Result<(Batch, Position), DataError>>) {
        loop {
            let item = match self.next_batch() {
                Ok(Some(b)) => Ok(b),
                Ok(None) if self.produced == 0 && self.start == Position::default() => {
                    Err(DataError::NoExamples { pattern: self.s.pattern.clone() })
                }
                Ok(None) => Err(DataError::Exhausted { num_epoch: self.s.num_epoch, batches: self.produced }),
                Err(e) => Err(e),
            };
            let last = item.is_err();
            if tx.send(item).is_err() || last {
                return;
            }
        }
    }

    /// The next batch and the position that follows it; `None` at the end of the data.
    fn next_batch(&mut self) -> Result<Option<(Batch, Position)>, DataError> {
        if let Some((_, window)) = self.pending.take() {
            assert!(self.packer.try_add(&window), "an example always fits an empty batch");
        }
        loop {
            match self.next_example()? {
                Some((at, window)) => {
                    if !self.packer.try_add(&window) {
                        self.pending = Some((at, window));
                        self.produced += 1;
                        return Ok(Some((self.packer.take(), at)));
                    }
                }
                None if self.packer.is_empty() => return Ok(None),
                None => {
                    self.produced += 1;
                    let end = Position { epoch: self.s.num_epoch as u64, document: 0, example: 0 };
                    return Ok(Some((self.packer.take(), end)));
                }
            }
        }
    }

    /// The next example's position and ids window; `None` after the last epoch.
    fn next_example(&mut self) -> Result<Option<(Position, Vec<i64>)>, DataError> {
        loop {
            let p = self.position;
            if p.epoch >= self.s.num_epoch as u64 {
                return Ok(None);
            }
            if self.share_epoch != Some(p.epoch) {
                let order = epoch_order(self.corpus.len(), self.s.seed, p.epoch, self.s.shuffle);
                self.share = host_share(&order, self.s.process_index, self.s.process_count);
                self.share_epoch = Some(p.epoch);
            }
            if p.document as usize >= self.share.len() {
                self.position = Position { epoch: p.epoch + 1, document: 0, example: 0 };
                continue;
            }
            let key = (p.epoch, p.document);
            if self.current.as_ref().map(|c| c.0) != Some(key) {
                let ids = self.document_ids(self.share[p.document as usize] as usize)?;
                self.current = Some((key, ids));
            }
            let ids = &self.current.as_ref().unwrap().1;
            if p.example as usize >= num_examples(ids.len(), self.s.len, self.s.truncate) {
                self.position = Position { document: p.document + 1, example: 0, ..p };
                continue;
            }
            let window = example_window(ids, self.s.len, p.example as usize).to_vec();
            self.position = Position { example: p.example + 1, ..p };
            return Ok(Some((p, window)));
        }
    }

    /// Token ids of corpus document `index`: text tokenized (`add_bos`, `add_eos`), ids as stored.
    fn document_ids(&mut self, index: usize) -> Result<Vec<i64>, DataError> {
        let ids = match self.corpus.get(index)? {
            Doc::Ids(ids) => ids,
            Doc::Text(text) => {
                if !self.s.tokenize {
                    let (path, record) = self.corpus.locate(index);
                    return Err(DataError::TextNotTokenized { path, record, column: self.s.column.clone() });
                }
                if self.tokenizer.is_none() {
                    self.tokenizer = Some(load_tokenizer(&self.s)?);
                }
                let tok = self.tokenizer.as_ref().unwrap();
                let map = |source| DataError::Tokenizer { path: self.s.tokenizer_path.clone().unwrap_or_default(), source };
                let mut ids = tok.encode(&text, self.s.add_bos).map_err(map)?;
                if self.s.add_eos {
                    ids.extend(tok.eos_ids().first());
                }
                ids
            }
        };
        if let Some(&id) = ids.iter().find(|&&id| id < 0 || id as usize >= self.s.vocab_size) {
            let (path, record) = self.corpus.locate(index);
            return Err(DataError::TokenOutOfRange { path, record, id, vocab_size: self.s.vocab_size });
        }
        Ok(ids)
    }
}
