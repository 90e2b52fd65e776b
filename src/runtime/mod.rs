//! The host runtime: host tensors, running programs on a client, and (later) the train/decode loops.

mod decode_params;
mod execute;
mod generate;
mod host;
mod init;
mod state;
mod trainer;

pub use decode_params::upload_decode_params;
pub use execute::{shard_host, unshard_host, DeviceArray, Outputs, RunError, Runtime};
pub use host::HostTensor;
pub use generate::{prefill_bucket, GenerateError, Generation, Generator};
pub use init::init_params;
pub use state::{device_bytes, for_each_shard, local_rows, upload_sharded, LocalPartitions, ShardBox, ShardSpec};
pub use trainer::{fresh_train_state, state_args, state_entries, StepOutput, Trainer};
