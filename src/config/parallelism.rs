//! The parallelism keys and the mesh shape they give (MaxText's `create_device_mesh` +
//! `max_utils.fill_unspecified_mesh_axes`).
//!
//! For each mesh axis (in `mesh_axes` order) the ICI value is its `ici_<name>_parallelism` key (`stage` <-
//! `ici_pipeline_parallelism`, `model` <- `ici_tensor_parallelism`), likewise for DCN. At most one ICI value
//! may be -1: it becomes `devices_per_slice / product(others)`, which must be a whole number >= 1, and the ICI
//! product must then equal the devices per slice. Same for DCN against the number of slices. An axis's size
//! is `ici * dcn` (MaxText's hybrid mesh puts the DCN factor major). `crate::sharding` turns the shape into a
//! `Mesh`.

use super::error::{ConfigError, Origin};
use super::raw::RawConfig;

/// A mesh that cannot be built from the parallelism keys; the message names the keys and the numbers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MeshError {
    #[error("at most one {kind} parallelism can be -1 (fill the remaining {what}), got -1 for {}", keys.join(", "))]
    MultipleFill { kind: String, what: String, keys: Vec<String> },

    #[error("cannot fill {key}=-1: {target} {what} is not a multiple of {expr} = {others}")]
    CannotFill { key: String, expr: String, others: i64, target: i64, what: String },

    #[error("{expr} = {product} but there are {target} {what}; make the product {target} or set one of them to -1 to fill")]
    Mismatch { expr: String, product: i64, target: i64, what: String },

    #[error("mesh axis `{axis}` in mesh_axes has no parallelism key (known: {known})")]
    UnknownMeshAxis { axis: String, known: String },
}

/// The `<prefix>_<name>_parallelism` names, in MaxText's order.
pub const PARALLELISM_NAMES: [&str; 13] = [
    "diloco",
    "data",
    "pipeline",
    "fsdp",
    "fsdp_transpose",
    "sequence",
    "context",
    "context_usp_ulysses",
    "context_autoregressive",
    "tensor",
    "tensor_sequence",
    "expert",
    "autoregressive",
];

/// The parallelism name behind a mesh axis (MaxText's `ici_map`): `stage` is pipeline parallelism, `model`
/// an alias of tensor. `Some(None)` for vLLM's `attn_dp` / `attn_dp_expert` axes, which are always 1;
/// `None` for a name MaxText does not know.
pub fn axis_parallelism_name(axis: &str) -> Option<Option<&'static str>> {
    match axis {
        "stage" => Some(Some("pipeline")),
        "model" => Some(Some("tensor")),
        "attn_dp" | "attn_dp_expert" => Some(None),
        other => PARALLELISM_NAMES.iter().find(|n| **n == other).map(|n| Some(*n)),
    }
}

/// One group of parallelism keys (`ici_*` or `dcn_*`): -1 = fill, otherwise >= 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Parallelism {
    /// `"ici"` or `"dcn"`.
    pub prefix: &'static str,
    /// (name, value) for every entry of [`PARALLELISM_NAMES`].
    pub values: Vec<(&'static str, i64)>,
}

impl Parallelism {
    fn from_raw(raw: &RawConfig, prefix: &'static str) -> Result<Parallelism, ConfigError> {
        let mut values = Vec::with_capacity(PARALLELISM_NAMES.len());
        for name in PARALLELISM_NAMES {
            let key = format!("{prefix}_{name}_parallelism");
            let v = raw.i64(&key)?;
            if v != -1 && v < 1 {
                return Err(ConfigError::BadValue {
                    key: key.clone(),
                    value: v.to_string(),
                    expected: "-1 (fill the remaining devices) or an integer >= 1".into(),
                    origin: raw.origin(&key).cloned().unwrap_or(Origin::Default),
                });
            }
            values.push((name, v));
        }
        Ok(Parallelism { prefix, values })
    }

    /// The value for a parallelism name such as `"fsdp"`.
    pub fn get(&self, name: &str) -> i64 {
        self.values.iter().find(|(n, _)| *n == name).map_or(1, |(_, v)| *v)
    }

    /// The config key of a parallelism name: `ici_fsdp_parallelism`.
    pub fn key(&self, name: &str) -> String {
        format!("{}_{name}_parallelism", self.prefix)
    }
}

/// Mesh and sharding-rule settings (built into a mesh by `crate::sharding`).
#[derive(Clone, Debug, PartialEq)]
pub struct ParallelismConfig {
    pub mesh_axes: Vec<String>,
    pub ici: Parallelism,
    pub dcn: Parallelism,
    /// `num_slices` as given (-1 = from compile_topology_num_slices, else 1).
    pub num_slices: i64,
    /// Merged logical axis rules, in order: (logical name, mesh axes).
    pub logical_axis_rules: Vec<(String, Vec<String>)>,
    pub data_sharding: Vec<Vec<String>>,
    pub input_data_sharding_logical_axes: Vec<String>,
}

