//! One printer per op, in the generic form.

use super::attrs::*;
use super::Emitter;
use crate::ir::{BinaryOp, DType, Node, Op, Precision, ReduceKind, RngAlgorithm, ScatterMode, TensorType, UnaryOp};
use std::fmt::Write;

fn fn_type(ins: &[TensorType], outs: &[TensorType]) -> String {
    let i: Vec<String> = ins.iter().map(|t| t.mlir()).collect();
    let o: Vec<String> = outs.iter().map(|t| t.mlir()).collect();
    if outs.len() == 1 {
        format!("({}) -> {}", i.join(", "), o[0])
    } else {
        format!("({}) -> ({})", i.join(", "), o.join(", "))
    }
}

fn unary_name(op: UnaryOp) -> &'static str {
    match op {
        UnaryOp::Neg => "negate",
        UnaryOp::Abs => "abs",
        UnaryOp::Sign => "sign",
        UnaryOp::Exp => "exponential",
        UnaryOp::Expm1 => "exponential_minus_one",
        UnaryOp::Log => "log",
        UnaryOp::Log1p => "log_plus_one",
        UnaryOp::Sqrt => "sqrt",
        UnaryOp::Rsqrt => "rsqrt",
        UnaryOp::Tanh => "tanh",
        UnaryOp::Logistic => "logistic",
        UnaryOp::Sin => "sine",
        UnaryOp::Cos => "cosine",
        UnaryOp::Floor => "floor",
        UnaryOp::Ceil => "ceil",
        UnaryOp::RoundNearestEven => "round_nearest_even",
        UnaryOp::Not => "not",
        UnaryOp::IsFinite => "is_finite",
    }
}

fn binary_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "subtract",
        BinaryOp::Mul => "multiply",
        BinaryOp::Div => "divide",
        BinaryOp::Rem => "remainder",
        BinaryOp::Max => "maximum",
        BinaryOp::Min => "minimum",
        BinaryOp::Pow => "power",
        BinaryOp::Atan2 => "atan2",
        BinaryOp::And => "and",
        BinaryOp::Or => "or",
        BinaryOp::Xor => "xor",
        BinaryOp::ShiftLeft => "shift_left",
        BinaryOp::ShiftRightLogical => "shift_right_logical",
    }
}

pub(crate) fn precision(p: Precision) -> &'static str {
    match p {
        Precision::Default => "DEFAULT",
        Precision::High => "HIGH",
        Precision::Highest => "HIGHEST",
    }
}

