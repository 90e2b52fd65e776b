//! Programs: a model traced into one `Program` with its arguments, shardings and donation.
//! `forward` (tokens -> logits) today; `train_step`, `prefill` and `decode_step` come with their issues.

mod forward;

pub use forward::{forward_program, matmul_precision, model_params, param_decls, param_shardings, ForwardProgram};
