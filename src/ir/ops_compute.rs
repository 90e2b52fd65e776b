//! Contractions, reductions, sorting, loops, random bits and sharding constraints.

use super::{
    DType, DotDims, Graph, Op, Precision, ReduceKind, RngAlgorithm, Sharding, Tensor, TensorType,
};

impl Tensor {
    /// `stablehlo.dot_general`. Result dims: batch, then lhs free, then rhs free (StableHLO's order).
    /// `out_dtype` lets bf16 operands accumulate into an f32 result.
    pub fn dot_general(&self, rhs: &Tensor, dims: DotDims, precision: Precision, out_dtype: Option<DType>) -> Tensor {
        assert_eq!(self.dtype(), rhs.dtype(), "dot_general operand types {:?} vs {:?}", self.ty, rhs.ty);
        assert_eq!(dims.lhs_batch.len(), dims.rhs_batch.len(), "dot_general batch dims {dims:?}");
        assert_eq!(dims.lhs_contract.len(), dims.rhs_contract.len(), "dot_general contracting dims {dims:?}");
        for (l, r) in dims.lhs_batch.iter().zip(&dims.rhs_batch).chain(dims.lhs_contract.iter().zip(&dims.rhs_contract)) {
            assert_eq!(
                self.dims()[*l as usize],
                rhs.dims()[*r as usize],
                "dot_general {:?} x {:?}: dim {l} vs {r} ({dims:?})",
                self.ty,
                rhs.ty
            );
        }
        let mut out = Vec::new();
        let mut axes = Vec::new();
        for &b in &dims.lhs_batch {
            out.push(self.dims()[b as usize]);
            axes.push(self.ty.axes[b as usize]);
        }
        for (t, batch, contract) in [(self, &dims.lhs_batch, &dims.lhs_contract), (rhs, &dims.rhs_batch, &dims.rhs_contract)] {
            for i in 0..t.rank() as i64 {
                if !batch.contains(&i) && !contract.contains(&i) {
                    out.push(t.dims()[i as usize]);
                    axes.push(t.ty.axes[i as usize]);
                }
            }
        }
        let ty = TensorType { dtype: out_dtype.unwrap_or(self.dtype()), dims: out, axes };
        Graph::innermost(&[self, rhs]).push(Op::DotGeneral { dims, precision }, &[self, rhs], vec![ty]).remove(0)
    }

    /// Plain matrix product over the last dim of `self` and the first of `rhs`.
    pub fn matmul(&self, rhs: &Tensor) -> Tensor {
        let dims = DotDims { lhs_contract: vec![self.rank() as i64 - 1], rhs_contract: vec![0], ..Default::default() };
        self.dot_general(rhs, dims, Precision::Default, None)
    }

    /// `stablehlo.reduce` over `dims` with the combiner's identity as init.
    pub fn reduce(&self, kind: ReduceKind, dims: &[i64]) -> Tensor {
        for &d in dims {
            assert!((d as usize) < self.rank(), "reduce {:?} over dims {dims:?}", self.ty);
        }
        let keep: Vec<usize> = (0..self.rank()).filter(|i| !dims.contains(&(*i as i64))).collect();
        let ty = TensorType {
            dtype: self.dtype(),
            dims: keep.iter().map(|&i| self.dims()[i]).collect(),
            axes: keep.iter().map(|&i| self.ty.axes[i]).collect(),
        };
        let mut sorted = dims.to_vec();
        sorted.sort();
        self.graph().push(Op::Reduce { kind, dims: sorted }, &[self], vec![ty]).remove(0)
    }

    pub fn sum(&self, dims: &[i64]) -> Tensor {
        self.reduce(ReduceKind::Sum, dims)
    }

    pub fn reduce_max(&self, dims: &[i64]) -> Tensor {
        self.reduce(ReduceKind::Max, dims)
    }

    pub fn reduce_min(&self, dims: &[i64]) -> Tensor {
        self.reduce(ReduceKind::Min, dims)
    }

