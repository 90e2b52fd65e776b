//! Checkpoints: HuggingFace safetensors import (and the inverse mapping for export).
//!
//! The Orbax side (MaxText's on-disk layout) lives beside this module; HF names appear only in [`hf`].

pub mod hf;
pub mod orbax;
