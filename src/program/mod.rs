//! Programs: a model traced into one `Program` with its arguments, shardings and donation.
//! `forward` (tokens -> logits), `prefill` and `decode_step` (with sampling); `train_step` comes with its issue.

mod decode;
mod forward;
mod init;
mod sampling;
mod train;

pub use forward::{forward_program, matmul_precision, model_params, param_decls, param_shardings, ForwardProgram};
pub use decode::{decode_program, prefill_program, DecodeProgram, OUT_LOGITS, OUT_RNG, OUT_STATE, OUT_TOKEN};
pub use init::{erfinv, init_key, init_program, splitmix};
pub use sampling::sample;
pub use train::{loss_function, train_program, TrainProgram, TrainProgramError, BATCH_KEYS, METRIC_NAMES};
