//! Constants, iota and elementwise ops (unary, binary, compare, select, clamp, convert).
//! Elementwise ops require equal dims and dtypes, as StableHLO does; shape errors are tracing bugs and panic
//! with both types.

use super::{BinaryOp, CompareDir, DType, Graph, Literal, Op, Tensor, TensorType, UnaryOp};

impl Graph {
    pub fn constant(&self, lit: Literal, ty: TensorType) -> Tensor {
        if let Literal::Dense(bytes) = &lit {
            assert_eq!(bytes.len() as u64, ty.size_bytes(), "constant of type {ty:?} given {} bytes", bytes.len());
        }
        self.push(Op::Constant(lit), &[], vec![ty]).remove(0)
    }

    /// A scalar constant of `dtype`.
    pub fn scalar(&self, value: f64, dtype: DType) -> Tensor {
        self.full(value, dtype, &[])
    }

    /// A constant filled with `value`.
    pub fn full(&self, value: f64, dtype: DType, dims: &[i64]) -> Tensor {
        let lit = if dtype.is_int() { Literal::SplatInt(value as i64) } else { Literal::Splat(value) };
        self.constant(lit, TensorType::new(dtype, dims))
    }

    pub fn zeros(&self, dtype: DType, dims: &[i64]) -> Tensor {
        self.full(0.0, dtype, dims)
    }

    pub fn from_f32(&self, data: &[f32], dims: &[i64]) -> Tensor {
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.constant(Literal::Dense(bytes), TensorType::new(DType::F32, dims))
    }

    pub fn from_i32(&self, data: &[i32], dims: &[i64]) -> Tensor {
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.constant(Literal::Dense(bytes), TensorType::new(DType::S32, dims))
    }

    pub fn from_u64(&self, data: &[u64], dims: &[i64]) -> Tensor {
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.constant(Literal::Dense(bytes), TensorType::new(DType::U64, dims))
    }

    /// `iota` along `dim` of a tensor of `dims`.
    pub fn iota(&self, dtype: DType, dims: &[i64], dim: usize) -> Tensor {
        assert!(dim < dims.len(), "iota dim {dim} out of range for dims {dims:?}");
        self.push(Op::Iota { dim: dim as i64 }, &[], vec![TensorType::new(dtype, dims)]).remove(0)
    }
}

fn same_type(op: &str, a: &Tensor, b: &Tensor) {
    assert!(a.ty.same_shape(&b.ty), "{op}: operand types differ: {:?} vs {:?}", a.ty, b.ty);
}

/// Axis names of an elementwise result: the lhs name, else the rhs name.
fn merged_axes(a: &TensorType, b: &TensorType) -> Vec<Option<super::AxisName>> {
    a.axes.iter().zip(&b.axes).map(|(x, y)| x.or(*y)).collect()
}

impl Tensor {
    pub fn unary(&self, op: UnaryOp) -> Tensor {
        let float_only = !matches!(op, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Not);
        if float_only {
            assert!(self.dtype().is_float(), "{op:?} needs a float operand, got {:?}", self.ty);
        }
        let ty = if op == UnaryOp::IsFinite { self.ty.with_dtype(DType::Pred) } else { self.ty.clone() };
        self.graph().push(Op::Unary(op), &[self], vec![ty]).remove(0)
    }

    pub fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Tensor {
        same_type(&format!("{op:?}"), self, rhs);
        let mut ty = self.ty.clone();
        ty.axes = merged_axes(&self.ty, &rhs.ty);
        Graph::innermost(&[self, rhs]).push(Op::Binary(op), &[self, rhs], vec![ty]).remove(0)
    }

    pub fn compare(&self, dir: CompareDir, rhs: &Tensor) -> Tensor {
        same_type(&format!("compare {dir:?}"), self, rhs);
        let mut ty = self.ty.with_dtype(DType::Pred);
        ty.axes = merged_axes(&self.ty, &rhs.ty);
        Graph::innermost(&[self, rhs]).push(Op::Compare(dir), &[self, rhs], vec![ty]).remove(0)
    }

