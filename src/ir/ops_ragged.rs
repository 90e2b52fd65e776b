//! Grouped matmuls over rows sorted by group (`Op::RaggedDot`, XLA's ragged dot), one per shard of a
//! leading dim: what the dropless MoE computes its experts with when the plugin has a ragged dot (TPU),
//! each device multiplying only its own tokens by the (all-gathered) expert weights, as MaxText's
//! `sparse_matmul` does inside its `shard_map`. The weight gradient is reduced over the shards straight
//! into the weights' sharding (a reduce-scatter), never held whole.
//!
//! Off TPU the op is emitted as [`ragged_dot_dense`], an exact formulation over every group (G times the
//! work): the CPU plugin has no ragged dot, and this keeps the op — and the gradients built from it —
//! testable on CPU.

use super::{DType, DotDims, Graph, Op, Precision, RaggedKind, RaggedSpec, ReduceKind, Tensor, TensorType};

impl Tensor {
    /// `self` x [P, N, K] (rows sorted by group within each shard), `w` [G, K, F], `group_sizes` [P, G]
    /// (s32) -> [P, N, F]: row i of shard p times `w[g]` for the group g holding it; rows past the last
    /// group are zero.
    pub fn ragged_dot(&self, w: &Tensor, group_sizes: &Tensor, spec: &RaggedSpec) -> Tensor {
        check(self, w, group_sizes, 2, 1);
        let ty = TensorType { dtype: self.dtype(), dims: vec![self.dims()[0], self.dims()[1], w.dims()[2]], axes: vec![self.ty.axes[0], self.ty.axes[1], w.ty.axes[2]] };
        push(RaggedKind::Rows, spec, &[self, w, group_sizes], ty)
    }

    /// `self` x [P, N, F], `w` [G, K, F] -> [P, N, K]: each row times its group's `wᵀ` (no transposed
    /// copy of the weights).
    pub fn ragged_dot_transposed(&self, w: &Tensor, group_sizes: &Tensor, spec: &RaggedSpec) -> Tensor {
        check(self, w, group_sizes, 2, 2);
        let ty = TensorType { dtype: self.dtype(), dims: vec![self.dims()[0], self.dims()[1], w.dims()[1]], axes: vec![self.ty.axes[0], self.ty.axes[1], w.ty.axes[1]] };
        push(RaggedKind::RowsTransposed, spec, &[self, w, group_sizes], ty)
    }

    /// `self` x [P, N, K], `dy` [P, N, F], `group_sizes` [P, G] -> [G, K, F]: per group, the sum over
    /// every shard's rows of `x[i]ᵀ dy[i]` (the weight gradient of [`Tensor::ragged_dot`]). Reduced into
    /// `spec.weight_sharding` inside the manual computation when its axes are all shard axes; otherwise
    /// each shard's sums leave it and are added outside.
    pub fn ragged_dot_weight_grad(&self, dy: &Tensor, group_sizes: &Tensor, spec: &RaggedSpec) -> Tensor {
        let (x, gs) = (self, group_sizes);
        assert!(x.rank() == 3 && dy.rank() == 3 && gs.rank() == 2, "ragged_dot_weight_grad {:?}, {:?} by {:?}", x.ty, dy.ty, gs.ty);
        assert_eq!(&x.dims()[..2], &dy.dims()[..2], "ragged_dot_weight_grad rows of {:?} and {:?}", x.ty, dy.ty);
        assert_eq!(gs.dims()[0], x.dims()[0], "ragged_dot_weight_grad group sizes {:?} for {:?}", gs.ty, x.ty);
        assert_eq!(x.dtype(), dy.dtype(), "ragged_dot_weight_grad operand types {:?} vs {:?}", x.ty, dy.ty);
        let (p, g, k, f) = (x.dims()[0], gs.dims()[1], x.dims()[2], dy.dims()[2]);
        let axes = vec![None, x.ty.axes[2], dy.ty.axes[2]];
        let reducible = spec.weight_sharding.as_ref().is_some_and(|s| s.dims.len() == 3 && s.dims.iter().flatten().all(|a| spec.shard_axes.contains(a)));
        if reducible {
            let ty = TensorType { dtype: x.dtype(), dims: vec![g, k, f], axes };
            return push(RaggedKind::WeightGradReduced, spec, &[x, dy, gs], ty);
        }
        let mut all = axes;
        all.insert(0, x.ty.axes[0]);
        let ty = TensorType { dtype: x.dtype(), dims: vec![p, g, k, f], axes: all };
        push(RaggedKind::WeightGrad, spec, &[x, dy, gs], ty).sum(&[0])
    }
}

