//! Programs: a model traced into one `Program` with its arguments, shardings and donation.
//! `forward` (tokens -> logits), `prefill` and `decode_step` (with sampling); `train_step` comes with its issue.

mod decode;
mod forward;
mod sampling;
mod serve;
mod train;

pub use forward::{forward_program, matmul_precision, model_params, param_decls, param_shardings, ForwardProgram};
pub use decode::{decode_program, prefill_program, DecodeProgram, OUT_LOGITS, OUT_RNG, OUT_STATE, OUT_TOKEN};
pub use sampling::sample;
pub use serve::{decode_slots_program, prefill_insert_program, slot_state_types, INSERT_OUT_STATE, INSERT_STATE_ARG, SLOTS_OUT_STATE, SLOTS_STATE_ARG};
pub use train::{loss_function, train_program, TrainProgram, TrainProgramError, BATCH_KEYS, METRIC_NAMES};
