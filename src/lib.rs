//! maxtext-rs: MaxText's Qwen3-Next support rebuilt in Rust.
//!
//! The modules follow the data flow of DESIGN.md, top to bottom; a module imports only modules above it:
//! config -> ir -> nn -> model -> program -> emit / sharding -> pjrt -> compile -> runtime -> data ->
//! checkpoint -> serve; `storage` (local paths and gs://) sits under compile, data, checkpoint and metrics
//! and imports nothing of ours.

pub mod config;
pub mod ir;
pub mod nn;
pub mod model;
pub mod autodiff;
pub mod optim;
pub mod program;
pub mod emit;
pub mod sharding;
pub mod pjrt;
pub mod compile;
pub mod runtime;
pub mod storage;
pub mod distributed;
pub mod data;
pub mod checkpoint;
pub mod metrics;
pub mod serve;
