//! Tensor types: element type, dims and optional axis names.

use super::DType;
use std::fmt;

/// An axis name, e.g. "batch", "seq", "embed". Model code uses string literals.
pub type AxisName = &'static str;

/// The static type of a traced tensor. `axes[i]` names dim `i` (or is `None`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub dims: Vec<i64>,
    pub axes: Vec<Option<AxisName>>,
}

impl TensorType {
    pub fn new(dtype: DType, dims: &[i64]) -> TensorType {
        TensorType { dtype, dims: dims.to_vec(), axes: vec![None; dims.len()] }
    }

    pub fn named(dtype: DType, dims: &[i64], axes: &[AxisName]) -> TensorType {
        assert_eq!(dims.len(), axes.len(), "dims {dims:?} and axes {axes:?} differ in rank");
        TensorType { dtype, dims: dims.to_vec(), axes: axes.iter().map(|a| Some(*a)).collect() }
    }

    pub fn scalar(dtype: DType) -> TensorType {
        TensorType::new(dtype, &[])
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    pub fn num_elements(&self) -> i64 {
        self.dims.iter().product()
    }

    pub fn size_bytes(&self) -> u64 {
        self.num_elements() as u64 * self.dtype.size_bytes() as u64
    }

    pub fn with_dtype(&self, dtype: DType) -> TensorType {
        TensorType { dtype, ..self.clone() }
    }

    /// Same dtype and dims (axis names are not part of the StableHLO type).
    pub fn same_shape(&self, other: &TensorType) -> bool {
        self.dtype == other.dtype && self.dims == other.dims
    }

    /// The MLIR type: `tensor<4x8xf32>`, `tensor<f32>`.
    pub fn mlir(&self) -> String {
        let mut s = String::from("tensor<");
        for d in &self.dims {
            s += &format!("{d}x");
        }
        s += self.dtype.mlir();
        s.push('>');
        s
    }

    /// Index of the dim named `name`, if any.
    pub fn axis_index(&self, name: &str) -> Option<usize> {
        self.axes.iter().position(|a| *a == Some(name))
    }
}

impl fmt::Debug for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            match self.axes[i] {
                Some(a) => write!(f, "{a}={d}")?,
                None => write!(f, "{d}")?,
            }
        }
        write!(f, "]")
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
