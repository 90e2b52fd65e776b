//! Compiling for a device topology with no device attached (TPU AOT): libtpu describes a slice such as
//! `v5:4x4x4` (`PJRT_TopologyDescription_Create`) and compiles a program for it (`PJRT_Compile` with no
//! client). The result is a [`super::Executable`]: memory statistics, cost analysis, optimized HLO and a
//! serialized form that a TPU host of the same libtpu loads. Names and options that libtpu accepts:
//! `shared/reference/tpu-aot.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::compiled::Executable;
use super::error::{Error, Result};
use super::options::CompileOptions;
use super::plugin::{named_values, str_from_raw, Plugin, Value};
use super::sys::{self, Args};
use crate::config::TpuTopology;

/// A topology option (`PJRT_NamedValue` of `PJRT_TopologyDescription_Create`).
#[derive(Clone, Debug, PartialEq)]
pub enum TopologyOption {
    String(String),
    Int64(i64),
    Int64List(Vec<i64>),
}

/// libtpu's creation options for a slice, as MaxText's `accelerator_to_spec_map` gives them: v4 and v5p
/// chips are megacore with 2x2x1 chips per host, and a slice wraps into a torus once every dimension is at
/// least 4 chips (v5p-128 and up). Other families take libtpu's defaults.
pub fn slice_options(t: &TpuTopology, num_slices: i64) -> Vec<(&'static str, TopologyOption)> {
    let mut opts = vec![("num_slices", TopologyOption::Int64(num_slices))];
    let family = t.name.rsplit_once('-').map(|(f, _)| f).unwrap_or("");
    if matches!(family, "v5p" | "v4") {
        let dims: Vec<i64> = t.topology_name.as_deref().and_then(|n| n.split_once(':')).map(|(_, d)| d.split('x').filter_map(|x| x.parse().ok()).collect()).unwrap_or_default();
        let wrap = i64::from(dims.len() == 3 && dims.iter().all(|&d| d >= 4));
        opts.push(("chip_config_name", TopologyOption::String("megacore".into())));
        opts.push(("chips_per_host_bounds", TopologyOption::Int64List(vec![2, 2, 1])));
        opts.push(("wrap", TopologyOption::Int64List(vec![wrap; 3])));
    }
    opts
}

/// One device of a topology.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    /// The id a device assignment names (0.. on one slice, 100000.. under MegaScale).
    pub id: i64,
    pub process_index: i64,
    pub kind: String,
}

/// A `PJRT_TopologyDescription`, destroyed on drop.
pub struct Topology {
    plugin: Arc<Plugin>,
    raw: *mut sys::PJRT_TopologyDescription,
    name: String,
}

// SAFETY: a topology description is immutable once created.
unsafe impl Send for Topology {}
unsafe impl Sync for Topology {}

impl Drop for Topology {
    fn drop(&mut self) {
        let mut args = sys::PJRT_TopologyDescription_Destroy_Args::new();
        args.topology = self.raw;
        if let Err(e) = call!(&self.plugin, PJRT_TopologyDescription_Destroy, &mut args) {
            tracing::warn!("destroying a PJRT topology: {e}");
        }
    }
}

