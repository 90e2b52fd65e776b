//! One box of a MaxText parameter straight out of the HF tensors it is stacked from, for sharded loading:
//! the box's stack coordinates pick the HF tensors (layers, experts), and its piece coordinates map back
//! through the transform (`.T`, `.T.reshape`, conv permute) to a box of each HF tensor, of which only
//! those rows are read from the mapped file.

use super::convert::{reverse_axes, transpose2d};
use super::load::ParamLoader;
use super::mapping::{Source, Transform};
use super::{HfError, Result};

impl ParamLoader<'_> {
    /// The box at `offsets` of shape `dims` (in the parameter's dims) of parameter `i`, in its decl's
    /// dtype, row-major.
    pub fn load_region(&self, i: usize, offsets: &[i64], dims: &[i64]) -> Result<Vec<u8>> {
        let (decl, src) = (&self.decls[i], &self.sources[i]);
        let elem = decl.dtype.size_bytes();
        let rank = decl.dims.len();
        assert_eq!(offsets.len(), rank, "box rank for {}", decl.path);
        let (at, k) = (src.stack_at, src.stack_dims.len());
        let is_stack = |d: usize| d >= at && d < at + k;
        let piece_off: Vec<i64> = (0..rank).filter(|d| !is_stack(*d)).map(|d| offsets[d]).collect();
        let piece_dims: Vec<i64> = (0..rank).filter(|d| !is_stack(*d)).map(|d| dims[d]).collect();
        let stack_box: Vec<u64> = (at..at + k).map(|d| dims[d] as u64).collect();
        let mut out = vec![0u8; dims.iter().product::<i64>() as usize * elem];
        if out.is_empty() {
            return Ok(out);
        }
        // The piece as a block of the output: 1 at the stack axes.
        let mut block_dims = dims.to_vec();
        block_dims[at..at + k].fill(1);
        let mut result = Ok(());
        crate::checkpoint::orbax::zarr::for_each_index(&stack_box, |idx| {
            if result.is_err() {
                return;
            }
            let slot = (0..k).fold(0i64, |acc, j| acc * src.stack_dims[j] + offsets[at + j] + idx[j] as i64) as usize;
            let name = &src.hf_names[slot];
            result = self.piece_region(name, src, &piece_off, &piece_dims, decl.dtype).map(|piece| {
                let mut at_off = vec![0i64; rank];
                for j in 0..k {
                    at_off[at + j] = idx[j] as i64;
                }
                crate::sharding::place_region(&mut out, dims, &piece, &at_off, &block_dims, elem);
            });
        });
        result.map(|_| out)
    }

    /// A box of one piece (the transformed HF tensor `name`), read as the matching box of the HF tensor.
    fn piece_region(&self, name: &str, src: &Source, off: &[i64], dims: &[i64], dtype: crate::ir::DType) -> Result<Vec<u8>> {
        let elem = dtype.size_bytes();
        // `view` is a row-major reshape of the HF tensor (same bytes).
        let read = |o: &[i64], d: &[i64], view: &[i64]| -> Result<Vec<u8>> {
            self.ckpt
                .read_region_as(name, view, o, d, dtype)?
                .ok_or_else(|| HfError::MissingTensor { tensor: name.into(), maxtext_path: String::new() })
        };
        let hf_shape = &src.hf_shape;
        Ok(match src.transform {
            Transform::None => read(off, dims, hf_shape)?,
            Transform::Transpose => {
                let t = read(&[off[1], off[0]], &[dims[1], dims[0]], hf_shape)?;
                transpose2d(&t, elem, dims[1] as usize, dims[0] as usize)
            }
            Transform::ReshapeKernel => {
                // piece[i, rest...] = hf[flat(rest), i]: a box of the view [rest..., p0], last axis to front.
                let mut view = src.piece_dims[1..].to_vec();
                view.push(src.piece_dims[0]);
                let (mut o, mut d) = (off[1..].to_vec(), dims[1..].to_vec());
                o.push(off[0]);
                d.push(dims[0]);
                let t = read(&o, &d, &view)?;
                transpose2d(&t, elem, dims[1..].iter().product::<i64>() as usize, dims[0] as usize)
            }
            Transform::ConvPermute => {
                let (o, d): (Vec<i64>, Vec<i64>) = (off.iter().rev().copied().collect(), dims.iter().rev().copied().collect());
                let t = read(&o, &d, hf_shape)?;
                reverse_axes(&t, elem, &d.iter().map(|x| *x as usize).collect::<Vec<_>>())
            }
        })
    }
}
