//! Data: tokenizers and the training (and eval) input pipeline (MaxText's batch layout, synthetic data, local
//! or gs:// json / parquet / text files with packing, seeded shuffling, per-host shares, exact resume).

pub mod batch;
pub mod error;
pub mod eval;
pub mod iterator;
pub mod packing;
pub mod prng;
pub mod remote;
pub mod shuffle;
pub mod source;
pub mod synthetic;
pub mod tokenizer;

pub use batch::Batch;
pub use error::DataError;
pub use eval::eval_data_config;
pub use iterator::DataIterator;
pub use source::{Corpus, Doc, FileFormat};
pub use tokenizer::{local_tokenizer_path, require_huggingface, TextStream, Tokenizer, TokenizerError};