impl Emitter {
    /// Prints `node` and returns the SSA names of its outputs.
    pub(crate) fn emit_node(&mut self, node: &Node, ins: &[String], in_tys: &[TensorType], ind: &str) -> Vec<String> {
        let outs = &node.outputs;
        let name = self.fresh();
        let lhs = if outs.len() == 1 { name.clone() } else { format!("{name}:{}", outs.len()) };
        let args = ins.join(", ");
        let ty = fn_type(in_tys, outs);
        let dt = in_tys.first().map(|t| t.dtype).unwrap_or(outs[0].dtype);
        let simple = |op: &str, props: String| {
            let props = if props.is_empty() { String::new() } else { format!(" <{{{props}}}>") };
            format!("{ind}{lhs} = \"{op}\"({args}){props} : {ty}")
        };
        let line = match &node.op {
            Op::Parameter(_) | Op::Capture(_) => unreachable!("parameters are block arguments"),
            Op::Constant(lit) => format!("{ind}{lhs} = \"stablehlo.constant\"() <{{value = {} : {}}}> : () -> {}", dense(lit, &outs[0]), outs[0].mlir(), outs[0].mlir()),
            Op::Iota { dim } => format!("{ind}{lhs} = \"stablehlo.iota\"() <{{iota_dimension = {dim} : i64}}> : () -> {}", outs[0].mlir()),
            Op::Unary(u) => simple(&format!("stablehlo.{}", unary_name(*u)), String::new()),
            Op::Binary(b) => simple(&format!("stablehlo.{}", binary_name(*b)), String::new()),
            Op::Compare(d) => simple("stablehlo.compare", compare_attrs(*d, dt, false)),
            Op::Select => simple("stablehlo.select", String::new()),
            Op::Clamp => simple("stablehlo.clamp", String::new()),
            Op::Convert => simple("stablehlo.convert", String::new()),
            Op::BitcastConvert => simple("stablehlo.bitcast_convert", String::new()),
            Op::BroadcastInDim { dims } => simple("stablehlo.broadcast_in_dim", format!("broadcast_dimensions = {}", i64_array(dims))),
            Op::Reshape => simple("stablehlo.reshape", String::new()),
            Op::Transpose { perm } => simple("stablehlo.transpose", format!("permutation = {}", i64_array(perm))),
            Op::Slice { start, limit, strides } => simple(
                "stablehlo.slice",
                format!("limit_indices = {}, start_indices = {}, strides = {}", i64_array(limit), i64_array(start), i64_array(strides)),
            ),
            Op::DynamicSlice { sizes } => simple("stablehlo.dynamic_slice", format!("slice_sizes = {}", i64_array(sizes))),
            Op::DynamicUpdateSlice => simple("stablehlo.dynamic_update_slice", String::new()),
            Op::Concatenate { dim } => simple("stablehlo.concatenate", format!("dimension = {dim} : i64")),
            Op::Pad { low, high, interior } => simple(
                "stablehlo.pad",
                format!("edge_padding_high = {}, edge_padding_low = {}, interior_padding = {}", i64_array(high), i64_array(low), i64_array(interior)),
            ),
            Op::Gather(g) => {
                let mut f = dims_fields(&[
                    ("offset_dims", &g.offset_dims),
                    ("collapsed_slice_dims", &g.collapsed_slice_dims),
                    ("operand_batching_dims", &g.operand_batching_dims),
                    ("start_indices_batching_dims", &g.start_indices_batching_dims),
                    ("start_index_map", &g.start_index_map),
                ]);
                f.push(format!("index_vector_dim = {}", g.index_vector_dim));
                simple(
                    "stablehlo.gather",
                    format!("dimension_numbers = #stablehlo.gather<{}>, indices_are_sorted = false, slice_sizes = {}", f.join(", "), i64_array(&g.slice_sizes)),
                )
            }
            Op::Scatter { dims: s, mode } => {
                let mut f = dims_fields(&[
                    ("update_window_dims", &s.update_window_dims),
                    ("inserted_window_dims", &s.inserted_window_dims),
                    ("input_batching_dims", &s.input_batching_dims),
                    ("scatter_indices_batching_dims", &s.scatter_indices_batching_dims),
                    ("scatter_dims_to_operand_dims", &s.scatter_dims_to_operand_dims),
                ]);
                f.push(format!("index_vector_dim = {}", s.index_vector_dim));
                let combine = match mode {
                    ScatterMode::Add => Some(combiner_op(ReduceKind::Sum, dt)),
                    ScatterMode::Replace => None,
                };
                let body = self.binary_region(dt, combine, ind);
                format!(
                    "{ind}{lhs} = \"stablehlo.scatter\"({args}) <{{indices_are_sorted = false, scatter_dimension_numbers = #stablehlo.scatter<{}>, unique_indices = false}}> ({body}) : {ty}",
                    f.join(", ")
                )
            }
            Op::DotGeneral { dims: d, precision: p } => {
                let f = dims_fields(&[
                    ("lhs_batching_dimensions", &d.lhs_batch),
                    ("rhs_batching_dimensions", &d.rhs_batch),
                    ("lhs_contracting_dimensions", &d.lhs_contract),
                    ("rhs_contracting_dimensions", &d.rhs_contract),
                ]);
                let p = precision(if *p == Precision::Default { self.matmul_precision } else { *p });
                simple(
                    "stablehlo.dot_general",
                    format!("dot_dimension_numbers = #stablehlo.dot<{}>, precision_config = [#stablehlo<precision {p}>, #stablehlo<precision {p}>]", f.join(", ")),
                )
            }
            Op::Reduce { kind, dims } => {
                let init = self.constant_scalar(&reduce_init(*kind, dt), dt, ind);
                let body = self.binary_region(dt, Some(combiner_op(*kind, dt)), ind);
                let s = TensorType::scalar(dt);
                format!(
                    "{ind}{lhs} = \"stablehlo.reduce\"({args}, {init}) <{{dimensions = {}}}> ({body}) : {}",
                    i64_array(dims),
                    fn_type(&[in_tys[0].clone(), s], outs)
                )
            }
            Op::ArgMax { dim, index_dtype } => return self.emit_argmax(&name, &ins[0], &in_tys[0], *dim, *index_dtype, outs, ind, node),
            Op::Cumulative { kind, dim, reverse, exclusive } => {
                let t = &in_tys[0];
                let n = t.dims[*dim as usize];
                let mut window = vec![1; t.rank()];
                window[*dim as usize] = n;
                let (lo, hi) = match (reverse, exclusive) {
                    (false, false) => (n - 1, 0),
                    (false, true) => (n, -1),
                    (true, false) => (0, n - 1),
                    (true, true) => (-1, n),
                };
                let mut pad = Vec::new();
                for i in 0..t.rank() {
                    pad.push(if i == *dim as usize { format!("[{lo}, {hi}]") } else { "[0, 0]".into() });
                }
                let init = self.constant_scalar(&reduce_init(*kind, dt), dt, ind);
                let body = self.binary_region(dt, Some(combiner_op(*kind, dt)), ind);
                format!(
                    "{ind}{lhs} = \"stablehlo.reduce_window\"({args}, {init}) <{{padding = dense<[{}]> : tensor<{}x2xi64>, window_dimensions = {}, window_strides = {}}}> ({body}) : {}",
                    pad.join(", "),
                    t.rank(),
                    i64_array(&window),
                    i64_array(&vec![1; t.rank()]),
                    fn_type(&[t.clone(), TensorType::scalar(dt)], outs)
                )
            }
            Op::Sort { dim, descending, stable } => {
                let mut body = String::from("{\n");
                let mut bargs = Vec::new();
                for (i, t) in in_tys.iter().enumerate() {
                    bargs.push(format!("%s{i}a: tensor<{}>", t.dtype.mlir()));
                    bargs.push(format!("%s{i}b: tensor<{}>", t.dtype.mlir()));
                }
                let dir = if *descending { crate::ir::CompareDir::Gt } else { crate::ir::CompareDir::Lt };
                let k = in_tys[0].dtype;
                let _ = writeln!(body, "{ind}^bb0({}):", bargs.join(", "));
                let _ = writeln!(
                    body,
                    "{ind}  %c = \"stablehlo.compare\"(%s0a, %s0b) <{{{}}}> : (tensor<{k}>, tensor<{k}>) -> tensor<i1>",
                    compare_attrs(dir, k, true),
                    k = k.mlir()
                );
                let _ = write!(body, "{ind}  \"stablehlo.return\"(%c) : (tensor<i1>) -> ()\n{ind}}}");
                format!("{ind}{lhs} = \"stablehlo.sort\"({args}) <{{dimension = {dim} : i64, is_stable = {stable}}}> ({body}) : {ty}")
            }
            Op::TopK { k } => simple("chlo.top_k", format!("k = {k} : i64")),
            Op::While { cond, body, num_carries, .. } => return self.emit_while(&name, node, ins, in_tys, cond, body, *num_carries, ind),
            Op::RaggedDot { kind, spec } => return self.emit_ragged_dot(&name, node, ins, in_tys, *kind, spec, ind),
            Op::RngBitGenerator { algorithm } => {
                let a = match algorithm {
                    RngAlgorithm::ThreeFry => "THREE_FRY",
                    RngAlgorithm::Philox => "PHILOX",
                    RngAlgorithm::Default => "DEFAULT",
                };
                simple("stablehlo.rng_bit_generator", format!("rng_algorithm = #stablehlo<rng_algorithm {a}>"))
            }
            Op::ShardingConstraint(s) => match self.sharding_spec(s, &outs[0]) {
                Some(spec) => format!("{ind}{lhs} = sdy.sharding_constraint {args} {spec} : {}", outs[0].mlir()),
                None => return vec![ins[0].clone()],
            },
            Op::OptimizationBarrier => simple("stablehlo.optimization_barrier", String::new()),
            // A tag for the autodiff only: the value passes through under its input's name.
            Op::CheckpointName(_) => return vec![ins[0].clone()],
            Op::TriangularSolve { left_side, lower, unit_diagonal, transpose_a } => simple(
                "stablehlo.triangular_solve",
                format!(
                    "left_side = {left_side}, lower = {lower}, transpose_a = #stablehlo<transpose {}>, unit_diagonal = {unit_diagonal}",
                    if *transpose_a { "TRANSPOSE" } else { "NO_TRANSPOSE" }
                ),
            ),
        };
        self.out.push_str(&line);
        self.push_loc(node);
        result_names(&name, outs.len())
    }

