//! The subcommands' bodies (the CLI's edge: `anyhow` errors, printing).

pub mod check_logits;
pub mod compile;
pub mod convert;
pub mod decode;
pub mod eval;
pub mod export_hlo;
pub mod processes;
pub mod serve;
pub mod setup;
pub mod train;
pub mod train_eval;
