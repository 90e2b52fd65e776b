//! Shape and data-movement ops: broadcast_in_dim, reshape, transpose, slices, concatenate, pad, gather,
//! scatter. Index arguments are integer dims (StableHLO level); `named.rs` builds on these with axis names.

use super::{DType, GatherDims, Graph, Op, ScatterDims, ScatterMode, Tensor, TensorType};

impl Tensor {
    /// `stablehlo.broadcast_in_dim`: dim `i` of `self` becomes dim `dims[i]` of a tensor of `out_dims`.
    pub fn broadcast_in_dim(&self, out_dims: &[i64], dims: &[i64]) -> Tensor {
        assert_eq!(dims.len(), self.rank(), "broadcast_in_dim of {:?}: dims {dims:?}", self.ty);
        let mut axes = vec![None; out_dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            let (src, dst) = (self.dims()[i], out_dims[d as usize]);
            assert!(src == dst || src == 1, "broadcast_in_dim of {:?} to {out_dims:?} via {dims:?}", self.ty);
            axes[d as usize] = self.ty.axes[i];
        }
        let ty = TensorType { dtype: self.dtype(), dims: out_dims.to_vec(), axes };
        self.graph().push(Op::BroadcastInDim { dims: dims.to_vec() }, &[self], vec![ty]).remove(0)
    }

    /// Broadcasts a scalar (or same-shape tensor) to `dims`.
    pub fn broadcast_to(&self, dims: &[i64]) -> Tensor {
        if self.dims() == dims {
            return self.clone();
        }
        assert_eq!(self.rank(), 0, "broadcast_to: {:?} to {dims:?}: only scalars broadcast implicitly", self.ty);
        self.broadcast_in_dim(dims, &[])
    }

    pub fn reshape(&self, dims: &[i64]) -> Tensor {
        let n: i64 = dims.iter().product();
        assert_eq!(n, self.ty.num_elements(), "reshape {:?} to {dims:?}", self.ty);
        if dims == self.dims() {
            return self.clone();
        }
        self.graph().push(Op::Reshape, &[self], vec![TensorType::new(self.dtype(), dims)]).remove(0)
    }

    /// `stablehlo.transpose`: result dim `i` is operand dim `perm[i]`.
    pub fn transpose(&self, perm: &[i64]) -> Tensor {
        assert_eq!(perm.len(), self.rank(), "transpose {:?} by {perm:?}", self.ty);
        let mut seen = vec![false; perm.len()];
        for &p in perm {
            assert!((p as usize) < perm.len() && !seen[p as usize], "transpose by non-permutation {perm:?}");
            seen[p as usize] = true;
        }
        if perm.iter().enumerate().all(|(i, &p)| i as i64 == p) {
            return self.clone();
        }
        let ty = TensorType {
            dtype: self.dtype(),
            dims: perm.iter().map(|&p| self.dims()[p as usize]).collect(),
            axes: perm.iter().map(|&p| self.ty.axes[p as usize]).collect(),
        };
        self.graph().push(Op::Transpose { perm: perm.to_vec() }, &[self], vec![ty]).remove(0)
    }

    pub fn slice(&self, start: &[i64], limit: &[i64], strides: &[i64]) -> Tensor {
        let r = self.rank();
        assert!(start.len() == r && limit.len() == r && strides.len() == r, "slice {:?}: rank mismatch", self.ty);
        let mut dims = Vec::with_capacity(r);
        for i in 0..r {
            assert!(
                0 <= start[i] && start[i] <= limit[i] && limit[i] <= self.dims()[i] && strides[i] >= 1,
                "slice {:?} [{start:?}:{limit:?}:{strides:?}] out of range",
                self.ty
            );
            dims.push((limit[i] - start[i] + strides[i] - 1) / strides[i]);
        }
        let ty = TensorType { dtype: self.dtype(), dims, axes: self.ty.axes.clone() };
        let op = Op::Slice { start: start.to_vec(), limit: limit.to_vec(), strides: strides.to_vec() };
        self.graph().push(op, &[self], vec![ty]).remove(0)
    }

    /// Slice `[start, start+len)` of dim `dim`, unit stride.
    pub fn slice_dim(&self, dim: usize, start: i64, len: i64) -> Tensor {
        let mut s = vec![0; self.rank()];
        let mut l = self.dims().to_vec();
        s[dim] = start;
        l[dim] = start + len;
        self.slice(&s, &l, &vec![1; self.rank()])
    }

