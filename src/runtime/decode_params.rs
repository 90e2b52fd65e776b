//! The parameters of the decode and serve programs on the devices. Those programs trace the layer scan
//! unrolled and take each layer's parameters as arguments of their own (`crate::nn::ParamArg`), while
//! checkpoints and the on-device init give them stacked over layers (MaxText's `scan_layers` layout).
//! Parameters taken whole are uploaded straight into their argument; stacked ones are uploaded as stored
//! and split by layer on the devices once, by the `split_layers` program, so that a decode step reads
//! each layer's weights in place instead of copying them out of the stack every step.

use super::execute::{DeviceArray, RunError, Runtime};
use super::generate::GenerateError;
use crate::config::Config;
use crate::ir::Program;
use crate::pjrt::{Buffer, LoadedExecutable};
use crate::program::{split_layers_program, DecodeProgram};

/// `dp`'s `params` group on the devices. `upload(program, exe, argument, i)` gives parameter `i`'s
/// (declaration order) per-device buffers laid out as `program`'s `argument`.
pub fn upload_decode_params<E: From<RunError> + From<GenerateError>>(
    rt: &Runtime,
    cfg: &Config,
    dp: &DecodeProgram,
    exe: &LoadedExecutable,
    mut upload: impl FnMut(&Program, &LoadedExecutable, usize, usize) -> Result<Vec<Buffer>, E>,
) -> Result<Vec<DeviceArray>, E> {
    let devices = exe.addressable_devices().len();
    let mut checked = |program: &Program, exe: &LoadedExecutable, arg: usize, i: usize| -> Result<DeviceArray, E> {
        let bufs = upload(program, exe, arg, i)?;
        if bufs.len() != devices {
            return Err(RunError::Arity { program: format!("parameter {} buffers", dp.decls[i].path), expected: devices, got: bufs.len() }.into());
        }
        Ok(bufs)
    };
    let dargs: Vec<usize> = dp.program.args("params").collect();
    let mut params: Vec<Option<DeviceArray>> = (0..dargs.len()).map(|_| None).collect();
    for (k, a) in dp.args.iter().enumerate() {
        if a.layer.is_empty() {
            params[k] = Some(checked(&dp.program, exe, dargs[k], a.decl)?);
        }
    }
    if let Some(split) = split_layers_program(cfg, dp).map_err(GenerateError::from)? {
        let _span = tracing::info_span!("split_layers", arrays = split.args.len()).entered();
        let sexe = rt.compile(&split.program)?;
        let sargs: Vec<usize> = split.program.args("params").collect();
        let mut stacked = Vec::with_capacity(split.decls.len());
        for (j, &i) in split.decls.iter().enumerate() {
            stacked.push(checked(&split.program, &sexe, sargs[j], i)?);
        }
        let mut outs = rt.execute(&split.program, &sexe, &[("params", &stacked)])?;
        for (k, layer) in split.args.iter().zip(outs.take("layers")) {
            params[*k] = Some(layer);
        }
    }
    Ok(params.into_iter().map(|p| p.expect("every argument filled")).collect())
}
