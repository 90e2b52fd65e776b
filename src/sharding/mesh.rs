//! The device mesh from the parallelism keys. The arithmetic (MaxText's `fill_unspecified_mesh_axes`: one
//! `-1` per ICI / DCN group fills the remaining devices / slices; products must match) lives in
//! `crate::config::ParallelismConfig::mesh_shape`, so that a bad combination fails when the config loads.

use crate::config::{Config, ParallelismConfig};
use crate::ir::{LogicalAxisRules, Mesh, ShardingContext};

use super::ShardingError;

/// The mesh for `cfg`'s parallelism keys over `cfg.devices` (all `mesh_axes`, size-1 axes included).
pub fn device_mesh(cfg: &Config) -> Result<Mesh, ShardingError> {
    match &cfg.mesh_shape {
        Some(axes) => Ok(Mesh { axes: axes.clone() }),
        None => build_mesh(&cfg.parallelism, cfg.devices_per_slice(), cfg.devices.num_slices),
    }
}

impl LogicalAxisRules {
    /// The merged rules of a config.
    pub fn from_config(cfg: &Config) -> LogicalAxisRules {
        LogicalAxisRules::new(cfg.parallelism.logical_axis_rules.clone())
    }
}

/// The mesh and rules a program for `cfg` is traced with.
pub fn sharding_context(cfg: &Config) -> Result<ShardingContext, ShardingError> {
    Ok(ShardingContext { mesh: device_mesh(cfg)?, rules: LogicalAxisRules::from_config(cfg) })
}

/// The mesh for `par` with `devices_per_slice` devices in each of `num_slices` slices.
pub fn build_mesh(par: &ParallelismConfig, devices_per_slice: usize, num_slices: usize) -> Result<Mesh, ShardingError> {
    Ok(Mesh { axes: par.mesh_shape(devices_per_slice, num_slices)? })
}

/// The mesh without its size-1 axes (partition order is unchanged, since size-1 axes do not move it).
pub fn drop_size_one_axes(mesh: &Mesh) -> Mesh {
    Mesh { axes: mesh.axes.iter().filter(|(_, s)| *s != 1).cloned().collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_only_size_one() {
        let m = Mesh::new(&[("data", 1), ("fsdp", 4), ("tensor", 1), ("expert", 2)]);
        assert_eq!(drop_size_one_axes(&m), Mesh::new(&[("fsdp", 4), ("expert", 2)]));
    }
}