    /// (max value, index of its first occurrence) along `dim`; the dim is removed.
    pub fn argmax(&self, dim: usize, index_dtype: DType) -> (Tensor, Tensor) {
        assert!(dim < self.rank(), "argmax {:?} along {dim}", self.ty);
        let keep: Vec<usize> = (0..self.rank()).filter(|i| *i != dim).collect();
        let dims: Vec<i64> = keep.iter().map(|&i| self.dims()[i]).collect();
        let axes: Vec<_> = keep.iter().map(|&i| self.ty.axes[i]).collect();
        let vty = TensorType { dtype: self.dtype(), dims: dims.clone(), axes: axes.clone() };
        let ity = TensorType { dtype: index_dtype, dims, axes };
        let mut out = self.graph().push(Op::ArgMax { dim: dim as i64, index_dtype }, &[self], vec![vty, ity]);
        let i = out.pop().unwrap();
        (out.pop().unwrap(), i)
    }

    /// Cumulative reduction along `dim` (inclusive unless `exclusive`; from the end if `reverse`).
    pub fn cumulative(&self, kind: ReduceKind, dim: usize, reverse: bool, exclusive: bool) -> Tensor {
        assert!(dim < self.rank(), "cumulative {:?} along {dim}", self.ty);
        let op = Op::Cumulative { kind, dim: dim as i64, reverse, exclusive };
        self.graph().push(op, &[self], vec![self.ty.clone()]).remove(0)
    }

    pub fn cumsum(&self, dim: usize) -> Tensor {
        self.cumulative(ReduceKind::Sum, dim, false, false)
    }

    /// The `k` largest values along the last dim and their i32 indices, largest first.
    pub fn top_k(&self, k: i64) -> (Tensor, Tensor) {
        let last = self.rank() - 1;
        assert!(k >= 1 && k <= self.dims()[last], "top_k k={k} of {:?}", self.ty);
        let mut vty = self.ty.clone();
        vty.dims[last] = k;
        let ity = vty.with_dtype(DType::S32);
        let mut out = self.graph().push(Op::TopK { k }, &[self], vec![vty, ity]);
        let i = out.pop().unwrap();
        (out.pop().unwrap(), i)
    }

    /// `stablehlo.triangular_solve` with `self` the batched square matrix `a` ([..., n, n]) and `b`
    /// ([..., n, m] for the left side): solves `a x = b` (or `aᵀ x = b` with `transpose_a`).
    pub fn triangular_solve(&self, b: &Tensor, left_side: bool, lower: bool, unit_diagonal: bool, transpose_a: bool) -> Tensor {
        let r = self.rank();
        assert!(r >= 2 && self.dims()[r - 1] == self.dims()[r - 2], "triangular_solve: a {:?} is not square", self.ty);
        assert!(b.rank() == r && b.dtype() == self.dtype(), "triangular_solve: a {:?} b {:?}", self.ty, b.ty);
        let n = self.dims()[r - 1];
        let bn = if left_side { b.dims()[r - 2] } else { b.dims()[r - 1] };
        assert!(bn == n && b.dims()[..r - 2] == self.dims()[..r - 2], "triangular_solve: a {:?} b {:?}", self.ty, b.ty);
        let op = Op::TriangularSolve { left_side, lower, unit_diagonal, transpose_a };
        if r <= 3 {
            return Graph::innermost(&[self, b]).push(op, &[self, b], vec![b.ty.clone()]).remove(0);
        }
        // Several batch dims are solved as one: libtpu lays a batched solve out with batch dim 0 minor-most
        // in (8, 128) tiles, so a leading batch dim of 1 would be padded 128-fold.
        let batch: i64 = self.dims()[..r - 2].iter().product();
        let a3 = self.reshape(&[batch, n, n]);
        let b3 = b.reshape(&[batch, b.dims()[r - 2], b.dims()[r - 1]]);
        let x = Graph::innermost(&[&a3, &b3]).push(op, &[&a3, &b3], vec![b3.ty.clone()]).remove(0);
        x.reshape(b.dims()).with_axes(&b.ty.axes)
    }

