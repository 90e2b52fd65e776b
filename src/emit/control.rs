//! Printers for ops with traced or multi-operand regions: `while` and argmax (a variadic reduce).

use super::attrs::{compare_attrs, reduce_init};
use super::ops::result_names;
use super::Emitter;
use crate::ir::{CompareDir, DType, Func, Node, ReduceKind, TensorType};
use std::fmt::Write;

impl Emitter {
    /// `stablehlo.while` whose operands are the carries followed by the captures of cond and body; the
    /// body passes the captures through unchanged. Returns names for the first `num_carries` results.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn emit_while(
        &mut self,
        name: &str,
        node: &Node,
        ins: &[String],
        in_tys: &[TensorType],
        cond: &Func,
        body: &Func,
        num_carries: usize,
        ind: &str,
    ) -> Vec<String> {
        let types: Vec<String> = in_tys.iter().map(|t| t.mlir()).collect();
        let n = ins.len();
        let _ = writeln!(self.out, "{ind}{name}:{n} = \"stablehlo.while\"({}) ({{", ins.join(", "));
        let inner = format!("{ind}  ");
        let ncond = cond.captures.len();
        for (k, f) in [cond, body].into_iter().enumerate() {
            if k == 1 {
                let _ = writeln!(self.out, "{ind}}}, {{");
            }
            let args: Vec<String> = (0..n).map(|_| self.fresh()).collect();
            let decl: Vec<String> = args.iter().zip(&types).map(|(a, t)| format!("{a}: {t}")).collect();
            let _ = writeln!(self.out, "{ind}^bb0({}):", decl.join(", "));
            let caps = if k == 0 { &args[num_carries..num_carries + ncond] } else { &args[num_carries + ncond..] };
            let names = self.emit_body(f, &args[..num_carries], caps, &inner);
            let mut rets: Vec<String> = f.results.iter().map(|r| names.get(*r).to_string()).collect();
            let ret_types = if k == 0 {
                "tensor<i1>".to_string()
            } else {
                rets.extend(args[num_carries..].iter().cloned());
                types.join(", ")
            };
            let _ = writeln!(self.out, "{inner}\"stablehlo.return\"({}) : ({ret_types}) -> ()", rets.join(", "));
        }
        let _ = write!(self.out, "{ind}}}) : ({0}) -> ({0})", types.join(", "));
        self.push_loc(node);
        result_names(name, n).into_iter().take(num_carries).collect()
    }

    /// Argmax as a variadic reduce over (values, iota): larger value wins, ties go to the lower index,
    /// NaN wins (numpy's and JAX's argmax semantics).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn emit_argmax(
        &mut self,
        name: &str,
        x: &str,
        x_ty: &TensorType,
        dim: i64,
        idx: DType,
        outs: &[TensorType],
        ind: &str,
        node: &Node,
    ) -> Vec<String> {
        let dt = x_ty.dtype;
        let iota_ty = x_ty.with_dtype(idx);
        let iota = self.fresh();
        let _ = writeln!(self.out, "{ind}{iota} = \"stablehlo.iota\"() <{{iota_dimension = {dim} : i64}}> : () -> {}", iota_ty.mlir());
        let init_v = self.fresh();
        let _ = writeln!(self.out, "{ind}{init_v} = \"stablehlo.constant\"() <{{value = {} : tensor<{1}>}}> : () -> tensor<{1}>", reduce_init(ReduceKind::Max, dt), dt.mlir());
        let init_i = self.fresh();
        let _ = writeln!(self.out, "{ind}{init_i} = \"stablehlo.constant\"() <{{value = dense<0> : tensor<{0}>}}> : () -> tensor<{0}>", idx.mlir());
        let (v, i) = (format!("tensor<{}>", dt.mlir()), format!("tensor<{}>", idx.mlir()));
        let cmp = |d: CompareDir, t: DType| compare_attrs(d, t, false);
        let mut r = format!("{ind}^bb0(%av: {v}, %ai: {i}, %bv: {v}, %bi: {i}):\n");
        let _ = writeln!(r, "{ind}  %gt = \"stablehlo.compare\"(%av, %bv) <{{{}}}> : ({v}, {v}) -> tensor<i1>", cmp(CompareDir::Gt, dt));
        let _ = writeln!(r, "{ind}  %eq = \"stablehlo.compare\"(%av, %bv) <{{{}}}> : ({v}, {v}) -> tensor<i1>", cmp(CompareDir::Eq, dt));
        let _ = writeln!(r, "{ind}  %li = \"stablehlo.compare\"(%ai, %bi) <{{{}}}> : ({i}, {i}) -> tensor<i1>", cmp(CompareDir::Lt, idx));
        let _ = writeln!(r, "{ind}  %nan = \"stablehlo.compare\"(%av, %av) <{{{}}}> : ({v}, {v}) -> tensor<i1>", cmp(CompareDir::Ne, dt));
        let _ = writeln!(r, "{ind}  %tie = \"stablehlo.and\"(%eq, %li) : (tensor<i1>, tensor<i1>) -> tensor<i1>");
        let _ = writeln!(r, "{ind}  %p0 = \"stablehlo.or\"(%gt, %tie) : (tensor<i1>, tensor<i1>) -> tensor<i1>");
        let _ = writeln!(r, "{ind}  %p = \"stablehlo.or\"(%p0, %nan) : (tensor<i1>, tensor<i1>) -> tensor<i1>");
        let _ = writeln!(r, "{ind}  %v = \"stablehlo.select\"(%p, %av, %bv) : (tensor<i1>, {v}, {v}) -> {v}");
        let _ = writeln!(r, "{ind}  %i = \"stablehlo.select\"(%p, %ai, %bi) : (tensor<i1>, {i}, {i}) -> {i}");
        let _ = write!(r, "{ind}  \"stablehlo.return\"(%v, %i) : ({v}, {i}) -> ()\n{ind}");
        let _ = write!(
            self.out,
            "{ind}{name}:2 = \"stablehlo.reduce\"({x}, {iota}, {init_v}, {init_i}) <{{dimensions = array<i64: {dim}>}}> ({{\n{r}}}) : ({}, {}, {v}, {i}) -> ({}, {})",
            x_ty.mlir(),
            iota_ty.mlir(),
            outs[0].mlir(),
            outs[1].mlir()
        );
        self.push_loc(node);
        result_names(name, 2)
    }
}
