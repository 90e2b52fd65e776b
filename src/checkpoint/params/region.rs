//! One box of a model parameter out of an Orbax checkpoint, for sharded loading: the box is read from
//! the chunks that hold it (see `orbax::region`), the per-slot `layers/layer_{i}` layout is restacked box
//! by box, and the data are converted to the parameter's dtype — never more than the box on the host.

use super::{LeafSource, ModelCheckpoint, RestoreError, Result};
use crate::checkpoint::hf::StackLayout;
use crate::ir::DType;
use crate::nn::params::ParamDecl;

fn u64s(v: &[i64]) -> Vec<u64> {
    v.iter().map(|x| *x as u64).collect()
}

impl ModelCheckpoint {
    /// The box at `offsets` of shape `dims` of any float or integer leaf, converted to `dtype` (floats
    /// convert among themselves; integers only as their own dtype).
    pub fn read_leaf_region(&self, leaf: &str, offsets: &[i64], dims: &[i64], dtype: DType) -> Result<Vec<u8>> {
        let a = self.orbax().read_region(leaf, &u64s(offsets), &u64s(dims))?;
        let t = a.into_host(leaf)?;
        Ok(self.convert(leaf, t, dtype)?.data)
    }

    /// The box at `offsets` of shape `dims` (in the parameter's dims, scan axes included) of `decl`, read
    /// from `src` (from [`ModelCheckpoint::plan`], which has checked shapes and dtypes), in the decl's
    /// dtype, row-major.
    pub fn read_param_region(&self, decl: &ParamDecl, src: &LeafSource, offsets: &[i64], dims: &[i64]) -> Result<Vec<u8>> {
        if offsets.len() != decl.dims.len() || dims.len() != decl.dims.len() {
            return Err(RestoreError::ShapeMismatch {
                dir: self.dir().into(),
                leaf: src.leaves().first().map(|s| s.to_string()).unwrap_or_default(),
                param: decl.path.clone(),
                expected: decl.dims.clone(),
                actual: dims.to_vec(),
                hint: " (a box of another rank was asked for)".into(),
            });
        }
        match src {
            LeafSource::Direct(leaf) => self.read_leaf_region(leaf, offsets, dims, decl.dtype),
            LeafSource::Stack { leaves, local_axis } => {
                let la = *local_axis;
                let elem = decl.dtype.size_bytes();
                let geometry = StackLayout {
                    outer: dims[..la].iter().product::<i64>() as usize,
                    stack_total: dims[la] as usize,
                    inner_bytes: dims[la + 1..].iter().product::<i64>() as usize * elem,
                };
                let mut out = vec![0u8; dims.iter().product::<i64>() as usize * elem];
                let (mut o, mut d) = (offsets.to_vec(), dims.to_vec());
                o.remove(la);
                d.remove(la);
                for k in 0..dims[la] {
                    let leaf = &leaves[(offsets[la] + k) as usize];
                    let piece = self.read_leaf_region(leaf, &o, &d, decl.dtype)?;
                    geometry.place(&mut out, &piece, k as usize);
                }
                Ok(out)
            }
        }
    }
}