    pub(crate) fn push_loc(&mut self, node: &Node) {
        if let Some(loc) = &node.loc {
            let _ = write!(self.out, " loc(\"{}\")", loc.replace('\\', "\\\\").replace('"', "\\\""));
        }
        self.out.push('\n');
    }

    /// Emits a scalar constant line and returns its name.
    fn constant_scalar(&mut self, dense: &str, dt: DType, ind: &str) -> String {
        let n = self.fresh();
        let _ = writeln!(self.out, "{ind}{n} = \"stablehlo.constant\"() <{{value = {dense} : tensor<{0}>}}> : () -> tensor<{0}>", dt.mlir());
        n
    }

    /// `({ ^bb0(%a, %b): %r = op(%a, %b); return %r })`; with no op, returns `%b` (scatter's replace).
    pub(crate) fn binary_region(&mut self, dt: DType, op: Option<&str>, ind: &str) -> String {
        let s = format!("tensor<{}>", dt.mlir());
        let mut r = format!("{{\n{ind}^bb0(%a: {s}, %b: {s}):\n");
        match op {
            Some(op) => {
                let _ = writeln!(r, "{ind}  %r = \"{op}\"(%a, %b) : ({s}, {s}) -> {s}");
                let _ = write!(r, "{ind}  \"stablehlo.return\"(%r) : ({s}) -> ()\n{ind}}}");
            }
            None => {
                let _ = write!(r, "{ind}  \"stablehlo.return\"(%b) : ({s}) -> ()\n{ind}}}");
            }
        }
        r
    }
}

pub(crate) fn result_names(name: &str, n: usize) -> Vec<String> {
    if n == 1 {
        vec![name.to_string()]
    } else {
        (0..n).map(|i| format!("{name}#{i}")).collect()
    }
}
