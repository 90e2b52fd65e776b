//! Models assembled from `nn` layers. Qwen3-Next is the one model: `qwen3_next` holds its one decoder stack
//! (stateless forward, prefill and decode), `state` the decode state it carries.

pub mod qwen3_next;
pub mod state;

pub use qwen3_next::{forward, forward_for_grad, forward_with_aux, forward_with_state, DecoderLayer, ForwardInputs, LayerOutput, RESIDUAL};
pub use state::{state_types, DecodeState, Pass, STATE_LOGICAL, STATE_NAMES};