    /// `pred ? on_true : on_false` elementwise; `self` is the predicate (or a scalar predicate).
    pub fn select(&self, on_true: &Tensor, on_false: &Tensor) -> Tensor {
        same_type("select", on_true, on_false);
        assert_eq!(self.dtype(), DType::Pred, "select predicate must be pred, got {:?}", self.ty);
        assert!(
            self.rank() == 0 || self.dims() == on_true.dims(),
            "select: predicate {:?} vs values {:?}",
            self.ty,
            on_true.ty
        );
        let mut ty = on_true.ty.clone();
        ty.axes = merged_axes(&on_true.ty, &on_false.ty);
        let inputs = [self, on_true, on_false];
        Graph::innermost(&inputs).push(Op::Select, &inputs, vec![ty]).remove(0)
    }

    /// Clamps `self` to `[min, max]` (scalars or same shape).
    pub fn clamp(&self, min: &Tensor, max: &Tensor) -> Tensor {
        for b in [min, max] {
            assert!(
                b.dtype() == self.dtype() && (b.rank() == 0 || b.dims() == self.dims()),
                "clamp: bound {:?} vs operand {:?}",
                b.ty,
                self.ty
            );
        }
        let inputs = [min, self, max];
        Graph::innermost(&inputs).push(Op::Clamp, &inputs, vec![self.ty.clone()]).remove(0)
    }

    /// Converts the element type (no-op when it already matches).
    pub fn convert(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        self.graph().push(Op::Convert, &[self], vec![self.ty.with_dtype(dtype)]).remove(0)
    }

    /// Reinterprets the bits as `dtype` of the same width.
    pub fn bitcast(&self, dtype: DType) -> Tensor {
        assert_eq!(dtype.size_bytes(), self.dtype().size_bytes(), "bitcast {:?} to {dtype}", self.ty);
        self.graph().push(Op::BitcastConvert, &[self], vec![self.ty.with_dtype(dtype)]).remove(0)
    }

    /// A constant of this tensor's type filled with `value`.
    pub fn full_like(&self, value: f64) -> Tensor {
        let t = self.graph().full(value, self.dtype(), self.dims());
        t.with_axes(&self.ty.axes)
    }

    pub fn add_scalar(&self, v: f64) -> Tensor {
        self + &self.full_like(v)
    }

    pub fn mul_scalar(&self, v: f64) -> Tensor {
        self * &self.full_like(v)
    }

    pub fn exp(&self) -> Tensor {
        self.unary(UnaryOp::Exp)
    }
    pub fn log(&self) -> Tensor {
        self.unary(UnaryOp::Log)
    }
    pub fn sqrt(&self) -> Tensor {
        self.unary(UnaryOp::Sqrt)
    }
    pub fn rsqrt(&self) -> Tensor {
        self.unary(UnaryOp::Rsqrt)
    }
    pub fn tanh(&self) -> Tensor {
        self.unary(UnaryOp::Tanh)
    }
    pub fn sigmoid(&self) -> Tensor {
        self.unary(UnaryOp::Logistic)
    }
    pub fn abs(&self) -> Tensor {
        self.unary(UnaryOp::Abs)
    }
    pub fn neg(&self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
    pub fn max(&self, rhs: &Tensor) -> Tensor {
        self.binary(BinaryOp::Max, rhs)
    }
    pub fn min(&self, rhs: &Tensor) -> Tensor {
        self.binary(BinaryOp::Min, rhs)
    }
    pub fn pow(&self, rhs: &Tensor) -> Tensor {
        self.binary(BinaryOp::Pow, rhs)
    }
    pub fn lt(&self, rhs: &Tensor) -> Tensor {
        self.compare(CompareDir::Lt, rhs)
    }
    pub fn le(&self, rhs: &Tensor) -> Tensor {
        self.compare(CompareDir::Le, rhs)
    }
    pub fn gt(&self, rhs: &Tensor) -> Tensor {
        self.compare(CompareDir::Gt, rhs)
    }
    pub fn ge(&self, rhs: &Tensor) -> Tensor {
        self.compare(CompareDir::Ge, rhs)
    }
    pub fn eq_(&self, rhs: &Tensor) -> Tensor {
        self.compare(CompareDir::Eq, rhs)
    }
    pub fn ne_(&self, rhs: &Tensor) -> Tensor {
        self.compare(CompareDir::Ne, rhs)
    }
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $op:expr) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.binary($op, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                self.binary($op, &rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.binary($op, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                self.binary($op, &rhs)
            }
        }
    };
}

binary_operator!(Add, add, BinaryOp::Add);
binary_operator!(Sub, sub, BinaryOp::Sub);
binary_operator!(Mul, mul, BinaryOp::Mul);
binary_operator!(Div, div, BinaryOp::Div);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
}

impl std::ops::Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
}
