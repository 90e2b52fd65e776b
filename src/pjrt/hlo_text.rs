//! Decoding the optimized program (`hlo_with_config` / `hlo`) and printing it as HLO-like text.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use prost::Message;

use super::error::{Error, Result};
use super::proto::{self, HloComputationProto, HloInstructionProto, HloModuleProto, ShapeProto};
use crate::ir::DType;

/// Decodes `code` in PJRT program `format` into an HLO module.
pub(crate) fn decode_module(format: &str, code: &[u8]) -> Result<HloModuleProto> {
    let err = |e: prost::DecodeError| Error::Decode { what: "optimized HLO module", message: e.to_string() };
    match format {
        "hlo_with_config" => proto::HloModuleProtoWithConfig::decode(code)
            .map_err(err)?
            .hlo_module
            .ok_or_else(|| Error::Decode { what: "optimized HLO module", message: "no hlo_module field".into() }),
        "hlo" => HloModuleProto::decode(code).map_err(err),
        other => Err(Error::Decode { what: "optimized HLO module", message: format!("unknown program format {other:?}") }),
    }
}

/// The per-device shape of one entry parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParamSig {
    /// None: an element type `DType` does not model (no buffer can match it).
    pub dtype: Option<DType>,
    pub element_type: i32,
    pub dims: Vec<i64>,
}

impl fmt::Display for ParamSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(d) => write!(f, "{d}{:?}", self.dims),
            None => write!(f, "{}{:?}", primitive_name(self.element_type), self.dims),
        }
    }
}

/// The entry computation's parameter shapes, read without decoding the computations. None when the
/// module does not record them or a parameter is not a plain array (e.g. a tupled parameter list).
pub(crate) fn entry_signature(format: &str, code: &[u8]) -> Option<Vec<ParamSig>> {
    let module = match format {
        "hlo_with_config" => proto::HloModuleSignatureWithConfig::decode(code).ok()?.hlo_module?,
        "hlo" => proto::HloModuleSignature::decode(code).ok()?,
        _ => return None,
    };
    let shape = module.host_program_shape?;
    shape
        .parameters
        .iter()
        .map(|p| {
            let t = p.element_type;
            if !p.tuple_shapes.is_empty() || matches!(t, 0 | 13 | 14 | 17) {
                return None;
            }
            Some(ParamSig { dtype: primitive_dtype(t), element_type: t, dims: p.dimensions.clone() })
        })
        .collect()
}

fn primitive_dtype(t: i32) -> Option<DType> {
    use proto::PrimitiveType as P;
    Some(match P::try_from(t).ok()? {
        P::Pred => DType::Pred,
        P::S8 => DType::S8,
        P::S32 => DType::S32,
        P::S64 => DType::S64,
        P::U8 => DType::U8,
        P::U32 => DType::U32,
        P::U64 => DType::U64,
        P::F16 => DType::F16,
        P::F32 => DType::F32,
        P::F64 => DType::F64,
        P::Bf16 => DType::BF16,
        _ => return None,
    })
}

fn primitive_name(t: i32) -> String {
    match proto::PrimitiveType::try_from(t) {
        Ok(p) => match p {
            proto::PrimitiveType::OpaqueType => "opaque".to_string(),
            proto::PrimitiveType::Invalid => "invalid".to_string(),
            other => other.as_str_name().to_ascii_lowercase(),
        },
        Err(_) => format!("type{t}"),
    }
}

fn join<T: fmt::Display>(v: &[T]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// `f32[4,16]{1,0}`, `(f32[4], s32[])`, `token[]`.
pub(crate) fn shape_text(s: &ShapeProto) -> String {
    if s.element_type == proto::PrimitiveType::Tuple as i32 {
        let parts: Vec<String> = s.tuple_shapes.iter().map(shape_text).collect();
        return format!("({})", parts.join(", "));
    }
    let mut out = format!("{}[{}]", primitive_name(s.element_type), join(&s.dimensions));
    if let Some(l) = &s.layout {
        if !s.dimensions.is_empty() && !l.minor_to_major.is_empty() {
            let _ = write!(out, "{{{}}}", join(&l.minor_to_major));
        }
    }
    out
}

fn literal_text(l: &proto::LiteralProto) -> String {
    fn list<T: fmt::Display>(v: &[T]) -> String {
        match v.len() {
            1 => v[0].to_string(),
            n if n <= 8 => format!("{{{}}}", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")),
            n => format!("{{{n} values}}"),
        }
    }
    if !l.f32s.is_empty() {
        list(&l.f32s)
    } else if !l.f64s.is_empty() {
        list(&l.f64s)
    } else if !l.s32s.is_empty() {
        list(&l.s32s)
    } else if !l.s64s.is_empty() {
        list(&l.s64s)
    } else if !l.u32s.is_empty() {
        list(&l.u32s)
    } else if !l.u64s.is_empty() {
        list(&l.u64s)
    } else if !l.preds.is_empty() {
        list(&l.preds)
    } else if !l.bf16s.is_empty() {
        let v: Vec<half::bf16> =
            l.bf16s.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]])).collect();
        list(&v)
    } else {
        "{...}".to_string()
    }
}

