//! Attribute and literal spelling for the generic MLIR form.

use crate::ir::{CompareDir, DType, Literal, ReduceKind, TensorType};

/// `array<i64: 1, 0>` (or `array<i64>` when empty).
pub(crate) fn i64_array(v: &[i64]) -> String {
    if v.is_empty() {
        return "array<i64>".to_string();
    }
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("array<i64: {}>", items.join(", "))
}

/// `[1, 0]`
pub(crate) fn list(v: &[i64]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// `name = [..]` fields of a dimension-numbers attribute, skipping empty lists.
pub(crate) fn dims_fields(fields: &[(&str, &[i64])]) -> Vec<String> {
    fields.iter().filter(|(_, v)| !v.is_empty()).map(|(n, v)| format!("{n} = {}", list(v))).collect()
}

/// The bit pattern of a float value in `dtype`, as MLIR's hex float literal (exact, no rounding by the parser).
pub(crate) fn float_hex(v: f64, dtype: DType) -> String {
    match dtype {
        DType::F64 => format!("0x{:016X}", v.to_bits()),
        DType::F32 => format!("0x{:08X}", (v as f32).to_bits()),
        DType::BF16 => format!("0x{:04X}", half::bf16::from_f64(v).to_bits()),
        DType::F16 => format!("0x{:04X}", half::f16::from_f64(v).to_bits()),
        _ => unreachable!("float_hex of {dtype}"),
    }
}

/// A scalar element literal of `dtype`.
pub(crate) fn scalar_literal(v: f64, dtype: DType) -> String {
    if dtype.is_float() {
        float_hex(v, dtype)
    } else if dtype == DType::Pred {
        (v != 0.0).to_string()
    } else {
        (v as i64).to_string()
    }
}

/// `dense<...>` for a literal of type `ty`.
pub(crate) fn dense(lit: &Literal, ty: &TensorType) -> String {
    match lit {
        Literal::Splat(v) => format!("dense<{}>", scalar_literal(*v, ty.dtype)),
        Literal::SplatInt(v) => match ty.dtype {
            DType::Pred => format!("dense<{}>", *v != 0),
            d if d.is_float() => format!("dense<{}>", float_hex(*v as f64, d)),
            DType::U64 => format!("dense<{}>", *v as u64),
            _ => format!("dense<{v}>"),
        },
        Literal::Dense(bytes) if ty.dtype == DType::Pred => {
            // Hex payloads of i1 are bit-packed in MLIR; spell booleans out instead.
            let vals: Vec<bool> = bytes.iter().map(|b| *b != 0).collect();
            format!("dense<{}>", nested(&vals, &ty.dims))
        }
        Literal::Dense(bytes) => {
            let mut s = String::with_capacity(bytes.len() * 2 + 12);
            s.push_str("dense<\"0x");
            for b in bytes {
                s.push_str(&format!("{b:02X}"));
            }
            s.push_str("\">");
            s
        }
    }
}

fn nested(vals: &[bool], dims: &[i64]) -> String {
    if dims.is_empty() {
        return vals[0].to_string();
    }
    let inner: i64 = dims[1..].iter().product();
    let parts: Vec<String> =
        (0..dims[0]).map(|i| nested(&vals[(i * inner) as usize..((i + 1) * inner) as usize], &dims[1..])).collect();
    format!("[{}]", parts.join(", "))
}

/// The identity of a reduction combiner in `dtype`.
pub(crate) fn reduce_init(kind: ReduceKind, dtype: DType) -> String {
    let lit = match (kind, dtype) {
        (ReduceKind::Sum, _) | (ReduceKind::Or, _) => scalar_literal(0.0, dtype),
        (ReduceKind::Prod, _) | (ReduceKind::And, _) => scalar_literal(1.0, dtype),
        (ReduceKind::Max, d) if d.is_float() => float_hex(f64::NEG_INFINITY, d),
        (ReduceKind::Min, d) if d.is_float() => float_hex(f64::INFINITY, d),
        (ReduceKind::Max, DType::Pred) => "false".into(),
        (ReduceKind::Min, DType::Pred) => "true".into(),
        (ReduceKind::Max, d) => int_limit(d, false),
        (ReduceKind::Min, d) => int_limit(d, true),
    };
    format!("dense<{lit}>")
}

fn int_limit(d: DType, max: bool) -> String {
    match (d, max) {
        (DType::S64, true) => i64::MAX.to_string(),
        (DType::S64, false) => i64::MIN.to_string(),
        (DType::S32, true) => i32::MAX.to_string(),
        (DType::S32, false) => i32::MIN.to_string(),
        (DType::S8, true) => i8::MAX.to_string(),
        (DType::S8, false) => i8::MIN.to_string(),
        (DType::U64, true) => u64::MAX.to_string(),
        (DType::U32, true) => u32::MAX.to_string(),
        (DType::U8, true) => u8::MAX.to_string(),
        _ => "0".to_string(),
    }
}

/// The StableHLO op combining two scalars for a reduction kind.
pub(crate) fn combiner_op(kind: ReduceKind, dtype: DType) -> &'static str {
    match kind {
        ReduceKind::Sum if dtype == DType::Pred => "stablehlo.or",
        ReduceKind::Sum => "stablehlo.add",
        ReduceKind::Prod if dtype == DType::Pred => "stablehlo.and",
        ReduceKind::Prod => "stablehlo.multiply",
        ReduceKind::Max => "stablehlo.maximum",
        ReduceKind::Min => "stablehlo.minimum",
        ReduceKind::And => "stablehlo.and",
        ReduceKind::Or => "stablehlo.or",
    }
}

/// `comparison_direction` and `compare_type` attributes.
pub(crate) fn compare_attrs(dir: CompareDir, dtype: DType, total_order: bool) -> String {
    let d = match dir {
        CompareDir::Eq => "EQ",
        CompareDir::Ne => "NE",
        CompareDir::Lt => "LT",
        CompareDir::Le => "LE",
        CompareDir::Gt => "GT",
        CompareDir::Ge => "GE",
    };
    let t = if dtype.is_float() {
        if total_order {
            "TOTALORDER"
        } else {
            "FLOAT"
        }
    } else if dtype.is_signed_int() {
        "SIGNED"
    } else {
        "UNSIGNED"
    };
    format!("comparison_direction = #stablehlo<comparison_direction {d}>, compare_type = #stablehlo<comparison_type {t}>")
}