    /// `stablehlo.dynamic_slice` with one scalar integer start per dim (clamped into range by XLA).
    pub fn dynamic_slice(&self, starts: &[Tensor], sizes: &[i64]) -> Tensor {
        assert!(starts.len() == self.rank() && sizes.len() == self.rank(), "dynamic_slice {:?}: rank", self.ty);
        check_scalar_indices("dynamic_slice", starts);
        for (s, d) in sizes.iter().zip(self.dims()) {
            assert!(*s >= 0 && s <= d, "dynamic_slice {:?} sizes {sizes:?}", self.ty);
        }
        let ty = TensorType { dtype: self.dtype(), dims: sizes.to_vec(), axes: self.ty.axes.clone() };
        let mut inputs = vec![self];
        inputs.extend(starts.iter());
        Graph::innermost(&inputs).push(Op::DynamicSlice { sizes: sizes.to_vec() }, &inputs, vec![ty]).remove(0)
    }

    /// `stablehlo.dynamic_update_slice`: writes `update` at `starts` (clamped into range by XLA).
    pub fn dynamic_update_slice(&self, update: &Tensor, starts: &[Tensor]) -> Tensor {
        assert_eq!(update.dtype(), self.dtype(), "dynamic_update_slice {:?} <- {:?}", self.ty, update.ty);
        assert!(
            update.rank() == self.rank() && update.dims().iter().zip(self.dims()).all(|(u, d)| u <= d),
            "dynamic_update_slice {:?} <- {:?}",
            self.ty,
            update.ty
        );
        assert_eq!(starts.len(), self.rank(), "dynamic_update_slice: one start per dim");
        check_scalar_indices("dynamic_update_slice", starts);
        let mut inputs = vec![self, update];
        inputs.extend(starts.iter());
        Graph::innermost(&inputs).push(Op::DynamicUpdateSlice, &inputs, vec![self.ty.clone()]).remove(0)
    }

    /// `stablehlo.pad` with scalar `value`; negative low/high crop.
    pub fn pad(&self, value: &Tensor, low: &[i64], high: &[i64], interior: &[i64]) -> Tensor {
        assert_eq!(value.rank(), 0, "pad value must be a scalar, got {:?}", value.ty);
        assert_eq!(value.dtype(), self.dtype(), "pad value {:?} vs operand {:?}", value.ty, self.ty);
        let r = self.rank();
        assert!(low.len() == r && high.len() == r && interior.len() == r, "pad {:?}: rank", self.ty);
        let dims: Vec<i64> = (0..r)
            .map(|i| {
                let d = self.dims()[i];
                let n = low[i] + high[i] + d + (d - 1).max(0) * interior[i];
                assert!(n >= 0 && interior[i] >= 0, "pad {:?} lo {low:?} hi {high:?} gives negative size", self.ty);
                n
            })
            .collect();
        let ty = TensorType { dtype: self.dtype(), dims, axes: self.ty.axes.clone() };
        let op = Op::Pad { low: low.to_vec(), high: high.to_vec(), interior: interior.to_vec() };
        Graph::innermost(&[self, value]).push(op, &[self, value], vec![ty]).remove(0)
    }

    /// `stablehlo.gather`. Shape inference follows the StableHLO spec.
    pub fn gather(&self, indices: &Tensor, dims: GatherDims) -> Tensor {
        assert!(indices.dtype().is_int(), "gather indices must be integers, got {:?}", indices.ty);
        assert_eq!(dims.slice_sizes.len(), self.rank(), "gather {:?}: slice_sizes {:?}", self.ty, dims.slice_sizes);
        let ivd = dims.index_vector_dim as usize;
        let batch_dims: Vec<i64> =
            indices.dims().iter().enumerate().filter(|(i, _)| *i != ivd).map(|(_, d)| *d).collect();
        let offset_sizes: Vec<i64> = (0..self.rank() as i64)
            .filter(|d| !dims.collapsed_slice_dims.contains(d) && !dims.operand_batching_dims.contains(d))
            .map(|d| dims.slice_sizes[d as usize])
            .collect();
        assert_eq!(offset_sizes.len(), dims.offset_dims.len(), "gather {:?}: offset_dims {dims:?}", self.ty);
        let rank = batch_dims.len() + offset_sizes.len();
        let (mut bi, mut oi) = (0, 0);
        let out: Vec<i64> = (0..rank as i64)
            .map(|d| {
                if dims.offset_dims.contains(&d) {
                    oi += 1;
                    offset_sizes[oi - 1]
                } else {
                    bi += 1;
                    batch_dims[bi - 1]
                }
            })
            .collect();
        let ty = TensorType::new(self.dtype(), &out);
        Graph::innermost(&[self, indices]).push(Op::Gather(dims), &[self, indices], vec![ty]).remove(0)
    }

