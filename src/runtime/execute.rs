//! Running traced programs: emit, compile (cached), split host inputs into per-device shards, execute,
//! and reassemble the outputs. Arrays on the devices are [`DeviceArray`]s (one shard per device); a program
//! is executed with its argument groups bound by name ([`Runtime::execute`]) and its results come back as
//! named groups ([`Outputs`]). [`Runtime::run`] is the simple whole-host-arrays path for one-shot programs
//! (tests, tools).

use super::state::LocalPartitions;
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

    /// Emits and compiles `program` (cached by module text and options). On a multi-process client (one
    /// whose devices span several processes) a program spans either every device of the run, partition
    /// `p` on the client's `p`-th device (JAX's `jax.devices()` order), or some of this process's own.
    pub fn compile(&self, program: &Program) -> Result<Arc<LoadedExecutable>> {
        let needed = program.num_partitions() as usize;
        let (all, local) = (self.client.devices(), self.client.addressable_devices());
        let multi_process = all.len() > local.len();
        let ids = |d: &[crate::pjrt::Device]| d.iter().take(needed).map(|d| d.id() as i64).collect::<Vec<_>>();
        let assignment = match (multi_process, needed <= local.len()) {
            (false, true) => None,
            (true, true) => Some(ids(local)),
            (true, false) if needed == all.len() => Some(ids(all)),
            _ => {
                return Err(RunError::Devices {
                    program: program.name.clone(),
                    needed: needed as i64,
                    mesh: program.mesh.as_ref().map(|m| m.axes.clone()).unwrap_or_default(),
                    available: if multi_process { all.len() } else { local.len() },
                })
            }
        };
        let mut options = Self::compile_options(program);
        if let Some(ids) = assignment {
            options = options.with_device_assignment(ids);
        }
        options.xla_flags = self.xla_flags.clone();
        let text = {
            let _span = tracing::info_span!("emit", program = %program.name).entered();
            emit_program(program)
        };
        Ok(self.cache.get_or_compile(&self.client, &text, &options)?)
    }

    /// The mesh partition of each addressable device of `exe` (compiled from `program`), in their order:
    /// 0, 1, ... when the program runs on this process's devices alone; for a program over every process's
    /// devices, each device's place in the device assignment [`Runtime::compile`] gives.
    pub fn local_partitions(&self, program: &Program, exe: &LoadedExecutable) -> LocalPartitions {
        let (all, local) = (self.client.devices(), exe.addressable_devices());
        if program.num_partitions() as usize <= local.len() {
            return LocalPartitions::all(local.len());
        }
        let partitions = local.iter().map(|d| all.iter().position(|a| a.id() == d.id()).expect("an addressable device is one of the client's")).collect();
        LocalPartitions { partitions, multi_process: true }
    }

    /// The global rows `lo..hi` of `program`'s `batch` group that this process's devices hold (all rows on
    /// one process), or `None` when they are not one contiguous block.
    pub fn local_batch_rows(&self, program: &Program, exe: &LoadedExecutable) -> Option<(i64, i64)> {
        super::state::local_rows(Self::arg_spec(program, program.args("batch").start), &self.local_partitions(program, exe))
    }

    /// The ids of the devices holding partitions 0, 1, ... of a program compiled on `n` devices (for a
    /// checkpoint's sharding record), as [`Runtime::compile`] assigns them.
    pub fn partition_device_ids(&self, n: usize) -> Vec<i64> {
        let local = self.client.addressable_devices();
        let ids = if n <= local.len() { local } else { self.client.devices() };
        ids.iter().take(n).map(|d| d.id() as i64).collect()
    }

    /// Uploads one host array as the per-device shards of argument `arg` of `program` (checked against the
    /// argument's type).
    pub fn upload_arg(&self, program: &Program, exe: &LoadedExecutable, arg: usize, x: &HostTensor) -> Result<DeviceArray> {
        self.upload_arg_rows(program, exe, arg, x, 0)
    }

    /// Uploads `x`, rows `row0..row0 + x.dims[0]` of argument `arg` of `program` (a process's share of a
    /// global batch; all of it when the dims match): each of this process's devices gets its shard, which
    /// must lie within those rows.
    pub fn upload_arg_rows(&self, program: &Program, exe: &LoadedExecutable, arg: usize, x: &HostTensor, row0: i64) -> Result<DeviceArray> {
        let ty = &program.main.params[arg];
        let name = || program.arg_names.get(arg).cloned().unwrap_or_default();
        let rows_fit = !x.dims.is_empty() && x.dims[1..] == ty.dims[1..] && row0 >= 0 && row0 + x.dims[0] <= ty.dims[0];
        if x.dtype != ty.dtype || !(x.dims == ty.dims || rows_fit) {
            let got = format!("{}{:?}{}", x.dtype, x.dims, if row0 > 0 { format!(" at row {row0}") } else { String::new() });
            return Err(RunError::Input { index: arg, name: name(), expected: format!("{}{:?}", ty.dtype, ty.dims), got });
        }
        let elem = x.dtype.size_bytes();
        let devices = exe.addressable_devices();
        let local = self.local_partitions(program, exe);
        crate::runtime::upload_sharded(&self.client, devices, &local, Self::arg_spec(program, arg), |o: &[i64], d: &[i64]| {
            let mut at = o.to_vec();
            if !at.is_empty() {
                at[0] -= row0;
            }
            if !at.is_empty() && (at[0] < 0 || at[0] + d[0] > x.dims[0]) {
                let got = format!("rows {row0}..{} of the batch", row0 + x.dims[0]);
                let expected = format!("rows {}..{} on one of this process's devices", o[0], o[0] + d[0]);
                return Err(RunError::Input { index: arg, name: name(), expected, got });
            }
            Ok(crate::sharding::extract_region(&x.data, &x.dims, &at, d, elem))
        })
    }

    /// Uploads host arrays as argument group `group` of `program`, sharded as the program says.
    pub fn upload_group(&self, program: &Program, exe: &LoadedExecutable, group: &str, xs: &[HostTensor]) -> Result<Vec<DeviceArray>> {
        self.upload_group_rows(program, exe, group, xs, 0)
    }

    /// As [`Runtime::upload_group`], each array holding rows `row0..` of its argument
    /// ([`Runtime::upload_arg_rows`]).
    pub fn upload_group_rows(&self, program: &Program, exe: &LoadedExecutable, group: &str, xs: &[HostTensor], row0: i64) -> Result<Vec<DeviceArray>> {
        let range = program.args(group);
        if range.len() != xs.len() {
            let problem = format!("takes {} arrays but {} were given", range.len(), xs.len());
            return Err(RunError::Binding { program: program.name.clone(), group: group.into(), problem });
        }
        range.zip(xs).map(|(a, x)| self.upload_arg_rows(program, exe, a, x, row0)).collect()
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

    /// Result `r` of `program` (its shards in `array`) as one whole host array. A replicated result comes
    /// from the first device; a sharded one needs every shard on this process.
    pub fn download(&self, program: &Program, r: usize, array: &DeviceArray) -> Result<HostTensor> {
        let ty = program.main.value_type(program.main.results[r]).clone();
        let sharding = program.result_shardings[r].as_ref().filter(|s| !s.is_replicated());
        let needed = program.mesh.as_ref().filter(|_| sharding.is_some()).map_or(1, |m| m.num_devices());
        if array.len() < needed as usize {
            let mesh = program.mesh.as_ref().map(|m| m.axes.clone()).unwrap_or_default();
            return Err(RunError::Devices { program: format!("{} (result {r} whole on one process)", program.name), needed, mesh, available: array.len() });
        }
        let shards: Vec<Vec<u8>> = array[..needed as usize].iter().map(|b| b.to_bytes()).collect::<std::result::Result<_, _>>()?;
        Ok(unshard_host(shards, &ty, sharding, program.mesh.as_ref()))
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
