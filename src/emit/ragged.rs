//! `Op::RaggedDot`: an `sdy.manual_computation` in which every mesh axis is manual (what JAX's `shard_map`
//! emits). The shard dim (0) of the rows and group sizes is split over the op's shard axes, one shard per
//! device, and the weights enter whole (the partitioner all-gathers them first, as MaxText's fsdp does
//! inside its `shard_map`). A reduced weight gradient leaves already summed over the shards and cut to the
//! weights' sharding (`all_reduce` over shard axes the weights do not use, then `reduce_scatter` per
//! sharded dim), so no device holds a whole gradient. Inside, each device runs `chlo.ragged_dot` on its
//! own rows (`native`, TPU) or the dense formulation ([`ragged_dot_dense`], traced here and printed like
//! any function body).

use super::attrs::combiner_op;
use super::ops::precision;
use super::Emitter;
use crate::ir::{ragged_dot_dense, Graph, Mesh, Node, RaggedKind, RaggedSpec, ReduceKind, Sharding, TensorType};
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
        spec: &RaggedSpec,
        ind: &str,
    ) -> Vec<String> {
        let out = &node.outputs[0];
        let Some(mesh) = self.mesh.clone() else {
            let r = self.emit_ragged_body(kind, ins, in_tys, out, spec.native, ind);
            return vec![r];
        };
        let axes: Vec<String> = spec.shard_axes.iter().filter(|a| mesh.axis_size(a).is_some()).cloned().collect();
        let mut shards = Sharding::replicated(1);
        shards.dims[0] = axes.clone();
        // Rows and sizes arrive split over the shard axes (dy too for the gradients); the weights whole.
        let weights_whole = matches!(kind, RaggedKind::Rows | RaggedKind::RowsTransposed);
        let in_sh: Vec<Sharding> = in_tys
            .iter()
            .enumerate()
            .map(|(i, t)| if i == 1 && weights_whole { Sharding::replicated(t.rank()) } else { dim0(&shards, t.rank()) })
            .collect();
        let out_sh = match kind {
            RaggedKind::WeightGradReduced => spec.weight_sharding.clone().expect("a reduced weight gradient has the weights' sharding"),
            _ => dim0(&shards, out.rank()),
        };
        let local_tys: Vec<TensorType> = in_tys.iter().zip(&in_sh).map(|(t, s)| local(t, s, &mesh)).collect();
        let local_out = local(out, &out_sh, &mesh);
        let args: Vec<String> = (0..ins.len()).map(|_| self.fresh()).collect();
        let decls: Vec<String> = args.iter().zip(&local_tys).map(|(a, t)| format!("{a}: {}", t.mlir())).collect();
        let manual: Vec<String> = mesh.axes.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        let specs: Vec<String> = in_tys.iter().zip(&in_sh).map(|(t, s)| self.sharding_spec(s, t).expect("a mesh")).collect();
        let _ = writeln!(
            self.out,
            "{ind}{name} = sdy.manual_computation({}) in_shardings=[{}] out_shardings=[{}] manual_axes={{{}}} ({}) {{",
            ins.join(", "),
            specs.join(", "),
            self.sharding_spec(&out_sh, out).expect("a mesh"),
            manual.join(", "),
            decls.join(", ")
        );
        let inner = format!("{ind}  ");
        let r = if kind == RaggedKind::WeightGradReduced {
            // This device's sums [G, K, F], then reduced over the shards into the weights' sharding.
            let mut v = self.emit_ragged_body(kind, &args, &local_tys, out, spec.native, &inner);
            let mut ty = out.clone();
            let used: Vec<&String> = out_sh.dims.iter().flatten().collect();
            let rest: Vec<String> = axes.iter().filter(|a| !used.contains(a)).cloned().collect();
            if !rest.is_empty() {
                v = self.collective("all_reduce", &v, &ty, &ty, &rest, None, &mesh, &inner);
            }
            for (d, dim_axes) in out_sh.dims.iter().enumerate() {
                let dim_axes: Vec<String> = dim_axes.iter().filter(|a| mesh.axis_size(a).is_some()).cloned().collect();
                if dim_axes.is_empty() {
                    continue;
                }
                let mut to = ty.clone();
                to.dims[d] /= dim_axes.iter().filter_map(|a| mesh.axis_size(a)).product::<i64>();
                v = self.collective("reduce_scatter", &v, &ty, &to, &dim_axes, Some(d), &mesh, &inner);
                ty = to;
            }
            v
        } else {
            self.emit_ragged_body(kind, &args, &local_tys, &local_out, spec.native, &inner)
        };
        let _ = writeln!(self.out, "{inner}sdy.return {r} : {}", local_out.mlir());
        let tys: Vec<String> = in_tys.iter().map(|t| t.mlir()).collect();
        let _ = write!(self.out, "{ind}}} : ({}) -> {}", tys.join(", "), out.mlir());
        self.push_loc(node);
        vec![name.to_string()]
    }

    /// The op on one device's operands; returns the result's name. A reduced weight gradient on one
    /// device is its one shard's sums.
    fn emit_ragged_body(&mut self, kind: RaggedKind, ins: &[String], tys: &[TensorType], out: &TensorType, native: bool, ind: &str) -> String {
        if kind == RaggedKind::WeightGradReduced {
            let mut per_shard = out.clone();
            per_shard.dims.insert(0, 1);
            let r = self.emit_ragged_body(RaggedKind::WeightGrad, ins, tys, &per_shard, native, ind);
            return self.reshape(&r, &per_shard, &out.dims, ind);
        }
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

    fn reshape(&mut self, v: &str, from: &TensorType, to: &[i64], ind: &str) -> String {
        let n = self.fresh();
        let to = TensorType::new(from.dtype, to);
        let _ = writeln!(self.out, "{ind}{n} = \"stablehlo.reshape\"({v}) : ({}) -> {}", from.mlir(), to.mlir());
        n
    }

    /// `chlo.ragged_dot` on one shard (the leading dim of 1 dropped around it).
    fn emit_chlo_ragged_dot(&mut self, kind: RaggedKind, ins: &[String], tys: &[TensorType], out: &TensorType, ind: &str) -> String {
        let drop0 = |t: &TensorType| TensorType::new(t.dtype, &t.dims[1..]);
        let a = self.reshape(&ins[0], &tys[0], &tys[0].dims[1..], ind);
        let weights = matches!(kind, RaggedKind::Rows | RaggedKind::RowsTransposed);
        let (b, b_ty) = if weights { (ins[1].clone(), tys[1].clone()) } else { (self.reshape(&ins[1], &tys[1], &tys[1].dims[1..], ind), drop0(&tys[1])) };
        let gs = self.reshape(&ins[2], &tys[2], &tys[2].dims[1..], ind);
        let r_ty = drop0(out);
        let (lhs_c, rhs_c, group) = match kind {
            // [N, K] x [G, K, F] -> [N, F], rows ragged.
            RaggedKind::Rows => (1, 1, "[0]"),
            // [N, F] x [G, K, F] -> [N, K].
            RaggedKind::RowsTransposed => (1, 2, "[0]"),
            // [N, K] x [N, F] -> [G, K, F], the contraction ragged.
            RaggedKind::WeightGrad | RaggedKind::WeightGradReduced => (0, 0, "[]"),
        };
        let dims = format!(
            "lhs_batching_dimensions = [], rhs_batching_dimensions = [], lhs_contracting_dimensions = [{lhs_c}], rhs_contracting_dimensions = [{rhs_c}], lhs_ragged_dimensions = [0], rhs_group_dimensions = {group}"
        );
        let p = precision(self.matmul_precision);
        let r = self.fresh();
        let _ = writeln!(
            self.out,
            "{ind}{r} = \"chlo.ragged_dot\"({a}, {b}, {gs}) <{{precision_config = [#chlo<precision {p}>, #chlo<precision {p}>], ragged_dot_dimension_numbers = #chlo.ragged_dot<{dims}>}}> : ({}, {}, {}) -> {}",
            drop0(&tys[0]).mlir(),
            b_ty.mlir(),
            drop0(&tys[2]).mlir(),
            r_ty.mlir()
        );
        self.reshape(&r, &r_ty, &out.dims, ind)
    }

    /// A summing `all_reduce` or `reduce_scatter` (along `scatter`) over the devices that differ only in
    /// `axes` (device ids = partition ids, as `use_global_device_ids` reads them with one replica).
    #[allow(clippy::too_many_arguments)]
    fn collective(&mut self, op: &str, v: &str, from: &TensorType, to: &TensorType, axes: &[String], scatter: Option<usize>, mesh: &Mesh, ind: &str) -> String {
        let groups = replica_groups(mesh, axes);
        let rows: Vec<String> = groups.iter().map(|g| format!("[{}]", g.iter().map(i64::to_string).collect::<Vec<_>>().join(", "))).collect();
        let channel = self.next_channel;
        self.next_channel += 1;
        let scatter = scatter.map(|d| format!(", scatter_dimension = {d} : i64")).unwrap_or_default();
        let body = self.binary_region(from.dtype, Some(combiner_op(ReduceKind::Sum, from.dtype)), ind);
        let n = self.fresh();
        let _ = writeln!(
            self.out,
            "{ind}{n} = \"stablehlo.{op}\"({v}) <{{channel_handle = #stablehlo.channel_handle<handle = {channel}, type = 1>, replica_groups = dense<[{}]> : tensor<{}x{}xi64>{scatter}, use_global_device_ids}}> ({body}) : ({}) -> {}",
            rows.join(", "),
            groups.len(),
            groups[0].len(),
            from.mlir(),
            to.mlir()
        );
        n
    }
}

