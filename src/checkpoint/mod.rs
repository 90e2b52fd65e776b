//! Checkpoints: Orbax (MaxText's on-disk layout, [`orbax`]), model parameters inside it ([`params`]), the
//! full train state ([`train_state`]), and HuggingFace safetensors import / export ([`hf`]). HF names
//! appear only in [`hf`].

pub mod hf;
pub mod nnx_aux;
pub mod orbax;
pub mod params;
pub mod train_state;