impl ParallelismConfig {
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<ParallelismConfig, ConfigError> {
        let mesh_axes = raw.string_list("mesh_axes")?;
        for axis in &mesh_axes {
            if axis_parallelism_name(axis).is_none() {
                return Err(ConfigError::BadValue {
                    key: "mesh_axes".into(),
                    value: axis.clone(),
                    expected: format!(
                        "mesh axis names with a parallelism key ({}, stage, model)",
                        PARALLELISM_NAMES.iter().filter(|n| **n != "pipeline").copied().collect::<Vec<_>>().join(", ")
                    ),
                    origin: raw.origin("mesh_axes").cloned().unwrap_or(Origin::Default),
                });
            }
        }
        Ok(ParallelismConfig {
            mesh_axes,
            ici: Parallelism::from_raw(raw, "ici")?,
            dcn: Parallelism::from_raw(raw, "dcn")?,
            num_slices: raw.i64("num_slices")?,
            logical_axis_rules: raw.axis_rules("logical_axis_rules")?,
            data_sharding: raw.nested_string_list("data_sharding")?,
            input_data_sharding_logical_axes: raw.string_list("input_data_sharding_logical_axes")?,
        })
    }
}


impl ParallelismConfig {
    /// (key, value) per mesh axis for one group; axes without a key (vLLM's attn_dp) are a fixed 1.
    fn group_values(&self, group: &Parallelism) -> Result<Vec<(String, i64)>, MeshError> {
        self.mesh_axes
            .iter()
            .map(|axis| match axis_parallelism_name(axis) {
                Some(Some(name)) => Ok((group.key(name), group.get(name))),
                Some(None) => Ok((format!("{}({axis})", group.prefix), 1)),
                None => Err(MeshError::UnknownMeshAxis { axis: axis.clone(), known: PARALLELISM_NAMES.join(", ") }),
            })
            .collect()
    }

    /// (mesh axis, size) in `mesh_axes` order for `devices_per_slice` devices in each of `num_slices` slices,
    /// with the -1 entries filled.
    pub fn mesh_shape(&self, devices_per_slice: usize, num_slices: usize) -> Result<Vec<(String, i64)>, MeshError> {
        let what = if num_slices > 1 { "devices per slice" } else { "devices" };
        let ici = fill_unspecified(&self.group_values(&self.ici)?, devices_per_slice as i64, "ICI", what)?;
        let dcn = fill_unspecified(&self.group_values(&self.dcn)?, num_slices as i64, "DCN", "slices")?;
        Ok(self.mesh_axes.iter().zip(ici.iter().zip(&dcn)).map(|(axis, (i, d))| (axis.clone(), i * d)).collect())
    }
}

/// `key(v) * key(v) ...` for the values that are not 1 (or a note that all are 1).
fn product_expr(values: &[(String, i64)], kind: &str, skip: Option<usize>) -> String {
    let parts: Vec<String> = values
        .iter()
        .enumerate()
        .filter(|(i, (_, v))| Some(*i) != skip && *v != 1)
        .map(|(_, (k, v))| format!("{k}({v})"))
        .collect();
    let prefix = kind.to_ascii_lowercase();
    if parts.is_empty() {
        format!("the product of the other {prefix}_*_parallelism values (all 1)")
    } else {
        format!("{} (all other {prefix}_*_parallelism are 1)", parts.join(" * "))
    }
}

/// MaxText's `fill_unspecified_mesh_axes`: replaces the single -1 of `(key, value)` pairs so that the product
/// is `target` ("ICI" / "DCN" `kind`, `what` = "devices" / "slices" for messages).
pub fn fill_unspecified(values: &[(String, i64)], target: i64, kind: &str, what: &str) -> Result<Vec<i64>, MeshError> {
    let fills: Vec<usize> = values.iter().enumerate().filter(|(_, (_, v))| *v == -1).map(|(i, _)| i).collect();
    if fills.len() > 1 {
        return Err(MeshError::MultipleFill {
            kind: kind.to_string(),
            what: what.to_string(),
            keys: fills.iter().map(|&i| values[i].0.clone()).collect(),
        });
    }
    let mut sizes: Vec<i64> = values.iter().map(|(_, v)| *v).collect();
    if let Some(&i) = fills.first() {
        let others: i64 = sizes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, v)| *v).product();
        if others <= 0 || target % others != 0 || target / others < 1 {
            return Err(MeshError::CannotFill {
                key: values[i].0.clone(),
                expr: product_expr(values, kind, Some(i)),
                others,
                target,
                what: what.to_string(),
            });
        }
        sizes[i] = target / others;
    }
    let product: i64 = sizes.iter().product();
    if product != target {
        return Err(MeshError::Mismatch { expr: product_expr(values, kind, None), product, target, what: what.to_string() });
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(v: &[(&str, i64)]) -> Vec<(String, i64)> {
        v.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn fill_and_errors() {
        let v = vals(&[("ici_data_parallelism", 1), ("ici_fsdp_parallelism", -1), ("ici_tensor_parallelism", 2)]);
        assert_eq!(fill_unspecified(&v, 8, "ICI", "devices").unwrap(), vec![1, 4, 2]);
        let err = fill_unspecified(&v, 3, "ICI", "devices").unwrap_err().to_string();
        assert!(err.contains("ici_fsdp_parallelism") && err.contains("ici_tensor_parallelism(2)"), "{err}");
        let v = vals(&[("ici_fsdp_parallelism", 3), ("ici_tensor_parallelism", 1)]);
        let err = fill_unspecified(&v, 4, "ICI", "devices").unwrap_err().to_string();
        assert!(err.contains("ici_fsdp_parallelism(3)") && err.contains("= 3 but there are 4 devices"), "{err}");
        let v = vals(&[("ici_fsdp_parallelism", -1), ("ici_expert_parallelism", -1)]);
        let err = fill_unspecified(&v, 4, "ICI", "devices").unwrap_err().to_string();
        assert!(err.contains("ici_fsdp_parallelism, ici_expert_parallelism"), "{err}");
    }
}
