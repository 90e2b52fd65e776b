//! Compilation and `PJRT_LoadedExecutable`: execute, metadata, optimized HLO, stats.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};


use super::buffer::Buffer;
use super::compiled::Executable;
use super::client::{Client, ClientInner};
use super::device::Device;
use super::error::{Error, Result};
use super::event::Event;
use super::hlo_text::{self, ParamSig};
use super::options::CompileOptions;
use super::plugin::str_from_raw;
use super::proto;
use super::sys::{self, Args};
use crate::ir::DType;

/// `PJRT_Executable_GetCompiledMemoryStats` (per device; the CPU plugin leaves the host_* and
/// generated-code fields at 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub generated_code_size_in_bytes: i64,
    pub argument_size_in_bytes: i64,
    pub output_size_in_bytes: i64,
    pub alias_size_in_bytes: i64,
    pub temp_size_in_bytes: i64,
    pub peak_memory_in_bytes: i64,
    pub host_generated_code_size_in_bytes: i64,
    pub host_argument_size_in_bytes: i64,
    pub host_output_size_in_bytes: i64,
    pub host_alias_size_in_bytes: i64,
    pub host_temp_size_in_bytes: i64,
}

/// A compiled program loaded on its devices; destroyed on drop (before its client).
pub struct LoadedExecutable {
    client: Arc<ClientInner>,
    raw: *mut sys::PJRT_LoadedExecutable,
    num_outputs: usize,
    devices: Vec<Device>,
    /// Per-device parameter shapes of the optimized entry computation (None: unknown, not checked).
    params: OnceLock<Option<Vec<ParamSig>>>,
}

// SAFETY: PJRT executables may be executed concurrently from several threads.
unsafe impl Send for LoadedExecutable {}
unsafe impl Sync for LoadedExecutable {}

impl Drop for LoadedExecutable {
    fn drop(&mut self) {
        let mut args = sys::PJRT_LoadedExecutable_Destroy_Args::new();
        args.executable = self.raw;
        if let Err(e) = call!(&self.client.plugin, PJRT_LoadedExecutable_Destroy, &mut args) {
            tracing::warn!("destroying a PJRT executable: {e}");
        }
    }
}

impl Client {
    /// Compiles StableHLO given as MLIR text (or bytecode) with entry function `main`.
    pub fn compile_mlir(&self, text: &str, options: &CompileOptions) -> Result<LoadedExecutable> {
        self.compile_program(text.as_bytes(), "mlir", options)
    }

    /// Compiles a program in a PJRT format (`"mlir"`, `"hlo"`, `"hlo_with_config"`).
    pub fn compile_program(&self, code: &[u8], format: &str, options: &CompileOptions) -> Result<LoadedExecutable> {
        let options = options.encode()?;
        let plugin = self.plugin();
        // The C struct takes a mutable pointer; give it a private copy.
        let mut code = code.to_vec();
        let mut program = sys::PJRT_Program::new();
        program.code = code.as_mut_ptr() as *mut _;
        program.code_size = code.len();
        program.format = format.as_ptr() as *const _;
        program.format_size = format.len();
        let mut args = sys::PJRT_Client_Compile_Args::new();
        args.client = self.inner().raw;
        args.program = &program;
        args.compile_options = options.as_ptr() as *const _;
        args.compile_options_size = options.len();
        call!(plugin, PJRT_Client_Compile, &mut args)?;
        self.wrap_loaded(args.executable)
    }

    /// Loads an executable [`LoadedExecutable::serialize`] wrote, compiled by this plugin version for
    /// this client's devices (the persistent compile cache's read side).
    pub fn deserialize_executable(&self, bytes: &[u8]) -> Result<LoadedExecutable> {
        let mut args = sys::PJRT_Executable_DeserializeAndLoad_Args {
            struct_size: sys::PJRT_Executable_DeserializeAndLoad_Args_STRUCT_SIZE as usize,
            ..Default::default()
        };
        args.client = self.inner().raw;
        args.serialized_executable = bytes.as_ptr() as *const _;
        args.serialized_executable_size = bytes.len();
        call!(self.plugin(), PJRT_Executable_DeserializeAndLoad, &mut args)?;
        self.wrap_loaded(args.loaded_executable)
    }

    /// Takes ownership of a loaded executable the plugin returned: its output count and devices.
    fn wrap_loaded(&self, raw: *mut sys::PJRT_LoadedExecutable) -> Result<LoadedExecutable> {
        let plugin = self.plugin();
        let mut exe = LoadedExecutable {
            client: self.inner().clone(),
            raw,
            num_outputs: 0,
            devices: Vec::new(),
            params: OnceLock::new(),
        };
        exe.num_outputs = {
            let e = exe.executable()?;
            let mut n = sys::PJRT_Executable_NumOutputs_Args::new();
            n.executable = e.raw;
            call!(plugin, PJRT_Executable_NumOutputs, &mut n)?;
            n.num_outputs
        };
        let mut a = sys::PJRT_LoadedExecutable_AddressableDevices_Args::new();
        a.executable = exe.raw;
        call!(plugin, PJRT_LoadedExecutable_AddressableDevices, &mut a)?;
        let raw_devices: &[*mut sys::PJRT_Device] = if a.addressable_devices.is_null() {
            &[]
        } else {
            // SAFETY: owned by the executable, `num_addressable_devices` long.
            unsafe { std::slice::from_raw_parts(a.addressable_devices, a.num_addressable_devices) }
        };
        exe.devices = raw_devices
            .iter()
            .map(|&p| match self.devices().iter().find(|d| d.raw == p) {
                Some(d) => Ok(d.clone()),
                None => Device::from_raw(self.inner(), p),
            })
            .collect::<Result<_>>()?;
        Ok(exe)
    }
}