    /// `stablehlo.scatter` of `updates` at `indices` into `self`, replacing or adding.
    pub fn scatter(&self, indices: &Tensor, updates: &Tensor, dims: ScatterDims, mode: ScatterMode) -> Tensor {
        assert!(indices.dtype().is_int(), "scatter indices must be integers, got {:?}", indices.ty);
        assert_eq!(updates.dtype(), self.dtype(), "scatter updates {:?} into {:?}", updates.ty, self.ty);
        let op = Op::Scatter { dims, mode };
        let inputs = [self, indices, updates];
        Graph::innermost(&inputs).push(op, &inputs, vec![self.ty.clone()]).remove(0)
    }

    /// The slice at `index` (a dynamic integer scalar) of dim `axis`, with that dim removed.
    pub fn index_axis(&self, axis: usize, index: &Tensor) -> Tensor {
        let g = Graph::innermost(&[self, index]);
        let zero = g.full(0.0, index.dtype(), &[]);
        let mut starts = vec![zero; self.rank()];
        starts[axis] = index.clone();
        let mut sizes = self.dims().to_vec();
        sizes[axis] = 1;
        let mut dims = self.dims().to_vec();
        let mut axes = self.ty.axes.clone();
        dims.remove(axis);
        axes.remove(axis);
        self.dynamic_slice(&starts, &sizes).reshape(&dims).with_axes(&axes)
    }

    /// `self` with the slice at `index` of dim `axis` replaced by `value` (`self`'s dims without `axis`).
    pub fn update_axis(&self, axis: usize, index: &Tensor, value: &Tensor) -> Tensor {
        let g = Graph::innermost(&[self, index, value]);
        let zero = g.full(0.0, index.dtype(), &[]);
        let mut starts = vec![zero; self.rank()];
        starts[axis] = index.clone();
        let mut dims = value.dims().to_vec();
        dims.insert(axis, 1);
        let v = value.convert(self.dtype()).reshape(&dims);
        self.dynamic_update_slice(&v, &starts).with_axes(&self.ty.axes)
    }

    /// Rows `indices` (any integer shape) of dim 0: result dims = indices dims ++ self dims[1..].
    pub fn take_rows(&self, indices: &Tensor) -> Tensor {
        let mut slice_sizes = self.dims().to_vec();
        slice_sizes[0] = 1;
        let ir = indices.rank() as i64;
        let dims = GatherDims {
            offset_dims: (ir..ir + self.rank() as i64 - 1).collect(),
            collapsed_slice_dims: vec![0],
            start_index_map: vec![0],
            index_vector_dim: ir,
            slice_sizes,
            ..Default::default()
        };
        self.gather(indices, dims)
    }
}

impl Graph {
    /// `stablehlo.concatenate` along `dim`.
    pub fn concatenate(&self, parts: &[Tensor], dim: usize) -> Tensor {
        assert!(!parts.is_empty(), "concatenate of nothing");
        let first = &parts[0];
        let mut dims = first.dims().to_vec();
        dims[dim] = 0;
        for p in parts {
            assert!(
                p.dtype() == first.dtype()
                    && p.rank() == first.rank()
                    && (0..p.rank()).all(|i| i == dim || p.dims()[i] == first.dims()[i]),
                "concatenate along {dim}: {:?} vs {:?}",
                first.ty,
                p.ty
            );
            dims[dim] += p.dims()[dim];
        }
        let ty = TensorType { dtype: first.dtype(), dims, axes: first.ty.axes.clone() };
        let refs: Vec<&Tensor> = parts.iter().collect();
        self.push(Op::Concatenate { dim: dim as i64 }, &refs, vec![ty]).remove(0)
    }
}

fn check_scalar_indices(op: &str, starts: &[Tensor]) {
    for s in starts {
        assert!(s.rank() == 0 && s.dtype().is_int(), "{op}: start indices must be integer scalars, got {:?}", s.ty);
    }
    if let Some(first) = starts.first() {
        assert!(starts.iter().all(|s| s.dtype() == first.dtype()), "{op}: start indices of mixed types");
    }
}

/// Scalar i32 constant helper for index arguments.
pub fn index_const(g: &Graph, v: i64) -> Tensor {
    g.full(v as f64, DType::S32, &[])
}
