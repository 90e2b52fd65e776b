//! Named-axis sugar above the literal ops: contractions, transposes, reductions, splits and broadcasts
//! name axes instead of integer dims (`q.dot(&k, &["head_dim"])`). Every method panics with both types
//! when a name is missing: that is a bug in model code.

use super::{AxisName, DotDims, Precision, ReduceKind, Tensor};

impl Tensor {
    /// Index of the dim named `name`.
    pub fn axis(&self, name: &str) -> usize {
        self.ty.axis_index(name).unwrap_or_else(|| panic!("no axis {name:?} in {:?}", self.ty))
    }

    pub fn dim(&self, name: &str) -> i64 {
        self.dims()[self.axis(name)]
    }

    /// Contracts over `contract`; axes named in both operands and not contracted are batch axes.
    /// Result axes: batch (in lhs order), lhs free, rhs free. Accumulates in `out_dtype` when given.
    pub fn dot_named(&self, rhs: &Tensor, contract: &[AxisName], out_dtype: Option<super::DType>) -> Tensor {
        let mut dims = DotDims::default();
        for name in contract {
            dims.lhs_contract.push(self.axis(name) as i64);
            dims.rhs_contract.push(rhs.axis(name) as i64);
        }
        for (i, a) in self.ty.axes.iter().enumerate() {
            if let Some(a) = a {
                if !contract.contains(a) {
                    if let Some(j) = rhs.ty.axis_index(a) {
                        dims.lhs_batch.push(i as i64);
                        dims.rhs_batch.push(j as i64);
                    }
                }
            }
        }
        self.dot_general(rhs, dims, Precision::Default, out_dtype)
    }

    /// `dot_named` in the operands' dtype.
    pub fn dot(&self, rhs: &Tensor, contract: &[AxisName]) -> Tensor {
        self.dot_named(rhs, contract, None)
    }

    /// Transposes to the given axis order (every axis named once).
    pub fn transpose_to(&self, order: &[AxisName]) -> Tensor {
        assert_eq!(order.len(), self.rank(), "transpose_to {order:?} of {:?}", self.ty);
        let perm: Vec<i64> = order.iter().map(|n| self.axis(n) as i64).collect();
        self.transpose(&perm)
    }

    pub fn sum_over(&self, names: &[AxisName]) -> Tensor {
        let dims: Vec<i64> = names.iter().map(|n| self.axis(n) as i64).collect();
        self.reduce(ReduceKind::Sum, &dims)
    }

    pub fn max_over(&self, names: &[AxisName]) -> Tensor {
        let dims: Vec<i64> = names.iter().map(|n| self.axis(n) as i64).collect();
        self.reduce(ReduceKind::Max, &dims)
    }

    /// Splits axis `name` into `parts` (sizes must multiply to its size), in place.
    pub fn split_axis(&self, name: &str, parts: &[(AxisName, i64)]) -> Tensor {
        let i = self.axis(name);
        let n: i64 = parts.iter().map(|p| p.1).product();
        assert_eq!(n, self.dims()[i], "split_axis {name:?} of {:?} into {parts:?}", self.ty);
        let mut dims = self.dims()[..i].to_vec();
        let mut axes = self.ty.axes[..i].to_vec();
        for (a, s) in parts {
            dims.push(*s);
            axes.push(Some(*a));
        }
        dims.extend_from_slice(&self.dims()[i + 1..]);
        axes.extend_from_slice(&self.ty.axes[i + 1..]);
        self.reshape(&dims).with_axes(&axes)
    }

    /// Merges adjacent axes `names` (in order) into one axis `into`.
    pub fn merge_axes(&self, names: &[AxisName], into: AxisName) -> Tensor {
        let first = self.axis(names[0]);
        for (k, n) in names.iter().enumerate() {
            assert_eq!(self.axis(n), first + k, "merge_axes {names:?}: not adjacent in {:?}", self.ty);
        }
        let size: i64 = names.iter().map(|n| self.dim(n)).product();
        let mut dims = self.dims()[..first].to_vec();
        let mut axes = self.ty.axes[..first].to_vec();
        dims.push(size);
        axes.push(Some(into));
        dims.extend_from_slice(&self.dims()[first + names.len()..]);
        axes.extend_from_slice(&self.ty.axes[first + names.len()..]);
        self.reshape(&dims).with_axes(&axes)
    }

    /// Renames axis `from` to `to`.
    pub fn rename(&self, from: &str, to: AxisName) -> Tensor {
        let i = self.axis(from);
        let mut axes = self.ty.axes.clone();
        axes[i] = Some(to);
        self.with_axes(&axes)
    }

    /// Broadcasts to `target`'s dims and names: each named axis of `self` goes to the axis of the same name.
    pub fn broadcast_like(&self, target: &super::TensorType) -> Tensor {
        let dims: Vec<i64> = self
            .ty
            .axes
            .iter()
            .map(|a| {
                let a = a.unwrap_or_else(|| panic!("broadcast_like: unnamed axis in {:?}", self.ty));
                target.axis_index(a).unwrap_or_else(|| panic!("broadcast_like: no axis {a:?} in {target:?}")) as i64
            })
            .collect();
        let out = self.broadcast_in_dim(&target.dims, &dims);
        out.with_axes(&target.axes)
    }

    /// Elementwise `self op other` after broadcasting both by name to the union of their axes (self's
    /// axes first, then other's new ones).
    pub fn zip_named(&self, other: &Tensor, f: impl Fn(&Tensor, &Tensor) -> Tensor) -> Tensor {
        let mut ty = self.ty.clone();
        for (i, a) in other.ty.axes.iter().enumerate() {
            let a = a.unwrap_or_else(|| panic!("zip_named: unnamed axis in {:?}", other.ty));
            match ty.axis_index(a) {
                Some(j) => assert_eq!(ty.dims[j], other.dims()[i], "zip_named: {a:?} in {:?} vs {:?}", self.ty, other.ty),
                None => {
                    ty.dims.push(other.dims()[i]);
                    ty.axes.push(Some(a));
                }
            }
        }
        ty.dtype = self.dtype();
        let a = if self.ty == ty { self.clone() } else { self.broadcast_like(&ty) };
        let mut oty = ty.clone();
        oty.dtype = other.dtype();
        let b = if other.ty == oty { other.clone() } else { other.broadcast_like(&oty) };
        f(&a, &b)
    }
}
