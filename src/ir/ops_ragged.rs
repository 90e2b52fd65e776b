//! Grouped matmuls over rows sorted by group (`Op::RaggedDot`, XLA's ragged dot), one per shard of a
//! leading dim: what the dropless MoE computes its experts with when the plugin has a ragged dot (TPU),
//! each device multiplying only its own tokens by the (all-gathered) expert weights, as MaxText's
//! `sparse_matmul` does inside its `shard_map`.
//!
//! Off TPU the op is emitted as [`ragged_dot_dense`], an exact formulation over every group (G times the
//! work): the CPU plugin has no ragged dot, and this keeps the op — and the gradients built from it —
//! testable on CPU.

use super::{DType, DotDims, Graph, Op, Precision, RaggedKind, ReduceKind, Tensor, TensorType};

impl Tensor {
    /// `self` x [P, N, K] (rows sorted by group within each shard), `w` [G, K, F], `group_sizes` [P, G]
    /// (s32) -> [P, N, F]: row i of shard p times `w[g]` for the group g holding it; rows past the last
    /// group are zero. Dim 0 is split over `shard_axes`.
    pub fn ragged_dot(&self, w: &Tensor, group_sizes: &Tensor, shard_axes: &[String], native: bool) -> Tensor {
        let (x, gs) = (self, group_sizes);
        assert!(x.rank() == 3 && w.rank() == 3 && gs.rank() == 2, "ragged_dot {:?} x {:?} by {:?}", x.ty, w.ty, gs.ty);
        assert_eq!(x.dims()[2], w.dims()[1], "ragged_dot contracting dims of {:?} and {:?}", x.ty, w.ty);
        assert_eq!(gs.dims(), &[x.dims()[0], w.dims()[0]][..], "ragged_dot group sizes {:?} for {:?} and {:?}", gs.ty, x.ty, w.ty);
        assert_eq!(x.dtype(), w.dtype(), "ragged_dot operand types {:?} vs {:?}", x.ty, w.ty);
        let ty = TensorType { dtype: x.dtype(), dims: vec![x.dims()[0], x.dims()[1], w.dims()[2]], axes: vec![x.ty.axes[0], x.ty.axes[1], w.ty.axes[2]] };
        let op = Op::RaggedDot { kind: RaggedKind::Rows, shard_axes: shard_axes.to_vec(), native };
        Graph::innermost(&[x, w, gs]).push(op, &[x, w, gs], vec![ty]).remove(0)
    }

    /// `self` x [P, N, K], `dy` [P, N, F], `group_sizes` [P, G] -> [P, G, K, F]: per shard and group, the
    /// sum over the group's rows of `x[i]^T dy[i]` (the weight gradient of [`Tensor::ragged_dot`]).
    pub fn ragged_dot_weight_grad(&self, dy: &Tensor, group_sizes: &Tensor, shard_axes: &[String], native: bool) -> Tensor {
        let (x, gs) = (self, group_sizes);
        assert!(x.rank() == 3 && dy.rank() == 3 && gs.rank() == 2, "ragged_dot_weight_grad {:?}, {:?} by {:?}", x.ty, dy.ty, gs.ty);
        assert_eq!(&x.dims()[..2], &dy.dims()[..2], "ragged_dot_weight_grad rows of {:?} and {:?}", x.ty, dy.ty);
        assert_eq!(gs.dims()[0], x.dims()[0], "ragged_dot_weight_grad group sizes {:?} for {:?}", gs.ty, x.ty);
        assert_eq!(x.dtype(), dy.dtype(), "ragged_dot_weight_grad operand types {:?} vs {:?}", x.ty, dy.ty);
        let (p, g, k, f) = (x.dims()[0], gs.dims()[1], x.dims()[2], dy.dims()[2]);
        let ty = TensorType { dtype: x.dtype(), dims: vec![p, g, k, f], axes: vec![x.ty.axes[0], None, x.ty.axes[2], dy.ty.axes[2]] };
        let op = Op::RaggedDot { kind: RaggedKind::WeightGrad, shard_axes: shard_axes.to_vec(), native };
        Graph::innermost(&[x, dy, gs]).push(op, &[x, dy, gs], vec![ty]).remove(0)
    }
}

/// One-hot [P, N, G] (in `dtype`) of each row's group, for rows sorted by group with `sizes` [P, G] rows
/// per group; rows past the last group have no group.
fn row_groups(sizes: &Tensor, rows: i64, dtype: DType) -> Tensor {
    let g = sizes.graph();
    let (p, groups) = (sizes.dims()[0], sizes.dims()[1]);
    let shape = [p, rows, groups];
    let ends = sizes.cumulative(ReduceKind::Sum, 1, false, false).broadcast_in_dim(&shape, &[0, 2]);
    let row = g.iota(DType::S32, &shape, 1);
    // Row i's group is the number of groups that end at or before it.
    let ended = ends.le(&row).select(&g.full(1.0, DType::S32, &shape), &g.zeros(DType::S32, &shape));
    let group = ended.sum(&[2]).broadcast_in_dim(&shape, &[0, 1]);
    group.eq_(&g.iota(DType::S32, &shape, 2)).select(&g.full(1.0, dtype, &shape), &g.zeros(dtype, &shape))
}

/// [`Op::RaggedDot`] traced from ordinary ops, exactly: every row times every group's weights, then the
/// row's own group picked by a one-hot contraction. `a` is x; `b` is w (`Rows`) or dy (`WeightGrad`).
pub fn ragged_dot_dense(kind: RaggedKind, a: &Tensor, b: &Tensor, sizes: &Tensor) -> Tensor {
    let (p, n) = (a.dims()[0], a.dims()[1]);
    let onehot = row_groups(sizes, n, a.dtype());
    let groups = sizes.dims()[1];
    match kind {
        RaggedKind::Rows => {
            // [P, N, G, F]: every row through every group's weights.
            let all = a.dot_general(b, DotDims { lhs_contract: vec![2], rhs_contract: vec![1], ..Default::default() }, Precision::Default, None);
            let dims = DotDims { lhs_batch: vec![0, 1], rhs_batch: vec![0, 1], lhs_contract: vec![2], rhs_contract: vec![2] };
            onehot.dot_general(&all, dims, Precision::Default, None)
        }
        RaggedKind::WeightGrad => {
            let k = a.dims()[2];
            let shape = [p, n, groups, k];
            let masked = &onehot.broadcast_in_dim(&shape, &[0, 1, 2]) * &a.broadcast_in_dim(&shape, &[0, 1, 3]);
            let dims = DotDims { lhs_batch: vec![0], rhs_batch: vec![0], lhs_contract: vec![1], rhs_contract: vec![1] };
            masked.dot_general(b, dims, Precision::Default, None)
        }
    }
}
