//! Protobuf messages generated from `proto/*.proto` by build.rs (prost): XLA's compile options and a
//! read-only subset of the HLO module protos. Field numbers are upstream XLA's.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/xla.rs"));
