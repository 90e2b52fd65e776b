//! Host-side tensors: typed bytes with dims, the currency between data, checkpoints and device buffers.

use crate::ir::DType;
use half::{bf16, f16};

/// A dense row-major array in host memory, little-endian.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub dtype: DType,
    pub dims: Vec<i64>,
    pub data: Vec<u8>,
}

macro_rules! from_slice {
    ($name:ident, $t:ty, $dtype:expr) => {
        pub fn $name(values: &[$t], dims: &[i64]) -> HostTensor {
            HostTensor::from_bytes($dtype, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    };
}

impl HostTensor {
    /// Panics when the byte count does not match `dims` (a caller bug, not user input).
    pub fn from_bytes(dtype: DType, dims: &[i64], data: Vec<u8>) -> HostTensor {
        let n: i64 = dims.iter().product();
        assert_eq!(data.len(), n as usize * dtype.size_bytes(), "{dtype}{dims:?} given {} bytes", data.len());
        HostTensor { dtype, dims: dims.to_vec(), data }
    }

    from_slice!(from_f32, f32, DType::F32);
    from_slice!(from_f64, f64, DType::F64);
    from_slice!(from_i32, i32, DType::S32);
    from_slice!(from_i64, i64, DType::S64);
    from_slice!(from_u32, u32, DType::U32);
    from_slice!(from_u64, u64, DType::U64);
    from_slice!(from_u8, u8, DType::U8);

    pub fn from_bool(values: &[bool], dims: &[i64]) -> HostTensor {
        HostTensor::from_bytes(DType::Pred, dims, values.iter().map(|b| *b as u8).collect())
    }

    /// f32 values rounded to `dtype` (f32, bf16, f16 or f64).
    pub fn from_f32_as(values: &[f32], dims: &[i64], dtype: DType) -> HostTensor {
        let data = match dtype {
            DType::F32 => return HostTensor::from_f32(values, dims),
            DType::F64 => values.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect(),
            DType::BF16 => values.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
            DType::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
            _ => panic!("from_f32_as: {dtype} is not a float type"),
        };
        HostTensor::from_bytes(dtype, dims, data)
    }

    pub fn num_elements(&self) -> usize {
        self.dims.iter().product::<i64>() as usize
    }

    /// Values as f64, converting from any element type.
    pub fn to_f64(&self) -> Vec<f64> {
        let d = &self.data;
        let n = self.num_elements();
        let at = |i: usize, w: usize| &d[i * w..(i + 1) * w];
        (0..n)
            .map(|i| match self.dtype {
                DType::F64 => f64::from_le_bytes(at(i, 8).try_into().unwrap()),
                DType::F32 => f32::from_le_bytes(at(i, 4).try_into().unwrap()) as f64,
                DType::BF16 => bf16::from_le_bytes(at(i, 2).try_into().unwrap()).to_f64(),
                DType::F16 => f16::from_le_bytes(at(i, 2).try_into().unwrap()).to_f64(),
                DType::S64 => i64::from_le_bytes(at(i, 8).try_into().unwrap()) as f64,
                DType::S32 => i32::from_le_bytes(at(i, 4).try_into().unwrap()) as f64,
                DType::S8 => d[i] as i8 as f64,
                DType::U64 => u64::from_le_bytes(at(i, 8).try_into().unwrap()) as f64,
                DType::U32 => u32::from_le_bytes(at(i, 4).try_into().unwrap()) as f64,
                DType::U8 | DType::Pred => d[i] as f64,
            })
            .collect()
    }

    pub fn to_f32(&self) -> Vec<f32> {
        if self.dtype == DType::F32 {
            return self.data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        }
        self.to_f64().into_iter().map(|v| v as f32).collect()
    }

    /// Integer values (exact for every integer type except u64 above i64::MAX).
    pub fn to_i64(&self) -> Vec<i64> {
        let d = &self.data;
        match self.dtype {
            DType::S64 | DType::U64 => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
            DType::S32 => d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
            DType::U32 => d.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
            _ => self.to_f64().into_iter().map(|v| v as i64).collect(),
        }
    }

    pub fn to_u64(&self) -> Vec<u64> {
        match self.dtype {
            DType::U64 => self.data.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect(),
            _ => self.to_i64().into_iter().map(|v| v as u64).collect(),
        }
    }
}