impl LoadedExecutable {
    /// The compiled `PJRT_Executable` behind this loaded one.
    pub fn executable(&self) -> Result<Executable> {
        let mut args = sys::PJRT_LoadedExecutable_GetExecutable_Args::new();
        args.loaded_executable = self.raw;
        call!(&self.client.plugin, PJRT_LoadedExecutable_GetExecutable, &mut args)?;
        Ok(Executable::from_raw(&self.client.plugin, args.executable))
    }

    /// Number of outputs per device (results are never tupled).
    pub fn num_outputs(&self) -> usize {
        self.num_outputs
    }

    /// The devices the executable runs on, in logical partition order: `execute`'s argument list `p`
    /// must hold buffers on `addressable_devices()[p]`.
    pub fn addressable_devices(&self) -> &[Device] {
        &self.devices
    }

    /// Runs on every addressable device. `args[p]` are the arguments for partition `p` (on
    /// `addressable_devices()[p]`); returns `outputs[p]`. Waits for completion and surfaces errors.
    pub fn execute(&self, args: &[Vec<&Buffer>]) -> Result<Vec<Vec<Buffer>>> {
        self.execute_with(args, &[])
    }

    /// As [`execute`](Self::execute), but the arguments at `non_donatable` (indices into each
    /// argument list) are never donated, even where the program aliases them to an output.
    pub fn execute_with(&self, args: &[Vec<&Buffer>], non_donatable: &[i64]) -> Result<Vec<Vec<Buffer>>> {
        let plugin = &self.client.plugin;
        let num_args = self.check_arguments(args)?;
        if let Some(&bad) = non_donatable.iter().find(|&&i| i < 0 || i as usize >= num_args) {
            return Err(Error::invalid(format!("non_donatable index {bad} out of range for {num_args} arguments")));
        }
        let num_devices = self.devices.len();
        let arg_ptrs: Vec<Vec<*mut sys::PJRT_Buffer>> =
            args.iter().map(|list| list.iter().map(|b| b.raw).collect()).collect();
        let arg_lists: Vec<*const *mut sys::PJRT_Buffer> = arg_ptrs.iter().map(|l| l.as_ptr()).collect();
        let mut out_ptrs: Vec<Vec<*mut sys::PJRT_Buffer>> =
            (0..num_devices).map(|_| vec![std::ptr::null_mut(); self.num_outputs]).collect();
        let out_lists: Vec<*mut *mut sys::PJRT_Buffer> = out_ptrs.iter_mut().map(|l| l.as_mut_ptr()).collect();
        let mut events: Vec<*mut sys::PJRT_Event> = vec![std::ptr::null_mut(); num_devices];

        let mut options = sys::PJRT_ExecuteOptions::new();
        options.non_donatable_input_indices = non_donatable.as_ptr();
        options.num_non_donatable_input_indices = non_donatable.len();
        let mut exec = sys::PJRT_LoadedExecutable_Execute_Args::new();
        exec.executable = self.raw;
        exec.options = &mut options;
        exec.argument_lists = arg_lists.as_ptr();
        exec.num_devices = num_devices;
        exec.num_args = num_args;
        exec.output_lists = out_lists.as_ptr();
        exec.device_complete_events = events.as_mut_ptr();
        let status = call!(plugin, PJRT_LoadedExecutable_Execute, &mut exec);

        // Take ownership of whatever the plugin returned before looking at the status.
        drop(out_lists);
        let outputs: Vec<Vec<Buffer>> = out_ptrs
            .into_iter()
            .map(|l| l.into_iter().filter(|p| !p.is_null()).map(|p| Buffer::from_raw(&self.client, p)).collect())
            .collect();
        let events: Vec<Event> = events.into_iter().filter_map(|e| Event::from_raw(plugin, e)).collect();
        status?;
        let mut first_err = None;
        for e in events {
            if let Err(err) = e.wait() {
                first_err.get_or_insert(err);
            }
        }
        if let Some(err) = first_err {
            return Err(err);
        }
        if outputs.iter().any(|o| o.len() != self.num_outputs) {
            return Err(Error::invalid("the plugin returned fewer outputs than the executable has"));
        }
        Ok(outputs)
    }