/// `s` on dim 0 of a tensor of `rank`, the rest replicated.
fn dim0(s: &Sharding, rank: usize) -> Sharding {
    let mut out = Sharding::replicated(rank);
    out.dims[0] = s.dims[0].clone();
    out
}

/// The shape one device holds of `t` laid out as `s`.
fn local(t: &TensorType, s: &Sharding, mesh: &Mesh) -> TensorType {
    let mut t = t.clone();
    for (d, axes) in s.dims.iter().enumerate() {
        let split: i64 = axes.iter().filter_map(|a| mesh.axis_size(a)).product();
        assert!(t.dims[d] % split == 0, "ragged_dot: dim {d} of {t:?} does not split over {axes:?}");
        t.dims[d] /= split;
    }
    t
}

/// The groups of partitions that agree on every mesh axis but `axes`, each ordered row-major over `axes`
/// in the given order (the order a sharding over them numbers its shards).
fn replica_groups(mesh: &Mesh, axes: &[String]) -> Vec<Vec<i64>> {
    let sizes: Vec<i64> = mesh.axes.iter().map(|(_, s)| *s).collect();
    let mut groups: std::collections::BTreeMap<Vec<i64>, Vec<(i64, i64)>> = Default::default();
    for p in 0..mesh.num_devices() {
        let mut coords = vec![0; sizes.len()];
        let mut rest = p;
        for d in (0..sizes.len()).rev() {
            coords[d] = rest % sizes[d];
            rest /= sizes[d];
        }
        let at = |name: &str| mesh.axes.iter().position(|(n, _)| n == name).expect("an axis of the mesh");
        let key: Vec<i64> = (0..sizes.len()).filter(|d| !axes.iter().any(|a| at(a) == *d)).map(|d| coords[d]).collect();
        let pos = axes.iter().fold(0, |acc, a| acc * sizes[at(a)] + coords[at(a)]);
        groups.entry(key).or_default().push((pos, p));
    }
    groups
        .into_values()
        .map(|mut g| {
            g.sort();
            g.into_iter().map(|(_, p)| p).collect()
        })
        .collect()
}