impl Topology {
    /// libtpu's topology `name` (`v5:2x4x4`) with its creation options (`chip_config_name`,
    /// `chips_per_host_bounds`, `num_slices`, `wrap`).
    pub fn create(plugin: &Arc<Plugin>, name: &str, options: &[(&str, TopologyOption)]) -> Result<Topology> {
        let mut named = Vec::with_capacity(options.len());
        for (key, value) in options {
            let mut nv = sys::PJRT_NamedValue::new();
            nv.name = key.as_ptr() as *const _;
            nv.name_size = key.len();
            match value {
                TopologyOption::String(s) => {
                    nv.type_ = sys::PJRT_NamedValue_kString;
                    nv.__bindgen_anon_1.string_value = s.as_ptr() as *const _;
                    nv.value_size = s.len();
                }
                TopologyOption::Int64(v) => {
                    nv.type_ = sys::PJRT_NamedValue_kInt64;
                    nv.__bindgen_anon_1.int64_value = *v;
                    nv.value_size = 1;
                }
                TopologyOption::Int64List(v) => {
                    nv.type_ = sys::PJRT_NamedValue_kInt64List;
                    nv.__bindgen_anon_1.int64_array_value = v.as_ptr();
                    nv.value_size = v.len();
                }
            }
            named.push(nv);
        }
        let mut args = sys::PJRT_TopologyDescription_Create_Args::new();
        args.topology_name = name.as_ptr() as *const _;
        args.topology_name_size = name.len();
        args.create_options = named.as_ptr();
        args.num_options = named.len();
        call!(plugin, PJRT_TopologyDescription_Create, &mut args)?;
        if args.topology.is_null() {
            return Err(Error::invalid(format!("PJRT_TopologyDescription_Create({name}) returned no topology")));
        }
        Ok(Topology { plugin: plugin.clone(), raw: args.topology, name: name.to_string() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topology's attributes (libtpu: `device_memory_bytes_limit`, `wrap`, `twist`).
    pub fn attributes(&self) -> Result<BTreeMap<String, Value>> {
        let mut args = sys::PJRT_TopologyDescription_Attributes_Args::new();
        args.topology = self.raw;
        call!(&self.plugin, PJRT_TopologyDescription_Attributes, &mut args)?;
        // SAFETY: owned by the topology, copied here.
        Ok(unsafe { named_values(args.attributes, args.num_attributes) }.into_iter().collect())
    }

    /// Bytes of memory per device (libtpu's `device_memory_bytes_limit`: 95.74 GiB on v5p), if said.
    pub fn device_memory_bytes(&self) -> Option<i64> {
        match self.attributes().ok()?.get("device_memory_bytes_limit")? {
            Value::Int64(v) => Some(*v),
            _ => None,
        }
    }

    /// The devices, in the plugin's order.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>> {
        let mut args = sys::PJRT_TopologyDescription_GetDeviceDescriptions_Args::new();
        args.topology = self.raw;
        call!(&self.plugin, PJRT_TopologyDescription_GetDeviceDescriptions, &mut args)?;
        let descs: &[*mut sys::PJRT_DeviceDescription] = if args.descriptions.is_null() {
            &[]
        } else {
            // SAFETY: owned by the topology, `num_descriptions` long.
            unsafe { std::slice::from_raw_parts(args.descriptions, args.num_descriptions) }
        };
        descs
            .iter()
            .map(|&d| {
                let mut id = sys::PJRT_DeviceDescription_Id_Args::new();
                id.device_description = d;
                call!(&self.plugin, PJRT_DeviceDescription_Id, &mut id)?;
                let mut pi = sys::PJRT_DeviceDescription_ProcessIndex_Args::new();
                pi.device_description = d;
                call!(&self.plugin, PJRT_DeviceDescription_ProcessIndex, &mut pi)?;
                let mut kind = sys::PJRT_DeviceDescription_Kind_Args::new();
                kind.device_description = d;
                call!(&self.plugin, PJRT_DeviceDescription_Kind, &mut kind)?;
                // SAFETY: owned by the description, copied here.
                let kind = unsafe { str_from_raw(kind.device_kind, kind.device_kind_size) };
                Ok(DeviceInfo { id: id.id as i64, process_index: pi.process_index as i64, kind })
            })
            .collect()
    }

    /// Compiles StableHLO text for this topology (no client, nothing loaded).
    pub fn compile_mlir(&self, text: &str, options: &CompileOptions) -> Result<Executable> {
        let options = options.encode()?;
        let mut code = text.as_bytes().to_vec();
        let format = "mlir";
        let mut program = sys::PJRT_Program::new();
        program.code = code.as_mut_ptr() as *mut _;
        program.code_size = code.len();
        program.format = format.as_ptr() as *const _;
        program.format_size = format.len();
        let mut args = sys::PJRT_Compile_Args::new();
        args.topology = self.raw;
        args.program = &program;
        args.compile_options = options.as_ptr() as *const _;
        args.compile_options_size = options.len();
        call!(&self.plugin, PJRT_Compile, &mut args)?;
        Ok(Executable::from_raw(&self.plugin, args.executable))
    }
}
