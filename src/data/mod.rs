//! Data: tokenizers and the training (and eval) input pipeline (MaxText's batch layout, synthetic data, local
//! json / parquet / text files with packing, seeded shuffling, per-host shares, exact resume).

pub mod batch;
pub mod error;
pub mod eval;
pub mod iterator;
pub mod packing;
pub mod shuffle;
pub mod source;
pub mod synthetic;
pub mod tokenizer;

pub use batch::Batch;
pub use error::DataError;
pub use eval::eval_data_config;
pub use iterator::DataIterator;
pub use source::{Corpus, Doc, FileFormat};
pub use tokenizer::{require_huggingface, TextStream, Tokenizer, TokenizerError};
