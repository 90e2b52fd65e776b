//! A compiled `PJRT_Executable`, loaded on devices or not: what a topology compile (TPU AOT, no device
//! attached) returns, and what every [`super::LoadedExecutable`] is built from. Its metadata: name,
//! output shapes, optimized HLO, serialized form, memory statistics, cost analysis.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::buffer::dtype_from_raw;
use super::error::Result;
use super::hlo_text;
use super::plugin::{named_values, str_from_raw, Plugin};
use super::proto;
use super::sys::{self, Args};
use super::MemoryStats;
use crate::ir::DType;

/// A `PJRT_Executable`, destroyed on drop. Data it returns is copied out before that.
pub struct Executable {
    plugin: Arc<Plugin>,
    pub(crate) raw: *mut sys::PJRT_Executable,
}

// SAFETY: PJRT executables are thread-safe to query.
unsafe impl Send for Executable {}
unsafe impl Sync for Executable {}

impl Drop for Executable {
    fn drop(&mut self) {
        let mut args = sys::PJRT_Executable_Destroy_Args::new();
        args.executable = self.raw;
        if let Err(e) = call!(&self.plugin, PJRT_Executable_Destroy, &mut args) {
            tracing::warn!("destroying a PJRT_Executable: {e}");
        }
    }
}

impl Executable {
    /// Takes ownership of an executable the plugin returned.
    pub(crate) fn from_raw(plugin: &Arc<Plugin>, raw: *mut sys::PJRT_Executable) -> Executable {
        Executable { plugin: plugin.clone(), raw }
    }

    /// The executable's name (the module name).
    pub fn name(&self) -> Result<String> {
        let mut args = sys::PJRT_Executable_Name_Args::new();
        args.executable = self.raw;
        call!(&self.plugin, PJRT_Executable_Name, &mut args)?;
        // SAFETY: owned by the executable, copied before it is destroyed.
        Ok(unsafe { str_from_raw(args.executable_name, args.executable_name_size) })
    }

    /// Per-device (shard) shapes of the outputs.
    pub fn output_dims(&self) -> Result<Vec<Vec<i64>>> {
        let mut args = sys::PJRT_Executable_OutputDimensions_Args::new();
        args.executable = self.raw;
        call!(&self.plugin, PJRT_Executable_OutputDimensions, &mut args)?;
        if args.num_outputs == 0 || args.dim_sizes.is_null() {
            return Ok(vec![Vec::new(); args.num_outputs]);
        }
        // SAFETY: owned by the executable and copied before it is destroyed.
        let sizes = unsafe { std::slice::from_raw_parts(args.dim_sizes, args.num_outputs) };
        let total: usize = sizes.iter().sum();
        let flat = if total == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(args.dims, total) } };
        let mut out = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for &n in sizes {
            out.push(flat[at..at + n].to_vec());
            at += n;
        }
        Ok(out)
    }

    /// Element types of the outputs.
    pub fn output_dtypes(&self) -> Result<Vec<DType>> {
        let mut args = sys::PJRT_Executable_OutputElementTypes_Args::new();
        args.executable = self.raw;
        call!(&self.plugin, PJRT_Executable_OutputElementTypes, &mut args)?;
        if args.output_types.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: owned by the executable and copied before it is destroyed.
        unsafe { std::slice::from_raw_parts(args.output_types, args.num_output_types) }
            .iter()
            .map(|&t| dtype_from_raw(t))
            .collect()
    }

    /// The serialized optimized program and its format (`"hlo_with_config"` on the CPU plugin).
    pub fn optimized_program(&self) -> Result<(String, Vec<u8>)> {
        let plugin = &self.plugin;
        // The plugin overwrites `format` with its own (static) string.
        let wanted = "hlo_with_config";
        let mut program = sys::PJRT_Program::new();
        program.format = wanted.as_ptr() as *const _;
        program.format_size = wanted.len();
        let mut args = sys::PJRT_Executable_OptimizedProgram_Args::new();
        args.executable = self.raw;
        args.program = &mut program;
        call!(plugin, PJRT_Executable_OptimizedProgram, &mut args)?;
        let mut code = vec![0u8; program.code_size];
        program.code = code.as_mut_ptr() as *mut _;
        call!(plugin, PJRT_Executable_OptimizedProgram, &mut args)?;
        code.truncate(program.code_size);
        // SAFETY: the plugin points `format` at a string it owns (or leaves ours).
        let format = unsafe { str_from_raw(program.format, program.format_size) };
        Ok((format, code))
    }

    /// The optimized (and, under SPMD, partitioned) HLO module.
    pub fn optimized_hlo(&self) -> Result<proto::HloModuleProto> {
        let (format, code) = self.optimized_program()?;
        hlo_text::decode_module(&format, &code)
    }

    /// The optimized HLO as readable text (computations, instructions, shapes, operands).
    pub fn optimized_hlo_text(&self) -> Result<String> {
        Ok(hlo_text::render_module(&self.optimized_hlo()?))
    }

    /// The plugin's serialized form of the compiled executable (for the persistent compile cache).
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let mut a = sys::PJRT_Executable_Serialize_Args::new();
        a.executable = self.raw;
        call!(&self.plugin, PJRT_Executable_Serialize, &mut a)?;
        // SAFETY: `serialized_bytes` stays valid until the deleter runs on `serialized_executable`.
        let bytes = unsafe { std::slice::from_raw_parts(a.serialized_bytes as *const u8, a.serialized_bytes_size) }.to_vec();
        if let Some(deleter) = a.serialized_executable_deleter {
            // SAFETY: the plugin's own deleter for the object it returned, called once.
            unsafe { deleter(a.serialized_executable) };
        }
        Ok(bytes)
    }

    /// Compiled memory statistics (per device).
    pub fn memory_stats(&self) -> Result<MemoryStats> {
        let mut a = sys::PJRT_Executable_GetCompiledMemoryStats_Args::new();
        a.executable = self.raw;
        call!(&self.plugin, PJRT_Executable_GetCompiledMemoryStats, &mut a)?;
        Ok(MemoryStats {
            generated_code_size_in_bytes: a.generated_code_size_in_bytes,
            argument_size_in_bytes: a.argument_size_in_bytes,
            output_size_in_bytes: a.output_size_in_bytes,
            alias_size_in_bytes: a.alias_size_in_bytes,
            temp_size_in_bytes: a.temp_size_in_bytes,
            peak_memory_in_bytes: a.peak_memory_in_bytes,
            host_generated_code_size_in_bytes: a.host_generated_code_size_in_bytes,
            host_argument_size_in_bytes: a.host_argument_size_in_bytes,
            host_output_size_in_bytes: a.host_output_size_in_bytes,
            host_alias_size_in_bytes: a.host_alias_size_in_bytes,
            host_temp_size_in_bytes: a.host_temp_size_in_bytes,
        })
    }

    /// XLA's cost analysis (`flops`, `transcendentals`, `bytes accessed`, ...), as numbers.
    pub fn cost_analysis(&self) -> Result<BTreeMap<String, f64>> {
        let mut a = sys::PJRT_Executable_GetCostAnalysis_Args::new();
        a.executable = self.raw;
        call!(&self.plugin, PJRT_Executable_GetCostAnalysis, &mut a)?;
        // SAFETY: owned by the executable, copied before it is destroyed.
        let values = unsafe { named_values(a.properties, a.num_properties) };
        Ok(values.into_iter().filter_map(|(k, v)| v.as_f64().map(|x| (k, x))).collect())
    }

}
