//! Models assembled from `nn` layers. Qwen3-Next is the one model: `qwen3_next` is the stateless forward
//! (training, logit checks), `decode` the same layers with prefill/decode state.

pub mod decode;
pub mod qwen3_next;

pub use decode::{forward_with_state, state_types, DecodeState, Pass};
pub use qwen3_next::{forward, forward_with_aux, DecoderLayer, ForwardInputs};