/// Checks x [P, N, ·], w [G, ·, ·] and sizes [P, G], x's dim 2 against w's dim `w_contract`.
fn check(x: &Tensor, w: &Tensor, gs: &Tensor, x_contract: usize, w_contract: usize) {
    assert!(x.rank() == 3 && w.rank() == 3 && gs.rank() == 2, "ragged_dot {:?} x {:?} by {:?}", x.ty, w.ty, gs.ty);
    assert_eq!(x.dims()[x_contract], w.dims()[w_contract], "ragged_dot contracting dims of {:?} and {:?}", x.ty, w.ty);
    assert_eq!(gs.dims(), &[x.dims()[0], w.dims()[0]][..], "ragged_dot group sizes {:?} for {:?} and {:?}", gs.ty, x.ty, w.ty);
    assert_eq!(x.dtype(), w.dtype(), "ragged_dot operand types {:?} vs {:?}", x.ty, w.ty);
}

fn push(kind: RaggedKind, spec: &RaggedSpec, ins: &[&Tensor], ty: TensorType) -> Tensor {
    Graph::innermost(ins).push(Op::RaggedDot { kind, spec: spec.clone() }, ins, vec![ty]).remove(0)
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

/// [`Op::RaggedDot`] on one device's operands traced from ordinary ops, exactly: every row times every
/// group's weights, then the row's own group picked by a one-hot contraction. `a` is x; `b` is w (`Rows`,
/// `RowsTransposed`) or dy (the weight gradients, which come out per shard: [P, G, K, F]).
pub fn ragged_dot_dense(kind: RaggedKind, a: &Tensor, b: &Tensor, sizes: &Tensor) -> Tensor {
    let (p, n) = (a.dims()[0], a.dims()[1]);
    let onehot = row_groups(sizes, n, a.dtype());
    let groups = sizes.dims()[1];
    let pick = |all: Tensor| {
        let dims = DotDims { lhs_batch: vec![0, 1], rhs_batch: vec![0, 1], lhs_contract: vec![2], rhs_contract: vec![2] };
        onehot.dot_general(&all, dims, Precision::Default, None)
    };
    match kind {
        // [P, N, G, ·]: every row through every group's weights.
        RaggedKind::Rows => pick(a.dot_general(b, DotDims { lhs_contract: vec![2], rhs_contract: vec![1], ..Default::default() }, Precision::Default, None)),
        RaggedKind::RowsTransposed => pick(a.dot_general(b, DotDims { lhs_contract: vec![2], rhs_contract: vec![2], ..Default::default() }, Precision::Default, None)),
        RaggedKind::WeightGrad | RaggedKind::WeightGradReduced => {
            let k = a.dims()[2];
            let shape = [p, n, groups, k];
            let masked = &onehot.broadcast_in_dim(&shape, &[0, 1, 2]) * &a.broadcast_in_dim(&shape, &[0, 1, 3]);
            let dims = DotDims { lhs_batch: vec![0], rhs_batch: vec![0], lhs_contract: vec![1], rhs_contract: vec![1] };
            masked.dot_general(b, dims, Precision::Default, None)
        }
    }
}
