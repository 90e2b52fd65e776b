//! Errors of the training data pipeline: each names the key, file, record or column to fix.

use std::path::PathBuf;

use super::tokenizer::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset_type={0} is not supported by maxtext-rs: use dataset_type=synthetic, or dataset_type=hf with hf_path=json|parquet|text and hf_train_files=GLOB")]
    UnsupportedDatasetType(String),
    #[error("hf_path={0:?}: HuggingFace hub datasets are not read (no hub access); set hf_path=json|parquet|text and hf_train_files=GLOB (local or gs://)")]
    UnsupportedHfPath(String),
    #[error("dataset_type=hf with hf_path={hf_path} needs hf_train_files=GLOB (the files to train on, local or gs://)")]
    MissingTrainFiles { hf_path: String },
    #[error("hf_train_files={pattern:?} is not a valid glob: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error("hf_train_files={pattern:?} matches no files (check the path; in a bucket, the pattern is matched against the object names under its fixed prefix)")]
    NoFiles { pattern: String },
    #[error("hf_train_files={pattern:?}: cannot list the files: {source}")]
    Listing { pattern: String, source: crate::storage::StorageError },
    #[error("train_data_columns must name exactly one column for pre-training (use_sft=false), got {0:?}")]
    Columns(Vec<String>),
    #[error("JAX_DEFAULT_PRNG_IMPL={0:?} is not supported for dataset_type=synthetic: set unsafe_rbg (what MaxText's trainer uses; also the default when unset) or threefry2x32 (JAX's default key implementation)")]
    PrngImpl(String),
    #[error("dataset_type=synthetic: drawing the batch with jax.random's unsafe_rbg keys on the XLA CPU plugin failed: {0}")]
    Rng(String),
    #[error("{0} is not supported by the maxtext-rs data pipeline yet")]
    Unsupported(&'static str),

    #[error(transparent)]
    TokenizerType(TokenizerError),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Parquet { path: PathBuf, reason: String },
    #[error("{path}: record {record}: not valid JSON: {reason}")]
    Json { path: PathBuf, record: String, reason: String },
    #[error("{path}: line {line}: not valid UTF-8 text")]
    Utf8 { path: PathBuf, line: usize },
    #[error("{path}: {record}: no column {column:?} (columns: {available}); set train_data_columns to one of them")]
    MissingColumn { path: PathBuf, record: String, column: String, available: String },
    #[error("{path}: {record}: column {column:?} holds {found}; expected text (a string) or token ids (a list of non-negative integers)")]
    ColumnType { path: PathBuf, record: String, column: String, found: String },
    #[error("{path}: {record}: column {column:?} holds text but tokenize_train_data=false; set tokenize_train_data=true to tokenize it with tokenizer_path")]
    TextNotTokenized { path: PathBuf, record: String, column: String },
    #[error("{path}: {record}: token id {id} is outside the vocabulary (vocab_size={vocab_size}); was the data tokenized with another tokenizer?")]
    TokenOutOfRange { path: PathBuf, record: String, id: i64, vocab_size: usize },
    #[error("tokenizer_path={path}: {source}")]
    Tokenizer { path: String, source: TokenizerError },
    #[error("the text data needs a tokenizer: set tokenizer_type=huggingface and tokenizer_path=DIR (a HuggingFace tokenizer directory)")]
    NoTokenizer,
    #[error("the global batch of {rows} rows (global_batch_size_to_load) does not split evenly over process_count={process_count} hosts")]
    BatchSplit { rows: usize, process_count: usize },
    #[error("process_index={index} must be below process_count={count}")]
    ProcessIndex { index: usize, count: usize },
    #[error("host {process_index} has no training documents: {documents} documents split over {process_count} hosts")]
    EmptyShare { documents: usize, process_index: usize, process_count: usize },
    #[error("no document yields a training example (each needs at least 2 tokens) in hf_train_files={pattern:?}")]
    NoExamples { pattern: String },
    #[error("ran out of training data after num_epoch={num_epoch} epoch(s) ({batches} batches); raise num_epoch or lower steps")]
    Exhausted { num_epoch: usize, batches: u64 },
    #[error("bad data iterator state: {0}")]
    BadState(String),
    #[error("the saved data iterator state has {key}={saved} but this run has {key}={now}; restore with the same data settings")]
    StateMismatch { key: String, saved: String, now: String },
    #[error("the data pipeline stopped after an earlier error: {0}")]
    Stopped(String),
}
