//! `compile_topology` names (MaxText's `accelerator_to_spec_map`): how many devices a TPU slice has and the
//! topology string libtpu's `PJRT_TopologyDescription_Create` takes.

use super::error::ConfigError;

/// A TPU slice type such as `v5p-128`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpuTopology {
    /// The user-facing name (`v5p-128`).
    pub name: String,
    /// libtpu's topology name (`v5:4x4x4`), when known.
    pub topology_name: Option<String>,
    /// JAX devices (chips) per slice. In `v5p-N` and `v4-N`, N counts TensorCores: 2 per (megacore) chip.
    pub devices_per_slice: usize,
}

/// Chip-grid shapes MaxText uses for 3-D tori (v4, v5p), by chip count.
const TORUS_SHAPES: &[(usize, &str)] = &[
    (4, "2x2x1"),
    (8, "2x2x2"),
    (16, "2x2x4"),
    (32, "2x4x4"),
    (64, "4x4x4"),
    (128, "4x4x8"),
    (192, "4x4x12"),
    (256, "4x8x8"),
    (320, "4x4x20"),
    (384, "4x8x12"),
    (448, "4x4x28"),
    (512, "8x8x8"),
    (576, "4x12x12"),
    (1024, "8x8x16"),
    (2048, "8x16x16"),
    (4096, "16x16x16"),
];

/// Chip-grid shapes for the 2-D v5e / v6e slices, by chip count.
const GRID_SHAPES: &[(usize, &str)] =
    &[(1, "1x1"), (4, "2x2"), (8, "2x4"), (16, "4x4"), (32, "4x8"), (64, "8x8"), (128, "8x16"), (256, "16x16")];

impl TpuTopology {
    pub fn parse(name: &str) -> Result<TpuTopology, ConfigError> {
        let bad = || {
            ConfigError::Invalid(format!(
                "compile_topology={name} is not a TPU slice name such as v5p-8, v5p-128, v4-8, v5e-16, v6e-8 or tpu7x-8"
            ))
        };
        let (family, count) = name.rsplit_once('-').ok_or_else(bad)?;
        let n: usize = count.parse().map_err(|_| bad())?;
        let lookup = |table: &[(usize, &str)], chips: usize, prefix: &str| {
            table.iter().find(|(c, _)| *c == chips).map(|(_, s)| format!("{prefix}:{s}"))
        };
        let (devices, topology_name) = match family {
            "v5p" => (n / 2, lookup(TORUS_SHAPES, n / 2, "v5")),
            "v4" => (n / 2, lookup(TORUS_SHAPES, n / 2, "v4")),
            "v5e" | "v5litepod" => (n, lookup(GRID_SHAPES, n, "v5e")),
            "v6e" => (n, lookup(GRID_SHAPES, n, "v6e")),
            "tpu7x" => (n, lookup(TORUS_SHAPES, n / 2, "tpu7x")),
            _ => return Err(bad()),
        };
        if devices == 0 {
            return Err(bad());
        }
        Ok(TpuTopology { name: name.to_string(), topology_name, devices_per_slice: devices })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v5p_names_match_maxtext() {
        let t = TpuTopology::parse("v5p-8").unwrap();
        assert_eq!((t.devices_per_slice, t.topology_name.as_deref()), (4, Some("v5:2x2x1")));
        let t = TpuTopology::parse("v5p-64").unwrap();
        assert_eq!((t.devices_per_slice, t.topology_name.as_deref()), (32, Some("v5:2x4x4")));
        let t = TpuTopology::parse("v5p-128").unwrap();
        assert_eq!((t.devices_per_slice, t.topology_name.as_deref()), (64, Some("v5:4x4x4")));
        assert_eq!(TpuTopology::parse("v5e-16").unwrap().topology_name.as_deref(), Some("v5e:4x4"));
        assert_eq!(TpuTopology::parse("tpu7x-8").unwrap().topology_name.as_deref(), Some("tpu7x:2x2x1"));
        assert!(TpuTopology::parse("h100-8").is_err());
    }
}