fn replica_groups_text(inst: &HloInstructionProto) -> Option<String> {
    let groups = |g: &[proto::ReplicaGroup]| {
        let parts: Vec<String> = g.iter().map(|r| format!("{{{}}}", join(&r.replica_ids))).collect();
        format!("{{{}}}", parts.join(","))
    };
    if let Some(list) = &inst.collective_device_list {
        if let Some(iota) = &list.iota_replica_group_list {
            let mut s = format!(
                "[{},{}]<=[{}]",
                iota.num_replica_groups,
                iota.num_devices_per_group,
                join(&iota.iota_reshape_dims)
            );
            let identity = iota.iota_transpose_perm.iter().enumerate().all(|(i, &p)| i as i32 == p);
            if !identity {
                let _ = write!(s, "T({})", join(&iota.iota_transpose_perm));
            }
            return Some(s);
        }
        if !list.replica_groups.is_empty() {
            return Some(groups(&list.replica_groups));
        }
    }
    (!inst.replica_groups.is_empty()).then(|| groups(&inst.replica_groups))
}

/// Names of the called computations, keyed as HLO text prints them for this opcode.
fn called_text(inst: &HloInstructionProto, comp_names: &HashMap<i64, &str>) -> Option<String> {
    let names: Vec<String> = inst
        .called_computation_ids
        .iter()
        .map(|id| format!("%{}", comp_names.get(id).copied().unwrap_or("?")))
        .collect();
    if names.is_empty() {
        return None;
    }
    Some(match (inst.opcode.as_str(), names.len()) {
        ("while", 2) => format!("condition={}, body={}", names[1], names[0]),
        ("select-and-scatter", 2) => format!("select={}, scatter={}", names[0], names[1]),
        ("conditional", _) => format!("branch_computations={{{}}}", names.join(", ")),
        ("fusion", 1) => format!("calls={}", names[0]),
        (_, 1) => format!("to_apply={}", names[0]),
        _ => format!("calls={{{}}}", names.join(", ")),
    })
}

fn instruction_text(
    inst: &HloInstructionProto,
    is_root: bool,
    inst_names: &HashMap<i64, &str>,
    comp_names: &HashMap<i64, &str>,
) -> String {
    let shape = inst.shape.as_ref().map(shape_text).unwrap_or_default();
    let operands: Vec<String> = inst
        .operand_ids
        .iter()
        .map(|id| format!("%{}", inst_names.get(id).copied().unwrap_or("?")))
        .collect();
    let args = match inst.opcode.as_str() {
        "parameter" => inst.parameter_number.to_string(),
        "constant" => inst.literal.as_ref().map(literal_text).unwrap_or_default(),
        _ => operands.join(", "),
    };
    let mut attrs: Vec<String> = Vec::new();
    if inst.opcode == "get-tuple-element" {
        attrs.push(format!("index={}", inst.tuple_index));
    }
    if !inst.dimensions.is_empty() {
        attrs.push(format!("dimensions={{{}}}", join(&inst.dimensions)));
    }
    if !inst.slice_dimensions.is_empty() {
        let s: Vec<String> = inst
            .slice_dimensions
            .iter()
            .map(|d| {
                if d.stride == 1 {
                    format!("[{}:{}]", d.start, d.limit)
                } else {
                    format!("[{}:{}:{}]", d.start, d.limit, d.stride)
                }
            })
            .collect();
        attrs.push(format!("slice={{{}}}", s.join(", ")));
    }
    if let Some(d) = &inst.dot_dimension_numbers {
        for (k, v) in [
            ("lhs_batch_dims", &d.lhs_batch_dimensions),
            ("lhs_contracting_dims", &d.lhs_contracting_dimensions),
            ("rhs_batch_dims", &d.rhs_batch_dimensions),
            ("rhs_contracting_dims", &d.rhs_contracting_dimensions),
        ] {
            if !v.is_empty() {
                attrs.push(format!("{k}={{{}}}", join(v)));
            }
        }
    }
    if inst.channel_id > 0 {
        attrs.push(format!("channel_id={}", inst.channel_id));
    }
    if let Some(g) = replica_groups_text(inst) {
        attrs.push(format!("replica_groups={g}"));
    }
    if inst.use_global_device_ids {
        attrs.push("use_global_device_ids=true".into());
    }
    if !inst.comparison_direction.is_empty() {
        attrs.push(format!("direction={}", inst.comparison_direction));
    }
    if !inst.fusion_kind.is_empty() {
        attrs.push(format!("kind={}", inst.fusion_kind));
    }
    if let Some(c) = called_text(inst, comp_names) {
        attrs.push(c);
    }
    if !inst.custom_call_target.is_empty() {
        attrs.push(format!("custom_call_target={:?}", inst.custom_call_target));
    }
    let mut line = format!(
        "  {}%{} = {} {}({})",
        if is_root { "ROOT " } else { "" },
        inst.name,
        shape,
        inst.opcode,
        args
    );
    for a in attrs {
        line.push_str(", ");
        line.push_str(&a);
    }
    line
}

