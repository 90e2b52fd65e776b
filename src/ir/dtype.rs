//! Element types, shared by the tracer, the emitter and the PJRT runtime.

use std::fmt;

/// An element type at StableHLO level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    BF16,
    F16,
    S64,
    S32,
    S8,
    U64,
    U32,
    U8,
    Pred,
}

impl DType {
    /// The MLIR spelling of the element type (`f32`, `bf16`, `i32`, `ui32`, `i1`).
    pub fn mlir(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::S64 => "i64",
            DType::S32 => "i32",
            DType::S8 => "i8",
            DType::U64 => "ui64",
            DType::U32 => "ui32",
            DType::U8 => "ui8",
            DType::Pred => "i1",
        }
    }

    /// Bytes per element on the host (pred is one byte, as PJRT stores it).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 | DType::S64 | DType::U64 => 8,
            DType::F32 | DType::S32 | DType::U32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::S8 | DType::U8 | DType::Pred => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::BF16 | DType::F16)
    }

    pub fn is_int(self) -> bool {
        matches!(self, DType::S64 | DType::S32 | DType::S8 | DType::U64 | DType::U32 | DType::U8)
    }

    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::S64 | DType::S32 | DType::S8)
    }

    /// MaxText / numpy name (`float32`, `bfloat16`, `int32`, `bool`).
    pub fn numpy_name(self) -> &'static str {
        match self {
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
            DType::S64 => "int64",
            DType::S32 => "int32",
            DType::S8 => "int8",
            DType::U64 => "uint64",
            DType::U32 => "uint32",
            DType::U8 => "uint8",
            DType::Pred => "bool",
        }
    }

    /// Parses a MaxText / numpy dtype name.
    pub fn from_name(name: &str) -> Option<DType> {
        Some(match name {
            "float64" | "f64" => DType::F64,
            "float32" | "f32" | "fp32" => DType::F32,
            "bfloat16" | "bf16" => DType::BF16,
            "float16" | "f16" | "fp16" | "half" => DType::F16,
            "int64" | "s64" | "i64" => DType::S64,
            "int32" | "s32" | "i32" => DType::S32,
            "int8" | "s8" | "i8" => DType::S8,
            "uint64" | "u64" => DType::U64,
            "uint32" | "u32" => DType::U32,
            "uint8" | "u8" => DType::U8,
            "bool" | "pred" => DType::Pred,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.numpy_name())
    }
}
