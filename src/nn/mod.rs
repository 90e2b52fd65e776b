//! Layers: each is a struct of traced parameters built by `new(cfg, &mut ParamBuilder)`, with a `forward`
//! that takes and returns tensors (state in, state out).

pub mod attention;
pub mod delta_rule;
pub mod flash_attention;
pub mod gated_delta;
pub mod moe;
pub mod moe_dispatch;
pub mod norm;
pub mod params;
pub mod rope;

pub use attention::GatedAttention;
pub use gated_delta::GatedDeltaNet;
pub use moe::SparseMoe;
pub use norm::{RmsNormGated, RmsNormOffset};
pub use params::{F32Casts, Init, ParamArg, ParamBuilder, ParamDecl};
