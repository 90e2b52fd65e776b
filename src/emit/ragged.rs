//! `Op::RaggedDot`: an `sdy.manual_computation` in which every mesh axis is manual (what JAX's `shard_map`
//! emits). The shard dim (0) of the rows and group sizes is split over the op's shard axes, one shard per
//! device, and the weights enter whole (the partitioner all-gathers them first, as MaxText's fsdp does
//! inside its `shard_map`); the weight gradient leaves per shard and is summed outside. Inside, each
//! device runs `chlo.ragged_dot` on its own rows (`native`, TPU) or the dense formulation
//! ([`ragged_dot_dense`], traced here and printed like any function body).

use super::Emitter;
use crate::ir::{ragged_dot_dense, Graph, Node, RaggedKind, TensorType};
use std::fmt::Write;

impl Emitter {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn emit_ragged_dot(
        &mut self,
        name: &str,
        node: &Node,
        ins: &[String],
        in_tys: &[TensorType],
        kind: RaggedKind,
        shard_axes: &[String],
        native: bool,
        ind: &str,
    ) -> Vec<String> {
        let out = &node.outputs[0];
        let Some(mesh) = self.mesh.clone() else {
            return vec![self.emit_ragged_body(kind, ins, in_tys, out, native, ind)];
        };
        let axes: Vec<&String> = shard_axes.iter().filter(|a| mesh.axis_size(a).is_some()).collect();
        let split: i64 = axes.iter().filter_map(|a| mesh.axis_size(a)).product();
        // Which operands arrive split over the shard axes: all but Rows' weights.
        let sharded = [true, kind == RaggedKind::WeightGrad, true];
        let spec = |t: &TensorType, split_dim0: bool| -> String {
            let dims: Vec<String> = (0..t.rank())
                .map(|d| {
                    if d == 0 && split_dim0 {
                        format!("{{{}}}", axes.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", "))
                    } else {
                        "{}".to_string()
                    }
                })
                .collect();
            format!("<@mesh, [{}]>", dims.join(", "))
        };
        let local = |t: &TensorType, split_dim0: bool| -> TensorType {
            let mut t = t.clone();
            if split_dim0 {
                assert!(t.dims[0] % split == 0, "ragged_dot shard dim of {t:?} does not split over {axes:?}");
                t.dims[0] /= split;
            }
            t
        };
        let in_specs: Vec<String> = in_tys.iter().zip(sharded).map(|(t, s)| spec(t, s)).collect();
        let local_tys: Vec<TensorType> = in_tys.iter().zip(sharded).map(|(t, s)| local(t, s)).collect();
        let local_out = local(out, true);
        let args: Vec<String> = (0..ins.len()).map(|_| self.fresh()).collect();
        let decls: Vec<String> = args.iter().zip(&local_tys).map(|(a, t)| format!("{a}: {}", t.mlir())).collect();
        let manual: Vec<String> = mesh.axes.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        let _ = writeln!(
            self.out,
            "{ind}{name} = sdy.manual_computation({}) in_shardings=[{}] out_shardings=[{}] manual_axes={{{}}} ({}) {{",
            ins.join(", "),
            in_specs.join(", "),
            spec(out, true),
            manual.join(", "),
            decls.join(", ")
        );
        let inner = format!("{ind}  ");
        let r = self.emit_ragged_body(kind, &args, &local_tys, &local_out, native, &inner);
        let _ = writeln!(self.out, "{inner}sdy.return {r} : {}", local_out.mlir());
        let tys: Vec<String> = in_tys.iter().map(|t| t.mlir()).collect();
        let _ = write!(self.out, "{ind}}} : ({}) -> {}", tys.join(", "), out.mlir());
        self.push_loc(node);
        vec![name.to_string()]
    }

    /// The op on one device's operands; returns the result's name.
    fn emit_ragged_body(&mut self, kind: RaggedKind, ins: &[String], tys: &[TensorType], out: &TensorType, native: bool, ind: &str) -> String {
        if native && tys[0].dims[0] == 1 {
            return self.emit_chlo_ragged_dot(kind, ins, tys, out, ind);
        }
        let g = Graph::new();
        let params: Vec<_> = tys.iter().map(|t| g.param(TensorType::new(t.dtype, &t.dims))).collect();
        let r = ragged_dot_dense(kind, &params[0], &params[1], &params[2]);
        let f = g.finish(&[r]);
        let names = self.emit_body(&f, ins, &[], ind);
        names.get(f.results[0]).to_string()
    }

    /// `chlo.ragged_dot` on one shard (the leading dim of 1 dropped around it).
    fn emit_chlo_ragged_dot(&mut self, kind: RaggedKind, ins: &[String], tys: &[TensorType], out: &TensorType, ind: &str) -> String {
        let reshape = |this: &mut Emitter, v: &str, from: &TensorType, to: &[i64]| -> String {
            let n = this.fresh();
            let to = TensorType::new(from.dtype, to);
            let _ = writeln!(this.out, "{ind}{n} = \"stablehlo.reshape\"({v}) : ({}) -> {}", from.mlir(), to.mlir());
            n
        };
        let a = reshape(self, &ins[0], &tys[0], &tys[0].dims[1..]);
        let b = match kind {
            RaggedKind::Rows => ins[1].clone(),
            RaggedKind::WeightGrad => reshape(self, &ins[1], &tys[1], &tys[1].dims[1..]),
        };
        let gs = reshape(self, &ins[2], &tys[2], &tys[2].dims[1..]);
        let a_ty = TensorType::new(tys[0].dtype, &tys[0].dims[1..]);
        let b_ty = match kind {
            RaggedKind::Rows => tys[1].clone(),
            RaggedKind::WeightGrad => TensorType::new(tys[1].dtype, &tys[1].dims[1..]),
        };
        let g_ty = TensorType::new(tys[2].dtype, &tys[2].dims[1..]);
        let r_ty = TensorType::new(out.dtype, &out.dims[1..]);
        let dims = match kind {
            // [N, K] x [G, K, F] -> [N, F], rows ragged.
            RaggedKind::Rows => "lhs_batching_dimensions = [], rhs_batching_dimensions = [], lhs_contracting_dimensions = [1], rhs_contracting_dimensions = [1], lhs_ragged_dimensions = [0], rhs_group_dimensions = [0]",
            // [N, K] x [N, F] -> [G, K, F], the contraction ragged.
            RaggedKind::WeightGrad => "lhs_batching_dimensions = [], rhs_batching_dimensions = [], lhs_contracting_dimensions = [0], rhs_contracting_dimensions = [0], lhs_ragged_dimensions = [0], rhs_group_dimensions = []",
        };
        let p = match self.matmul_precision {
            crate::ir::Precision::Default => "DEFAULT",
            crate::ir::Precision::High => "HIGH",
            crate::ir::Precision::Highest => "HIGHEST",
        };
        let r = self.fresh();
        let _ = writeln!(
            self.out,
            "{ind}{r} = \"chlo.ragged_dot\"({a}, {b}, {gs}) <{{precision_config = [#chlo<precision {p}>, #chlo<precision {p}>], ragged_dot_dimension_numbers = #chlo.ragged_dot<{dims}>}}> : ({}, {}, {}) -> {}",
            a_ty.mlir(),
            b_ty.mlir(),
            g_ty.mlir(),
            r_ty.mlir()
        );
        reshape(self, &r, &r_ty, &out.dims)
    }
}