    /// MaxText's `nn.with_logical_constraint`: constrains the tensor to the sharding its logical dim names
    /// resolve to under the trace's rules (`sdy.sharding_constraint`); the identity on one device.
    pub fn constrain(&self, logical_axes: &[&str]) -> Tensor {
        match self.graph().sharding_context() {
            Some(ctx) => self.with_sharding(ctx.resolve(logical_axes, self.dims())),
            None => {
                assert_eq!(logical_axes.len(), self.rank(), "constrain {logical_axes:?} on {:?}", self.ty);
                self.clone()
            }
        }
    }

    /// Annotates the tensor with a sharding (`sdy.sharding_constraint`).
    pub fn with_sharding(&self, sharding: Sharding) -> Tensor {
        assert_eq!(sharding.dims.len(), self.rank(), "sharding {sharding:?} for {:?}", self.ty);
        self.graph().push(Op::ShardingConstraint(sharding), &[self], vec![self.ty.clone()]).remove(0)
    }

    /// This tensor tagged with `name` (MaxText's `checkpoint_name` names: `query_proj`, `mlpwo`, ...), so
    /// that a remat policy saving `name` keeps it for the backward pass instead of recomputing it.
    pub fn checkpoint_name(&self, name: &'static str) -> Tensor {
        self.graph().push(Op::CheckpointName(name), &[self], vec![self.ty.clone()]).remove(0)
    }
}

impl Graph {
    /// Sorts all `operands` along `dim` by the values of the first (ties keep order when `stable`).
    pub fn sort(&self, operands: &[Tensor], dim: usize, descending: bool, stable: bool) -> Vec<Tensor> {
        let first = &operands[0];
        assert!(dim < first.rank(), "sort {:?} along {dim}", first.ty);
        for o in operands {
            assert_eq!(o.dims(), first.dims(), "sort operands {:?} vs {:?}", first.ty, o.ty);
        }
        let refs: Vec<&Tensor> = operands.iter().collect();
        let tys = operands.iter().map(|o| o.ty.clone()).collect();
        self.push(Op::Sort { dim: dim as i64, descending, stable }, &refs, tys)
    }

    /// `stablehlo.while`: `cond` and `body` are traced once, into child functions, with the carries as
    /// parameters; tensors of enclosing functions used inside become captures. Returns the final carries.
    pub fn while_loop(
        &self,
        init: &[Tensor],
        cond: impl FnOnce(&Graph, &[Tensor]) -> Tensor,
        body: impl FnOnce(&Graph, &[Tensor]) -> Vec<Tensor>,
    ) -> Vec<Tensor> {
        let trace = |f: &dyn Fn(&Graph, &[Tensor]) -> Vec<Tensor>| {
            let child = self.child();
            let carries: Vec<Tensor> = init.iter().map(|t| child.param(t.ty.clone())).collect();
            let results = f(&child, &carries);
            child.finish(&results)
        };
        let cond_fn = std::cell::RefCell::new(Some(cond));
        let cond_func = trace(&|g, c| vec![(cond_fn.borrow_mut().take().unwrap())(g, c)]);
        let body_fn = std::cell::RefCell::new(Some(body));
        let body_func = trace(&|g, c| (body_fn.borrow_mut().take().unwrap())(g, c));
        let pred = cond_func.value_type(cond_func.results[0]);
        assert!(pred.dtype == DType::Pred && pred.dims.is_empty(), "while cond must return a scalar pred, got {pred:?}");
        let out = body_func.result_types();
        assert_eq!(out.len(), init.len(), "while body returns {} carries for {} inputs", out.len(), init.len());
        for (o, i) in out.iter().zip(init) {
            assert!(o.same_shape(&i.ty), "while body changes a carry from {:?} to {o:?}", i.ty);
        }
        let captured = |f: &super::Func| -> Vec<Tensor> {
            f.captures.iter().zip(&f.capture_types).map(|(v, ty)| Tensor { f: self.f.clone(), v: *v, ty: ty.clone() }).collect()
        };
        let mut inputs: Vec<Tensor> = init.to_vec();
        inputs.extend(captured(&cond_func));
        inputs.extend(captured(&body_func));
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let tys = init.iter().map(|t| t.ty.clone()).collect();
        let op = Op::While { cond: Box::new(cond_func), body: Box::new(body_func), num_carries: init.len(), trip: None, region: false };
        self.push(op, &refs, tys)
    }

