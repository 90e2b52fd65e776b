//! Device state shard by shard: uploading an array that is never whole on the host (each distinct shard
//! is read once from a box reader, uploaded to every device that holds it, and dropped before the next),
//! and the inverse, handing each distinct shard of a device array to a writer one at a time.
//!
//! Partition `p` of the mesh is `devices[p]` (the convention of `crate::sharding`). These functions know
//! nothing about program argument positions: callers pass the sharding of whatever group the array
//! belongs to, so the same calls serve parameters, optimizer state and caches.

use super::execute::{Result as RunResult, RunError, Runtime};
use crate::ir::{DType, Mesh, Program, Sharding};
use crate::pjrt::{Buffer, Client, Device, LoadedExecutable};
use crate::sharding::{shard_dims, unique_shards};

/// How one array is laid out over the devices.
#[derive(Clone, Copy, Debug)]
pub struct ShardSpec<'a> {
    pub dtype: DType,
    /// The global (whole-array) dims.
    pub dims: &'a [i64],
    /// `None` (or no mesh): every device holds the whole array.
    pub sharding: Option<&'a Sharding>,
    pub mesh: Option<&'a Mesh>,
}

/// One distinct shard: its element offsets in the global array, its dims, and the partitions holding it.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardBox {
    pub offsets: Vec<i64>,
    pub dims: Vec<i64>,
    pub partitions: Vec<usize>,
}

impl ShardSpec<'_> {
    /// The distinct shards over `parts` partitions, in the order of their first partition.
    pub fn boxes(&self, parts: usize) -> Vec<ShardBox> {
        match (self.sharding, self.mesh) {
            (Some(s), Some(m)) if !s.is_replicated() => {
                let dims = shard_dims(self.dims, s, m);
                unique_shards(self.dims, s, m)
                    .into_iter()
                    .map(|(offsets, partitions)| ShardBox { offsets, dims: dims.clone(), partitions })
                    .collect()
            }
            _ => vec![ShardBox { offsets: vec![0; self.dims.len()], dims: self.dims.to_vec(), partitions: (0..parts).collect() }],
        }
    }

    /// The mesh's partition count (or `local` without a mesh: then every device holds the whole array).
    fn partitions(&self, local: usize) -> usize {
        self.mesh.map_or(local, |m| m.num_devices() as usize)
    }

    /// `partitions` (this process's devices' partitions) must be partitions of the mesh; on one process
    /// they are all of them.
    fn check_partitions(&self, partitions: &[usize], multi_process: bool) -> RunResult<()> {
        let total = self.partitions(partitions.len());
        let fits = partitions.iter().all(|&p| p < total) && (multi_process || partitions.len() == total);
        if let (Some(m), false) = (self.mesh, fits) {
            return Err(RunError::Devices { program: "sharded state".into(), needed: m.num_devices(), mesh: m.axes.clone(), available: partitions.len() });
        }
        Ok(())
    }
}

/// Where one process's devices sit in a program's mesh: `partitions[k]` is the partition held by the
/// `k`-th of the executable's addressable devices ([`Runtime::local_partitions`]). On one process that
/// is every partition, in order; on a multi-host slice each process holds some.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPartitions {
    pub partitions: Vec<usize>,
    /// Other processes hold the rest of the mesh.
    pub multi_process: bool,
}

impl LocalPartitions {
    /// One process holding `n` partitions, in order.
    pub fn all(n: usize) -> LocalPartitions {
        LocalPartitions { partitions: (0..n).collect(), multi_process: false }
    }

    /// The local devices (by index) that hold one of `partitions`.
    fn holding(&self, partitions: &[usize]) -> Vec<usize> {
        self.partitions.iter().enumerate().filter(|(_, p)| partitions.contains(p)).map(|(k, _)| k).collect()
    }
}

/// The rows `lo..hi` (dim 0) of an array that the devices of `local` hold between them, when they are one
/// contiguous block (on one process: all rows); `None` when they are scattered.
pub fn local_rows(spec: ShardSpec, local: &LocalPartitions) -> Option<(i64, i64)> {
    let mut rows: Vec<(i64, i64)> = spec
        .boxes(spec.partitions(local.partitions.len()))
        .into_iter()
        .filter(|b| !local.holding(&b.partitions).is_empty())
        .map(|b| (b.offsets[0], b.offsets[0] + b.dims[0]))
        .collect();
    rows.sort_unstable();
    rows.dedup();
    let (lo, hi) = (rows.first()?.0, rows.last()?.1);
    rows.windows(2).all(|w| w[0].1 == w[1].0).then_some((lo, hi))
}

