//! The graph IR and tracer: an SSA graph of StableHLO-level ops over tensors with named axes.
//! `op.rs` mirrors StableHLO; `ops_*.rs` are the tracing methods with shape inference; `named.rs` is the
//! named-axis sugar above them; `program.rs` wraps a traced function with shardings and donation.

mod dtype;
mod graph;
mod named;
mod op;
mod ops_basic;
mod ops_compute;
mod ops_ragged;
mod ops_shape;
mod program;
mod sharding;
mod types;

pub use dtype::DType;
pub use graph::{Func, Graph, Node, ScopeGuard, Tensor, ValueRef};
pub use op::*;
pub use ops_ragged::ragged_dot_dense;
pub use ops_shape::index_const;
pub use program::{Group, Program};
pub use sharding::{resolve, LogicalAxisRules, Mesh, Sharding, ShardingContext};
pub use types::{AxisName, TensorType};
