//! The host runtime: host tensors, running programs on a client, and (later) the train/decode loops.

mod execute;
mod host;

pub use execute::{shard_host, unshard_host, RunError, Runtime};
pub use host::HostTensor;
