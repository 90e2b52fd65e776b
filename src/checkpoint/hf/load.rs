//! HF checkpoint -> one host tensor per parameter declaration, and back.

use std::collections::HashSet;
use std::path::Path;

use super::convert::{reverse_axes, transpose2d, StackLayout};
use super::files::HfCheckpoint;
use super::mapping::{hf_sources, Source, Transform};
use super::{HfError, Result};
use crate::config::ModelConfig;
use crate::nn::params::ParamDecl;
use crate::runtime::HostTensor;

/// How many unused tensor names an error lists.
const LIST_AT_MOST: usize = 20;

/// Loads every parameter of `decls` from the HF checkpoint in `dir` (see [`load_params_from`]).
pub fn load_params(dir: &Path, decls: &[ParamDecl], cfg: &ModelConfig) -> Result<Vec<HostTensor>> {
    let ckpt = HfCheckpoint::open(dir)?;
    load_params_from(&ckpt, decls, cfg)
}

/// One host tensor per decl, in order, in the decl's dtype. Before any data is read, every HF tensor
/// the decls need is checked against the file headers (present, right shape) and every tensor of the
/// checkpoint must be needed by some decl (`mtp.*` excepted); then parameters are assembled one at a
/// time, reading only the HF tensors each needs.
pub fn load_params_from(ckpt: &HfCheckpoint, decls: &[ParamDecl], cfg: &ModelConfig) -> Result<Vec<HostTensor>> {
    let _span = tracing::info_span!("checkpoint", hf_dir = %ckpt.dir().display()).entered();
    let loader = ParamLoader::new(ckpt, decls, cfg)?;
    let out = (0..decls.len()).map(|i| loader.load(i)).collect::<Result<Vec<_>>>()?;
    tracing::info!(params = decls.len(), "imported HF checkpoint");
    Ok(out)
}

/// Parameters out of an HF checkpoint one at a time (for conversions that must not hold the model in
/// memory): [`ParamLoader::new`] checks every header against the decls (as [`load_params_from`] does),
/// [`ParamLoader::load`] assembles one parameter.
pub struct ParamLoader<'a> {
    pub(super) ckpt: &'a HfCheckpoint,
    pub(super) decls: &'a [ParamDecl],
    pub(super) sources: Vec<Source>,
}

impl<'a> ParamLoader<'a> {
    pub fn new(ckpt: &'a HfCheckpoint, decls: &'a [ParamDecl], cfg: &ModelConfig) -> Result<ParamLoader<'a>> {
        let sources: Vec<Source> = decls.iter().map(|d| hf_sources(d, cfg)).collect::<Result<_>>()?;
        check_against_headers(ckpt, decls, &sources)?;
        Ok(ParamLoader { ckpt, decls, sources })
    }

    /// The HF tensors parameter `i` is made of.
    pub fn source(&self, i: usize) -> &Source {
        &self.sources[i]
    }

    /// Parameter `i`, stacked from its HF tensors, in its decl's dtype.
    pub fn load(&self, i: usize) -> Result<HostTensor> {
        let (decl, src) = (&self.decls[i], &self.sources[i]);
        let t = assemble(self.ckpt, decl, src, &mut HashSet::new())?;
        tracing::debug!(path = %decl.path, dims = ?decl.dims, tensors = src.hf_names.len(), "loaded");
        Ok(t)
    }
}

fn check_against_headers(ckpt: &HfCheckpoint, decls: &[ParamDecl], sources: &[Source]) -> Result<()> {
    let mut needed: HashSet<&str> = HashSet::new();
    for (decl, src) in decls.iter().zip(sources) {
        for name in &src.hf_names {
            let meta = ckpt
                .meta(name)
                .ok_or_else(|| HfError::MissingTensor { tensor: name.clone(), maxtext_path: decl.path.clone() })?;
            if meta.shape != src.hf_shape {
                return Err(HfError::ShapeMismatch {
                    tensor: name.clone(),
                    maxtext_path: decl.path.clone(),
                    expected: src.hf_shape.clone(),
                    actual: meta.shape,
                });
            }
            needed.insert(name);
        }
    }
    let unused: Vec<&str> = ckpt.names().filter(|n| !needed.contains(n) && !is_ignored(n)).collect();
    if !unused.is_empty() {
        return Err(unused_error(unused.into_iter().map(str::to_string).collect()));
    }
    Ok(())
}

/// HF tensors MaxText does not load: the multi-token-prediction head.
fn is_ignored(name: &str) -> bool {
    name.starts_with("mtp.")
}

