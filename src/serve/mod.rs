//! Serving (`maxtext serve`): an OpenAI-compatible HTTP server on the decode programs, with continuous
//! batching (`engine`), per-request sampling on the host (`sampling`), the request and response types
//! (`api`), the Qwen3 chat template (`chat`), the HTTP routes (`http`), and MMLU scoring through the same
//! engine (`mmlu`).

pub mod api;
pub mod chat;
pub mod engine;
pub mod http;
pub mod mmlu;
pub mod output;
pub mod sampling;

pub use engine::{Engine, EngineError, EngineInfo, Finish, SeqEvent, SeqRequest, TokenLogprob};
pub use sampling::Sampling;
