//! Programs: a model traced into one `Program` with its arguments, shardings and donation.
//! `forward` (tokens -> logits), `prefill` and `decode_step` (with sampling); `train_step`. Arguments and
//! results are named groups (`inputs`, `params`, `mu`, `cache`, `rng`, `metrics`, ...) that the runtime binds by name.

mod decode;
mod eval;
mod forward;
mod init;
mod layout;
mod sampling;
mod serve;
mod train;

pub use forward::{forward_program, matmul_precision, model_params, param_decls, ForwardProgram};
pub use layout::{lay_out, param_shardings, INPUT_LOGICAL};
pub use eval::{eval_program, EvalProgram, EVAL_METRIC_NAMES};
pub use decode::{decode_program, prefill_program, split_layers_program, DecodeProgram, SplitProgram};
pub use init::{erfinv, init_key, init_program, splitmix};
pub use sampling::sample;
pub use serve::{decode_slots_program, prefill_insert_program, slot_state_types};
pub use train::{loss_function, state_groups, train_program, TrainProgram, TrainProgramError, BATCH_KEYS, LOSS_OUTPUTS, METRIC_NAMES, STATE_GROUPS};
