//! Sharding from config: the device mesh built from the `ici_*` / `dcn_*` parallelism keys and the config's
//! logical-axis rules (resolved in `crate::ir::sharding`, the one place that does it), and host-side splitting of whole arrays into per-partition shards
//! (and back).
//!
//! Conventions shared with `crate::ir` and the emitter: a [`Mesh`] lists named axes in `mesh_axes` order;
//! partition `p` is the row-major position in that mesh (the last axis varies fastest), and partition `p`
//! runs on the `p`-th addressable device. A [`Sharding`] lists, per tensor dim, the mesh axes it is split
//! over, major to minor; mesh axes not named by any dim replicate the tensor.

mod host;
mod mesh;

pub use crate::ir::{resolve, LogicalAxisRules, Mesh, Sharding, ShardingContext};
pub use host::{assemble, extract_region, partition_coords, place_region, shard_dims, shard_offsets, split, unique_shards};
pub use crate::config::fill_unspecified;
pub use mesh::{build_mesh, device_mesh, drop_size_one_axes, sharding_context};

/// A mesh that cannot be built from the parallelism keys (the message names the keys and the numbers).
pub use crate::config::MeshError as ShardingError;
