//! Running traced programs: emit, compile (cached), split host inputs into per-device shards, execute,
//! and reassemble the outputs. Arrays on the devices are [`DeviceArray`]s (one shard per device); a program
//! is executed with its argument groups bound by name ([`Runtime::execute`]) and its results come back as
//! named groups ([`Outputs`]). [`Runtime::run`] is the simple whole-host-arrays path for one-shot programs
//! (tests, tools).

use super::HostTensor;
use crate::compile::{DiskCache, ExecutableCache};
use crate::emit::emit_program;
use crate::ir::{Group, Mesh, Program, Sharding, TensorType};
use crate::pjrt::{Buffer, Client, CompileOptions, LoadedExecutable};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Pjrt(#[from] crate::pjrt::Error),
    #[error("argument {index} ({name}): expected {expected} but got {got}")]
    Input { index: usize, name: String, expected: String, got: String },
    #[error("program `{program}` takes {expected} arguments but {got} were given")]
    Arity { program: String, expected: usize, got: usize },
    #[error("program `{program}`: argument group `{group}` {problem}")]
    Binding { program: String, group: String, problem: String },
    #[error("program `{program}` needs {needed} devices (mesh {mesh:?}) but the client has {available}")]
    Devices { program: String, needed: i64, mesh: Vec<(String, i64)>, available: usize },
}

pub type Result<T> = std::result::Result<T, RunError>;

/// One array on the devices: its shard (or replica) on each addressable device, in device order.
pub type DeviceArray = Vec<Buffer>;

/// What an execution returned: its arrays, addressed by the program's result groups.
pub struct Outputs {
    groups: Vec<Group>,
    arrays: Vec<DeviceArray>,
}

impl Outputs {
    fn range(&self, name: &str) -> std::ops::Range<usize> {
        let g = self.groups.iter().find(|g| g.name == name);
        g.unwrap_or_else(|| panic!("no result group `{name}` (the program has {:?})", self.groups.iter().map(|g| &g.name).collect::<Vec<_>>())).range.clone()
    }

    /// The arrays of result group `name`.
    pub fn get(&self, name: &str) -> &[DeviceArray] {
        &self.arrays[self.range(name)]
    }

    /// Moves the arrays of result group `name` out (to keep them on device for the next step).
    pub fn take(&mut self, name: &str) -> Vec<DeviceArray> {
        self.range(name).map(|i| std::mem::take(&mut self.arrays[i])).collect()
    }
}

/// A client plus its executable cache.
pub struct Runtime {
    client: Client,
    cache: ExecutableCache,
    /// `compile_xla_flags`, parsed: added to every compilation's options.
    xla_flags: Vec<(String, String)>,
}

impl Runtime {
    pub fn new(client: Client) -> Runtime {
        Runtime { client, cache: ExecutableCache::new(), xla_flags: Vec::new() }
    }