/// Uploads one array as per-device buffers (`devices[k]` gets the shard of partition
/// `local.partitions[k]`), reading each distinct shard these devices hold once with `read(offsets, dims)`
/// (row-major bytes of `spec.dtype`); shards only other processes hold are never read. At most one shard
/// is on the host at a time.
pub fn upload_sharded<E: From<RunError>>(
    client: &Client,
    devices: &[Device],
    local: &LocalPartitions,
    spec: ShardSpec,
    mut read: impl FnMut(&[i64], &[i64]) -> Result<Vec<u8>, E>,
) -> Result<Vec<Buffer>, E> {
    spec.check_partitions(&local.partitions, local.multi_process)?;
    assert_eq!(devices.len(), local.partitions.len(), "one partition per addressable device");
    let mut out: Vec<Option<Buffer>> = (0..devices.len()).map(|_| None).collect();
    for b in spec.boxes(spec.partitions(devices.len())) {
        let holders = local.holding(&b.partitions);
        if holders.is_empty() {
            continue;
        }
        let bytes = read(&b.offsets, &b.dims)?;
        let want = b.dims.iter().product::<i64>() as usize * spec.dtype.size_bytes();
        if bytes.len() != want {
            let got = format!("{} bytes for the shard at {:?}", bytes.len(), b.offsets);
            let expected = format!("{}{:?} ({want} bytes)", spec.dtype, b.dims);
            return Err(RunError::Input { index: 0, name: "sharded upload".into(), expected, got }.into());
        }
        for k in holders {
            out[k] = Some(client.buffer_from_bytes(&bytes, spec.dtype, &b.dims, &devices[k]).map_err(RunError::from)?);
        }
    }
    Ok(out.into_iter().map(|b| b.expect("every partition holds a shard")).collect())
}

/// Hands each distinct shard of a device array (`buffers[k]` = partition `local.partitions[k]`) that this
/// process owns to `f(offsets, dims, bytes)`, one download at a time. A shard is owned by the process
/// holding its first partition, so over all processes each shard is handed out exactly once (orbax's
/// rule: replica 0 writes).
pub fn for_each_shard<E: From<RunError>>(
    buffers: &[&Buffer],
    local: &LocalPartitions,
    spec: ShardSpec,
    mut f: impl FnMut(&[i64], &[i64], Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    spec.check_partitions(&local.partitions, local.multi_process)?;
    for b in spec.boxes(spec.partitions(buffers.len())) {
        let Some(k) = local.partitions.iter().position(|&p| p == b.partitions[0]) else { continue };
        let bytes = buffers[k].to_bytes().map_err(RunError::from)?;
        f(&b.offsets, &b.dims, bytes)?;
    }
    Ok(())
}

/// Bytes held by device buffers (what a CPU client keeps in host memory on the devices' behalf).
pub fn device_bytes<'a>(buffers: impl IntoIterator<Item = &'a Buffer>) -> RunResult<u64> {
    let mut n = 0;
    for b in buffers {
        n += b.on_device_size()? as u64;
    }
    Ok(n)
}

impl Runtime {
    /// Runs a program that takes no arguments (e.g. `init_params`) and keeps its results on the devices:
    /// `[device][result]`, each device holding its shard.
    pub fn run_on_device(&self, program: &Program) -> RunResult<(std::sync::Arc<LoadedExecutable>, Vec<Vec<Buffer>>)> {
        if !program.main.params.is_empty() {
            let got = program.main.params.len();
            return Err(RunError::Arity { program: program.name.clone(), expected: 0, got });
        }
        let exe = self.compile(program)?;
        let args: Vec<Vec<&Buffer>> = exe.addressable_devices().iter().map(|_| Vec::new()).collect();
        let outs = {
            let _span = tracing::info_span!("execute", program = %program.name).entered();
            exe.execute(&args)?
        };
        Ok((exe, outs))
    }

    /// The layout of argument `arg` of `program`.
    pub fn arg_spec<'p>(program: &'p Program, arg: usize) -> ShardSpec<'p> {
        let ty = &program.main.params[arg];
        ShardSpec { dtype: ty.dtype, dims: &ty.dims, sharding: program.arg_shardings[arg].as_ref(), mesh: program.mesh.as_ref() }
    }

    /// The layout of result `r` of `program`.
    pub fn result_spec<'p>(program: &'p Program, r: usize) -> ShardSpec<'p> {
        let ty = program.main.value_type(program.main.results[r]);
        ShardSpec { dtype: ty.dtype, dims: &ty.dims, sharding: program.result_shardings[r].as_ref(), mesh: program.mesh.as_ref() }
    }

    /// [`upload_sharded`] of argument `arg` of `program` onto the executable's devices.
    pub fn upload_arg_sharded<E: From<RunError>>(
        &self,
        program: &Program,
        exe: &LoadedExecutable,
        arg: usize,
        read: impl FnMut(&[i64], &[i64]) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<Buffer>, E> {
        upload_sharded(self.client(), exe.addressable_devices(), &self.local_partitions(program, exe), Self::arg_spec(program, arg), read)
    }
}