    /// Validates the argument lists before calling in; returns the number of arguments per device.
    fn check_arguments(&self, args: &[Vec<&Buffer>]) -> Result<usize> {
        let n_dev = self.devices.len();
        if args.len() != n_dev {
            return Err(Error::invalid(format!(
                "execute got argument lists for {} device(s), but the executable runs on {n_dev} ({})",
                args.len(),
                self.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        let num_args = args.first().map_or(0, |a| a.len());
        if let Some((p, l)) = args.iter().enumerate().find(|(_, l)| l.len() != num_args) {
            return Err(Error::invalid(format!(
                "argument list {p} has {} arguments, but list 0 has {num_args}",
                l.len()
            )));
        }
        let params = self.params.get_or_init(|| self.parameter_signature());
        if let Some(params) = params {
            if params.len() != num_args {
                return Err(Error::invalid(format!(
                    "the executable takes {} argument(s) per device, but {num_args} were given",
                    params.len()
                )));
            }
        }
        for (p, list) in args.iter().enumerate() {
            let device = &self.devices[p];
            for (i, b) in list.iter().enumerate() {
                if b.client.id != self.client.id {
                    return Err(Error::invalid(format!("argument {i} (partition {p}) belongs to another client")));
                }
                if b.is_deleted()? {
                    return Err(Error::invalid(format!(
                        "argument {i} (partition {p}) was deleted or donated to an earlier execution"
                    )));
                }
                let on = b.device_raw()?;
                if on != device.raw {
                    let on = Device::from_raw(&self.client, on).map(|d| d.to_string()).unwrap_or_default();
                    return Err(Error::invalid(format!(
                        "argument {i} for partition {p} is on device {on}, but partition {p} runs on {device}"
                    )));
                }
                if let Some(params) = params {
                    let want = &params[i];
                    let (dtype, dims) = (b.dtype()?, b.dims()?);
                    if Some(dtype) != want.dtype || dims != want.dims {
                        return Err(Error::invalid(format!(
                            "argument {i} (partition {p}) is {dtype}{dims:?}, but the executable expects {want}"
                        )));
                    }
                }
            }
        }
        Ok(num_args)
    }

    fn parameter_signature(&self) -> Option<Vec<ParamSig>> {
        let (format, code) = self.optimized_program().ok()?;
        hlo_text::entry_signature(&format, &code)
    }

    /// See [`Executable::name`].
    pub fn name(&self) -> Result<String> {
        self.executable()?.name()
    }

    /// See [`Executable::output_dims`].
    pub fn output_dims(&self) -> Result<Vec<Vec<i64>>> {
        self.executable()?.output_dims()
    }

    /// See [`Executable::output_dtypes`].
    pub fn output_dtypes(&self) -> Result<Vec<DType>> {
        self.executable()?.output_dtypes()
    }

    /// See [`Executable::optimized_program`].
    pub fn optimized_program(&self) -> Result<(String, Vec<u8>)> {
        self.executable()?.optimized_program()
    }

    /// See [`Executable::optimized_hlo`].
    pub fn optimized_hlo(&self) -> Result<proto::HloModuleProto> {
        self.executable()?.optimized_hlo()
    }

    /// See [`Executable::optimized_hlo_text`].
    pub fn optimized_hlo_text(&self) -> Result<String> {
        self.executable()?.optimized_hlo_text()
    }

    /// See [`Executable::serialize`].
    pub fn serialize(&self) -> Result<Vec<u8>> {
        self.executable()?.serialize()
    }

    /// See [`Executable::memory_stats`].
    pub fn memory_stats(&self) -> Result<MemoryStats> {
        self.executable()?.memory_stats()
    }

    /// See [`Executable::cost_analysis`].
    pub fn cost_analysis(&self) -> Result<BTreeMap<String, f64>> {
        self.executable()?.cost_analysis()
    }

    /// The plugin's fingerprint of the compiled executable.
    pub fn fingerprint(&self) -> Result<String> {
        let e = self.executable()?;
        let mut a = sys::PJRT_Executable_Fingerprint_Args::new();
        a.executable = e.raw;
        match call!(&self.client.plugin, PJRT_Executable_Fingerprint, &mut a) {
            // SAFETY: owned by `e`, copied before it is destroyed.
            Ok(()) => Ok(unsafe { str_from_raw(a.executable_fingerprint, a.executable_fingerprint_size) }),
            Err(Error::Unimplemented(_)) => {
                let mut l = sys::PJRT_LoadedExecutable_Fingerprint_Args::new();
                l.executable = self.raw;
                call!(&self.client.plugin, PJRT_LoadedExecutable_Fingerprint, &mut l)?;
                // SAFETY: owned by the loaded executable.
                Ok(unsafe { str_from_raw(l.executable_fingerprint, l.executable_fingerprint_size) })
            }
            Err(e) => Err(e),
        }
    }
}

impl std::fmt::Debug for LoadedExecutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedExecutable")
            .field("num_outputs", &self.num_outputs)
            .field("devices", &self.devices.iter().map(|d| d.id()).collect::<Vec<_>>())
            .finish()
    }
}
