//! Element types of zarr arrays as orbax / tensorstore name them (zarr v2 `dtype`, zarr v3 `data_type`),
//! and their mapping to the host tensors of this crate.

use std::fmt;

use crate::ir::DType;

/// Every element type orbax writes. Sizes are bytes per element on disk; `Int4` takes one byte per element
/// (low nibble, two's complement) and is returned sign-extended to one `i8` per element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ZarrDType {
    Bool,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F16,
    BF16,
    F32,
    F64,
    F8E4M3FN,
    F8E5M2,
    C64,
    C128,
    Int4,
}

/// Byte order of the stored elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

use ZarrDType::*;

impl ZarrDType {
    /// Bytes per element in memory and on disk.
    pub fn size(self) -> usize {
        match self {
            Bool | I8 | U8 | F8E4M3FN | F8E5M2 | Int4 => 1,
            I16 | U16 | F16 | BF16 => 2,
            I32 | U32 | F32 => 4,
            I64 | U64 | F64 | C64 => 8,
            C128 => 16,
        }
    }

    /// The unit that a byte swap reverses (a complex number swaps each component).
    pub fn swap_unit(self) -> usize {
        match self {
            C64 => 4,
            C128 => 8,
            d => d.size(),
        }
    }

    /// The numpy / zarr3 name (`float32`, `bfloat16`, `int4`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Bool => "bool",
            I8 => "int8",
            U8 => "uint8",
            I16 => "int16",
            U16 => "uint16",
            I32 => "int32",
            U32 => "uint32",
            I64 => "int64",
            U64 => "uint64",
            F16 => "float16",
            BF16 => "bfloat16",
            F32 => "float32",
            F64 => "float64",
            F8E4M3FN => "float8_e4m3fn",
            F8E5M2 => "float8_e5m2",
            C64 => "complex64",
            C128 => "complex128",
            Int4 => "int4",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, F16 | BF16 | F32 | F64 | F8E4M3FN | F8E5M2)
    }

    /// Parses a zarr v3 `data_type`.
    pub fn from_zarr3(s: &str) -> Option<ZarrDType> {
        const ALL: [ZarrDType; 18] =
            [Bool, I8, U8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, F8E4M3FN, F8E5M2, C64, C128, Int4];
        ALL.into_iter().find(|d| d.name() == s)
    }

    /// Parses a zarr v2 `dtype` (`<f4`, `>i4`, `|b1`, `bfloat16`, `float8_e4m3fn`, `int4`) into the type and
    /// its byte order. The ml_dtypes names carry no byte-order prefix and are little-endian.
    pub fn from_zarr2(s: &str) -> Option<(ZarrDType, Endian)> {
        if let Some(d) = ZarrDType::from_zarr3(s).filter(|d| matches!(d, BF16 | F8E4M3FN | F8E5M2 | Int4)) {
            return Some((d, Endian::Little));
        }
        let (order, code) = match s.as_bytes().first()? {
            b'<' | b'|' | b'=' => (Endian::Little, &s[1..]),
            b'>' => (Endian::Big, &s[1..]),
            _ => (Endian::Little, s),
        };
        let d = match code {
            "b1" => Bool,
            "i1" => I8,
            "u1" => U8,
            "i2" => I16,
            "u2" => U16,
            "i4" => I32,
            "u4" => U32,
            "i8" => I64,
            "u8" => U64,
            "f2" => F16,
            "f4" => F32,
            "f8" => F64,
            "c8" => C64,
            "c16" => C128,
            _ => return None,
        };
        Some((d, order))
    }

    /// The zarr v2 `dtype` string orbax writes (always little-endian).
    pub fn zarr2_name(self) -> &'static str {
        match self {
            Bool => "|b1",
            I8 => "|i1",
            U8 => "|u1",
            I16 => "<i2",
            U16 => "<u2",
            I32 => "<i4",
            U32 => "<u4",
            I64 => "<i8",
            U64 => "<u8",
            F16 => "<f2",
            F32 => "<f4",
            F64 => "<f8",
            C64 => "<c8",
            C128 => "<c16",
            BF16 | F8E4M3FN | F8E5M2 | Int4 => self.name(),
        }
    }

    /// The host tensor type, where this crate has one.
    pub fn to_host(self) -> Option<DType> {
        Some(match self {
            Bool => DType::Pred,
            I8 => DType::S8,
            U8 => DType::U8,
            I32 => DType::S32,
            U32 => DType::U32,
            I64 => DType::S64,
            U64 => DType::U64,
            F16 => DType::F16,
            BF16 => DType::BF16,
            F32 => DType::F32,
            F64 => DType::F64,
            I16 | U16 | F8E4M3FN | F8E5M2 | C64 | C128 | Int4 => return None,
        })
    }

    pub fn from_host(d: DType) -> ZarrDType {
        match d {
            DType::Pred => Bool,
            DType::S8 => I8,
            DType::U8 => U8,
            DType::S32 => I32,
            DType::U32 => U32,
            DType::S64 => I64,
            DType::U64 => U64,
            DType::F16 => F16,
            DType::BF16 => BF16,
            DType::F32 => F32,
            DType::F64 => F64,
        }
    }
}

impl fmt::Display for ZarrDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Converts stored element bytes to the in-memory convention: little-endian, and int4 sign-extended to i8.
pub fn to_native(dtype: ZarrDType, endian: Endian, data: &mut [u8]) {
    if endian == Endian::Big {
        let u = dtype.swap_unit();
        if u > 1 {
            data.chunks_exact_mut(u).for_each(|c| c.reverse());
        }
    }
    if dtype == Int4 {
        data.iter_mut().for_each(|b| *b = (((*b << 4) as i8) >> 4) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_orbax_dtype_strings() {
        assert_eq!(ZarrDType::from_zarr2("<f4"), Some((F32, Endian::Little)));
        assert_eq!(ZarrDType::from_zarr2(">i4"), Some((I32, Endian::Big)));
        assert_eq!(ZarrDType::from_zarr2("|b1"), Some((Bool, Endian::Little)));
        assert_eq!(ZarrDType::from_zarr2("bfloat16"), Some((BF16, Endian::Little)));
        assert_eq!(ZarrDType::from_zarr2("<c8"), Some((C64, Endian::Little)));
        assert_eq!(ZarrDType::from_zarr2("<U4"), None);
        assert_eq!(ZarrDType::from_zarr3("float8_e5m2"), Some(F8E5M2));
        for d in [Bool, I8, U16, I64, F16, BF16, F64, C64, Int4] {
            assert_eq!(ZarrDType::from_zarr2(d.zarr2_name()).unwrap().0, d);
        }
    }

    #[test]
    fn native_conversion_swaps_and_sign_extends() {
        let mut b = vec![0x3f, 0x80, 0, 0];
        to_native(F32, Endian::Big, &mut b);
        assert_eq!(f32::from_le_bytes(b.try_into().unwrap()), 1.0);
        let mut n = vec![0x01, 0x0e, 0x03, 0x08];
        to_native(Int4, Endian::Little, &mut n);
        assert_eq!(n.iter().map(|b| *b as i8).collect::<Vec<_>>(), vec![1, -2, 3, -8]);
    }
}