    /// A runtime whose compilations carry `xla_flags` and persist in `disk` (`jax_cache_dir`).
    pub fn with_compile_settings(client: Client, disk: Option<DiskCache>, xla_flags: Vec<(String, String)>) -> Runtime {
        Runtime { client, cache: ExecutableCache::with_disk(disk), xla_flags }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn cache(&self) -> &ExecutableCache {
        &self.cache
    }

    /// Compile options for `program`: SPMD with Shardy when it spans several devices.
    pub fn compile_options(program: &Program) -> CompileOptions {
        let n = program.num_partitions();
        if n > 1 {
            CompileOptions::spmd(n)
        } else {
            CompileOptions::single_device()
        }
    }

    /// Emits and compiles `program` (cached by module text and options).
    pub fn compile(&self, program: &Program) -> Result<Arc<LoadedExecutable>> {
        let needed = program.num_partitions();
        if needed as usize > self.client.addressable_devices().len() {
            return Err(RunError::Devices {
                program: program.name.clone(),
                needed,
                mesh: program.mesh.as_ref().map(|m| m.axes.clone()).unwrap_or_default(),
                available: self.client.addressable_devices().len(),
            });
        }
        let text = {
            let _span = tracing::info_span!("emit", program = %program.name).entered();
            emit_program(program)
        };
        let mut options = Self::compile_options(program);
        options.xla_flags = self.xla_flags.clone();
        Ok(self.cache.get_or_compile(&self.client, &text, &options)?)
    }

    /// Uploads one host array as the per-device shards of argument `arg` of `program` (checked against the
    /// argument's type).
    pub fn upload_arg(&self, program: &Program, exe: &LoadedExecutable, arg: usize, x: &HostTensor) -> Result<DeviceArray> {
        let ty = &program.main.params[arg];
        if x.dtype != ty.dtype || x.dims != ty.dims {
            return Err(RunError::Input {
                index: arg,
                name: program.arg_names.get(arg).cloned().unwrap_or_default(),
                expected: format!("{}{:?}", ty.dtype, ty.dims),
                got: format!("{}{:?}", x.dtype, x.dims),
            });
        }
        let devices = exe.addressable_devices();
        let shards = shard_host(x, program.arg_shardings[arg].as_ref(), program.mesh.as_ref(), devices.len());
        shards
            .into_iter()
            .enumerate()
            .map(|(d, (bytes, dims))| Ok(self.client.buffer_from_bytes(&bytes, x.dtype, &dims, &devices[d])?))
            .collect()
    }

    /// Uploads host arrays as argument group `group` of `program`, sharded as the program says.
    pub fn upload_group(&self, program: &Program, exe: &LoadedExecutable, group: &str, xs: &[HostTensor]) -> Result<Vec<DeviceArray>> {
        let range = program.args(group);
        if range.len() != xs.len() {
            let problem = format!("takes {} arrays but {} were given", range.len(), xs.len());
            return Err(RunError::Binding { program: program.name.clone(), group: group.into(), problem });
        }
        range.zip(xs).map(|(a, x)| self.upload_arg(program, exe, a, x)).collect()
    }

    /// Runs `exe` (compiled from `program`) with every argument group bound by name.
    pub fn execute(&self, program: &Program, exe: &LoadedExecutable, args: &[(&str, &[DeviceArray])]) -> Result<Outputs> {
        let mut bound: Vec<Option<&DeviceArray>> = vec![None; program.main.params.len()];
        for (name, arrays) in args {
            let range = program.args(name);
            if range.len() != arrays.len() {
                let problem = format!("takes {} arrays but {} were bound", range.len(), arrays.len());
                return Err(RunError::Binding { program: program.name.clone(), group: name.to_string(), problem });
            }
            for (i, a) in range.zip(arrays.iter()) {
                bound[i] = Some(a);
            }
        }
        if let Some(g) = program.arg_groups.iter().find(|g| g.range.clone().any(|i| bound[i].is_none())) {
            return Err(RunError::Binding { program: program.name.clone(), group: g.name.clone(), problem: "was not bound".into() });
        }
        let devices = exe.addressable_devices().len();
        let per_device: Vec<Vec<&Buffer>> = (0..devices).map(|d| bound.iter().map(|a| &a.expect("checked above")[d]).collect()).collect();
        let outs = {
            let _span = tracing::info_span!("execute", program = %program.name).entered();
            exe.execute(&per_device)?
        };
        // Per device -> per array.
        let mut arrays: Vec<DeviceArray> = (0..program.main.results.len()).map(|_| Vec::with_capacity(devices)).collect();
        for device_outs in outs {
            for (r, b) in device_outs.into_iter().enumerate() {
                arrays[r].push(b);
            }
        }
        Ok(Outputs { groups: program.result_groups.clone(), arrays })
    }

    /// Result `r` of `program` (its shards in `array`) as one whole host array.
    pub fn download(&self, program: &Program, r: usize, array: &DeviceArray) -> Result<HostTensor> {
        let ty = program.main.value_type(program.main.results[r]).clone();
        let shards: Vec<Vec<u8>> = array.iter().map(|b| b.to_bytes()).collect::<std::result::Result<_, _>>()?;
        Ok(unshard_host(shards, &ty, program.result_shardings[r].as_ref(), program.mesh.as_ref()))
    }

    /// Result group `group` of an execution as whole host arrays.
    pub fn download_group(&self, program: &Program, outs: &Outputs, group: &str) -> Result<Vec<HostTensor>> {
        program.results(group).zip(outs.get(group)).map(|(r, a)| self.download(program, r, a)).collect()
    }

    /// Runs `program` on host inputs (every argument, in order) and returns whole host outputs.
    pub fn run(&self, program: &Program, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
        let exe = self.compile(program)?;
        if inputs.len() != program.main.params.len() {
            return Err(RunError::Arity { program: program.name.clone(), expected: program.main.params.len(), got: inputs.len() });
        }
        let arrays: Vec<DeviceArray> = inputs.iter().enumerate().map(|(i, x)| self.upload_arg(program, &exe, i, x)).collect::<Result<_>>()?;
        let groups: Vec<(&str, &[DeviceArray])> = program.arg_groups.iter().map(|g| (g.name.as_str(), &arrays[g.range.clone()])).collect();
        let outs = self.execute(program, &exe, &groups)?;
        (0..program.main.results.len()).map(|r| self.download(program, r, &outs.arrays[r])).collect()
    }
}

/// The shard of `x` for each partition (with its dims), following `sharding` over `mesh`.
pub fn shard_host(x: &HostTensor, sharding: Option<&Sharding>, mesh: Option<&Mesh>, parts: usize) -> Vec<(Vec<u8>, Vec<i64>)> {
    match (sharding, mesh) {
        (Some(s), Some(m)) if !s.is_replicated() => {
            let dims = crate::sharding::shard_dims(&x.dims, s, m);
            crate::sharding::split(&x.data, &x.dims, x.dtype.size_bytes(), s, m)
                .into_iter()
                .map(|b| (b, dims.clone()))
                .collect()
        }
        _ => (0..parts).map(|_| (x.data.clone(), x.dims.clone())).collect(),
    }
}

/// Reassembles a whole array from per-partition shards.
pub fn unshard_host(shards: Vec<Vec<u8>>, ty: &TensorType, sharding: Option<&Sharding>, mesh: Option<&Mesh>) -> HostTensor {
    match (sharding, mesh) {
        (Some(s), Some(m)) if !s.is_replicated() => {
            let data = crate::sharding::assemble(&shards, &ty.dims, ty.dtype.size_bytes(), s, m);
            HostTensor::from_bytes(ty.dtype, &ty.dims, data)
        }
        _ => HostTensor::from_bytes(ty.dtype, &ty.dims, shards.into_iter().next().expect("at least one device")),
    }
}