fn unused_error(names: Vec<String>) -> HfError {
    let count = names.len();
    HfError::UnusedTensors { count, names: names.into_iter().take(LIST_AT_MOST).collect() }
}

/// Stacking geometry of a source: parameter layout `[outer, stack..., inner]`.
fn layout(src: &Source, elem: usize) -> StackLayout {
    let outer: i64 = src.piece_dims[..src.stack_at].iter().product();
    let inner: i64 = src.piece_dims[src.stack_at..].iter().product();
    StackLayout {
        outer: outer as usize,
        stack_total: src.stack_dims.iter().product::<i64>() as usize,
        inner_bytes: inner as usize * elem,
    }
}

fn assemble(ckpt: &HfCheckpoint, decl: &ParamDecl, src: &Source, consumed: &mut HashSet<String>) -> Result<HostTensor> {
    let elem = decl.dtype.size_bytes();
    let geometry = layout(src, elem);
    let mut full = vec![0u8; decl.num_elements() as usize * elem];
    for (slot, name) in src.hf_names.iter().enumerate() {
        let t = ckpt
            .read_as(name, decl.dtype)?
            .ok_or_else(|| HfError::MissingTensor { tensor: name.clone(), maxtext_path: decl.path.clone() })?;
        if t.dims != src.hf_shape {
            return Err(HfError::ShapeMismatch {
                tensor: name.clone(),
                maxtext_path: decl.path.clone(),
                expected: src.hf_shape.clone(),
                actual: t.dims,
            });
        }
        let piece = to_maxtext(src.transform, &t.data, elem, &src.hf_shape);
        geometry.place(&mut full, &piece, slot);
        consumed.insert(name.clone());
    }
    Ok(HostTensor::from_bytes(decl.dtype, &decl.dims, full))
}

fn udims(d: &[i64]) -> Vec<usize> {
    d.iter().map(|&x| x as usize).collect()
}

/// HF tensor bytes (shape `hf_shape`) -> piece bytes. Reshapes are free in row-major order.
fn to_maxtext(transform: Transform, data: &[u8], elem: usize, hf_shape: &[i64]) -> Vec<u8> {
    let d = udims(hf_shape);
    match transform {
        Transform::None => data.to_vec(),
        Transform::Transpose | Transform::ReshapeKernel => transpose2d(data, elem, d[0], d[1]),
        Transform::ConvPermute => reverse_axes(data, elem, &d),
    }
}

/// Piece bytes -> HF tensor bytes (shape `hf_shape`): the inverse of [`to_maxtext`].
fn to_hf(transform: Transform, piece: &[u8], elem: usize, hf_shape: &[i64]) -> Vec<u8> {
    let d = udims(hf_shape);
    match transform {
        Transform::None => piece.to_vec(),
        // The piece is `[d1, d0]` once the reshape is undone.
        Transform::Transpose | Transform::ReshapeKernel => transpose2d(piece, elem, d[1], d[0]),
        Transform::ConvPermute => reverse_axes(piece, elem, &[d[2], d[1], d[0]]),
    }
}

/// The inverse of [`load_params_from`]: HF tensors (name, tensor in the parameter's dtype), in decl order
/// and, within a decl, layer by layer (experts outermost). `tensors[i]` must have `decls[i]`'s dims.
pub fn hf_tensors_for(
    decls: &[ParamDecl],
    tensors: &[HostTensor],
    cfg: &ModelConfig,
) -> Result<Vec<(String, HostTensor)>> {
    if decls.len() != tensors.len() {
        return Err(HfError::DeclMismatch {
            maxtext_path: "(all)".into(),
            reason: format!("{} declarations but {} tensors", decls.len(), tensors.len()),
        });
    }
    let mut out = Vec::new();
    for (decl, t) in decls.iter().zip(tensors) {
        if t.dims != decl.dims {
            return Err(HfError::DeclMismatch {
                maxtext_path: decl.path.clone(),
                reason: format!("tensor has dims {:?}, the declaration {:?}", t.dims, decl.dims),
            });
        }
        let src = hf_sources(decl, cfg)?;
        let elem = t.dtype.size_bytes();
        let geometry = layout(&src, elem);
        for (slot, name) in src.hf_names.iter().enumerate() {
            let piece = geometry.take(&t.data, slot);
            let data = to_hf(src.transform, &piece, elem, &src.hf_shape);
            out.push((name.clone(), HostTensor::from_bytes(t.dtype, &src.hf_shape, data)));
        }
    }
    Ok(out)
}