    /// Marks the `while` node producing `carries` as counted from `lower` to `upper` on carry 0.
    fn mark_trip(&self, carries: &[Tensor], lower: i64, upper: i64) {
        let node = carries[0].v.node as usize;
        let mut b = self.f.borrow_mut();
        if let Op::While { trip, .. } = &mut b.func.nodes[node].op {
            *trip = Some((lower, upper));
        }
    }

    /// [`fori_loop`](Self::fori_loop) as a remat region (MaxText's `nn.remat` around a layer or a scanned
    /// block): differentiated, it keeps what the remat policy saves of each iteration and its input carries;
    /// loops inside that are not regions themselves (a layer's chunk or key-block loops) are run again when
    /// the iteration is recomputed, as JAX reruns everything inside a rematerialised function.
    pub fn remat_loop(&self, lower: i64, upper: i64, init: &[Tensor], body: impl FnOnce(&Graph, &Tensor, &[Tensor]) -> Vec<Tensor>) -> Vec<Tensor> {
        let out = self.fori_loop(lower, upper, init, body);
        let node = out.first().map(|t| t.v.node as usize);
        if let Some(node) = node {
            if let Op::While { region, .. } = &mut self.f.borrow_mut().func.nodes[node].op {
                *region = true;
            }
        }
        out
    }

    /// `for i in lower..upper` with an i32 counter; `body(g, i, carries)` returns the new carries.
    pub fn fori_loop(
        &self,
        lower: i64,
        upper: i64,
        init: &[Tensor],
        body: impl FnOnce(&Graph, &Tensor, &[Tensor]) -> Vec<Tensor>,
    ) -> Vec<Tensor> {
        let mut carries = vec![self.full(lower as f64, DType::S32, &[])];
        carries.extend(init.iter().cloned());
        let mut out = self.while_loop(
            &carries,
            |g, c| c[0].lt(&g.full(upper as f64, DType::S32, &[])),
            |g, c| {
                let mut next = vec![&c[0] + &g.full(1.0, DType::S32, &[])];
                next.extend(body(g, &c[0], &c[1..]));
                next
            },
        );
        self.mark_trip(&out, lower, upper);
        out.remove(0);
        out
    }

    /// `stablehlo.rng_bit_generator`: (new state, bits of `out`) from a u64[2] state.
    pub fn rng_bit_generator(&self, state: &Tensor, algorithm: RngAlgorithm, out: TensorType) -> (Tensor, Tensor) {
        assert!(state.dtype() == DType::U64 && state.rank() == 1, "rng state must be u64[n], got {:?}", state.ty);
        assert!(matches!(out.dtype, DType::U32 | DType::U64), "rng bits must be u32 or u64, got {out:?}");
        let mut r = self.push(Op::RngBitGenerator { algorithm }, &[state], vec![state.ty.clone(), out]);
        let bits = r.pop().unwrap();
        (r.pop().unwrap(), bits)
    }

    /// `stablehlo.optimization_barrier` over several tensors.
    pub fn optimization_barrier(&self, ts: &[Tensor]) -> Vec<Tensor> {
        let refs: Vec<&Tensor> = ts.iter().collect();
        self.push(Op::OptimizationBarrier, &refs, ts.iter().map(|t| t.ty.clone()).collect())
    }
}
