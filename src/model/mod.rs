//! Models assembled from `nn` layers. Qwen3-Next is the one model.

pub mod qwen3_next;

pub use qwen3_next::{forward, DecoderLayer, ForwardInputs};
