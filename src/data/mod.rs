//! Data: tokenizers (and, with the training issue, the input pipeline).

pub mod tokenizer;

pub use tokenizer::{Tokenizer, TokenizerError};
