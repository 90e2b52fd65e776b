//! Running traced programs: emit, compile (cached), split host inputs into per-device shards, execute,
//! and reassemble the outputs. The train and decode loops keep state on device; this is the simple path
//! for one-shot programs (forward passes, tests, tools).

use super::HostTensor;
use crate::compile::ExecutableCache;
use crate::emit::emit_program;
use crate::ir::{Mesh, Program, Sharding, TensorType};
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
    #[error("program `{program}` needs {needed} devices (mesh {mesh:?}) but the client has {available}")]
    Devices { program: String, needed: i64, mesh: Vec<(String, i64)>, available: usize },
}

pub type Result<T> = std::result::Result<T, RunError>;

/// A client plus its executable cache.
pub struct Runtime {
    client: Client,
    cache: ExecutableCache,
}

impl Runtime {
    pub fn new(client: Client) -> Runtime {
        Runtime { client, cache: ExecutableCache::new() }
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
        Ok(self.cache.get_or_compile(&self.client, &text, &Self::compile_options(program))?)
    }

    /// Checks `inputs` against the program's parameters and uploads each as per-partition shards.
    pub fn upload(&self, program: &Program, exe: &LoadedExecutable, inputs: &[HostTensor]) -> Result<Vec<Vec<Buffer>>> {
        let params = &program.main.params;
        if inputs.len() != params.len() {
            return Err(RunError::Arity { program: program.name.clone(), expected: params.len(), got: inputs.len() });
        }
        let mut per_device: Vec<Vec<Buffer>> = exe.addressable_devices().iter().map(|_| Vec::with_capacity(inputs.len())).collect();
        for (i, x) in inputs.iter().enumerate() {
            for (d, b) in self.upload_arg(program, exe, i, x)?.into_iter().enumerate() {
                per_device[d].push(b);
            }
        }
        Ok(per_device)
    }

    /// Uploads one host array as the per-device shards of argument `arg` of `program` (checked against the
    /// argument's type).
    pub fn upload_arg(&self, program: &Program, exe: &LoadedExecutable, arg: usize, x: &HostTensor) -> Result<Vec<Buffer>> {
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

    /// Result `r` of an execution (`outs[device][result]`) as one whole host array.
    pub fn download_result(&self, program: &Program, outs: &[Vec<Buffer>], r: usize) -> Result<HostTensor> {
        let ty = program.main.value_type(program.main.results[r]).clone();
        let shards: Vec<Vec<u8>> = outs.iter().map(|d| d[r].to_bytes()).collect::<std::result::Result<_, _>>()?;
        Ok(unshard_host(shards, &ty, program.result_shardings[r].as_ref(), program.mesh.as_ref()))
    }

    /// Runs `program` on host inputs and returns whole (unsharded) host outputs.
    pub fn run(&self, program: &Program, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
        let exe = self.compile(program)?;
        let args = self.upload(program, &exe, inputs)?;
        let refs: Vec<Vec<&Buffer>> = args.iter().map(|a| a.iter().collect()).collect();
        let outs = {
            let _span = tracing::info_span!("execute", program = %program.name).entered();
            exe.execute(&refs)?
        };
        (0..program.main.results.len()).map(|r| self.download_result(program, &outs, r)).collect()
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