fn computation_text(c: &HloComputationProto, is_entry: bool, comp_names: &HashMap<i64, &str>) -> String {
    let inst_names: HashMap<i64, &str> = c.instructions.iter().map(|i| (i.id, i.name.as_str())).collect();
    let mut params: Vec<&HloInstructionProto> = c.instructions.iter().filter(|i| i.opcode == "parameter").collect();
    params.sort_by_key(|i| i.parameter_number);
    let params: Vec<String> = params
        .iter()
        .map(|p| format!("{}: {}", p.name, p.shape.as_ref().map(shape_text).unwrap_or_default()))
        .collect();
    let root = c.instructions.iter().find(|i| i.id == c.root_id).or(c.instructions.last());
    let result = root.and_then(|r| r.shape.as_ref()).map(shape_text).unwrap_or_default();
    let mut s = format!(
        "{}%{} ({}) -> {} {{\n",
        if is_entry { "ENTRY " } else { "" },
        c.name,
        params.join(", "),
        result
    );
    for inst in &c.instructions {
        let is_root = root.is_some_and(|r| std::ptr::eq(r, inst));
        s.push_str(&instruction_text(inst, is_root, &inst_names, comp_names));
        s.push('\n');
    }
    s.push_str("}\n");
    s
}

/// Prints a module as HLO-like text: one block per computation (callees first, entry last).
pub(crate) fn render_module(m: &HloModuleProto) -> String {
    let comp_names: HashMap<i64, &str> = m.computations.iter().map(|c| (c.id, c.name.as_str())).collect();
    let is_entry = |c: &HloComputationProto| {
        (m.entry_computation_id != 0 && c.id == m.entry_computation_id)
            || (!m.entry_computation_name.is_empty() && c.name == m.entry_computation_name)
    };
    let mut s = format!("HloModule {}, entry_computation={}\n", m.name, m.entry_computation_name);
    for c in m.computations.iter().filter(|c| !is_entry(c)) {
        s.push('\n');
        s.push_str(&computation_text(c, false, &comp_names));
    }
    for c in m.computations.iter().filter(|c| is_entry(c)) {
        s.push('\n');
        s.push_str(&computation_text(c, true, &comp_names));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(t: proto::PrimitiveType, dims: &[i64]) -> ShapeProto {
        ShapeProto { element_type: t as i32, dimensions: dims.to_vec(), ..Default::default() }
    }

    #[test]
    fn renders_a_small_module() {
        let p = |id, n: i64, name: &str| HloInstructionProto {
            id,
            name: name.into(),
            opcode: "parameter".into(),
            parameter_number: n,
            shape: Some(array(proto::PrimitiveType::F32, &[4, 8])),
            ..Default::default()
        };
        let add = HloInstructionProto {
            id: 3,
            name: "add.1".into(),
            opcode: "add".into(),
            operand_ids: vec![1, 2],
            shape: Some(array(proto::PrimitiveType::F32, &[4, 8])),
            ..Default::default()
        };
        let comp = HloComputationProto {
            name: "main".into(),
            id: 7,
            root_id: 3,
            instructions: vec![p(1, 0, "a"), p(2, 1, "b"), add],
            ..Default::default()
        };
        let m = HloModuleProto {
            name: "m".into(),
            entry_computation_name: "main".into(),
            entry_computation_id: 7,
            computations: vec![comp],
            host_program_shape: Some(proto::ProgramShapeProto {
                parameters: vec![array(proto::PrimitiveType::F32, &[4, 8]), array(proto::PrimitiveType::Bf16, &[2])],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render_module(&m);
        assert!(text.contains("ENTRY %main (a: f32[4,8], b: f32[4,8]) -> f32[4,8] {"), "{text}");
        assert!(text.contains("ROOT %add.1 = f32[4,8] add(%a, %b)"), "{text}");

        let wrapped = proto::HloModuleProtoWithConfig { hlo_module: Some(m.clone()) }.encode_to_vec();
        assert_eq!(decode_module("hlo_with_config", &wrapped).unwrap(), m);
        let sig = entry_signature("hlo_with_config", &wrapped).unwrap();
        assert_eq!(sig.len(), 2);
        assert_eq!(sig[1].dtype, Some(DType::BF16));
        assert_eq!(sig[0].to_string(), "float32[4, 8]");
    }
}
