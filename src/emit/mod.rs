//! IR -> StableHLO MLIR text, with Shardy shardings and donation attributes.
//!
//! Every op is printed in MLIR's generic form (`"stablehlo.add"(%a, %b) : (...) -> ...`), which the
//! plugin's parser accepts whatever its StableHLO version prints in pretty form. Output is deterministic:
//! values are numbered in node order and only nodes that reach a result are printed.
//! Loop captures become explicit extra carries passed through unchanged (what JAX emits), so every region
//! is closed over its block arguments.

mod attrs;
mod control;
mod ops;
mod ragged;

use crate::ir::{Func, Mesh, Op, Program, Sharding, TensorType, ValueRef};
use std::fmt::Write;

/// Prints `program` as an MLIR module whose entry function is `@main`.
pub fn emit_program(program: &Program) -> String {
    let mesh = program.mesh.as_ref().filter(|m| m.num_devices() > 1).map(nontrivial_axes);
    let mut e = Emitter { out: String::new(), next_id: 0, next_channel: 1, mesh: mesh.clone(), matmul_precision: program.matmul_precision };
    let f = &program.main;
    let parts = program.num_partitions();
    let _ = writeln!(
        e.out,
        "module @{} attributes {{mhlo.num_partitions = {parts} : i32, mhlo.num_replicas = 1 : i32}} {{",
        sanitize_symbol(&program.name)
    );
    if let Some(m) = &mesh {
        let axes: Vec<String> = m.axes.iter().map(|(n, s)| format!("\"{n}\"={s}")).collect();
        let _ = writeln!(e.out, "  sdy.mesh @mesh = <[{}]>", axes.join(", "));
    }
    for (arg, res) in program.donations.iter().enumerate() {
        if let Some(r) = res {
            let (a, b) = (&f.params[arg], f.value_type(f.results[*r]));
            assert!(a.same_shape(b), "donation of argument {arg} {a:?} to result {r} {b:?}: types differ");
        }
    }
    let arg_names: Vec<String> = (0..f.params.len()).map(|i| format!("%arg{i}")).collect();
    let mut sig = Vec::new();
    for (i, ty) in f.params.iter().enumerate() {
        let mut attrs = Vec::new();
        if let Some(s) = e.sharding_attr(program.arg_shardings.get(i).and_then(|s| s.as_ref()), ty) {
            attrs.push(format!("sdy.sharding = {s}"));
        }
        if let Some(Some(r)) = program.donations.get(i) {
            attrs.push(format!("tf.aliasing_output = {r} : i32"));
        }
        let attrs = if attrs.is_empty() { String::new() } else { format!(" {{{}}}", attrs.join(", ")) };
        sig.push(format!("{}: {}{attrs}", arg_names[i], ty.mlir()));
    }
    let mut results = Vec::new();
    for (i, ty) in f.result_types().iter().enumerate() {
        match e.sharding_attr(program.result_shardings.get(i).and_then(|s| s.as_ref()), ty) {
            Some(s) => results.push(format!("{} {{sdy.sharding = {s}}}", ty.mlir())),
            None => results.push(ty.mlir()),
        }
    }
    let _ = writeln!(e.out, "  func.func public @main({}) -> ({}) {{", sig.join(", "), results.join(", "));
    let names = e.emit_body(f, &arg_names, &[], "    ");
    let rets: Vec<&str> = f.results.iter().map(|r| names.get(*r)).collect();
    let tys: Vec<String> = f.result_types().iter().map(|t| t.mlir()).collect();
    let _ = writeln!(e.out, "    \"func.return\"({}) : ({}) -> ()", rets.join(", "), tys.join(", "));
    e.out.push_str("  }\n}\n");
    e.out
}

/// The mesh without size-1 axes (they carry no sharding and Shardy gains nothing from them).
fn nontrivial_axes(m: &Mesh) -> Mesh {
    Mesh { axes: m.axes.iter().filter(|(_, s)| *s > 1).cloned().collect() }
}

fn sanitize_symbol(s: &str) -> String {
    let t: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if t.is_empty() || t.starts_with(|c: char| c.is_ascii_digit()) {
        format!("m_{t}")
    } else {
        t
    }
}

/// SSA names of the values of one function, by node and output.
pub(crate) struct Names {
    per_node: Vec<Vec<String>>,
}

impl Names {
    pub(crate) fn get(&self, v: ValueRef) -> &str {
        &self.per_node[v.node as usize][v.output as usize]
    }
}

pub(crate) struct Emitter {
    pub(crate) out: String,
    next_id: usize,
    /// The next collective's channel handle (each collective in a module has its own).
    next_channel: i64,
    mesh: Option<Mesh>,
    /// Replaces `Precision::Default` on every dot (the program's `matmul_precision`).
    pub(crate) matmul_precision: crate::ir::Precision,
}

impl Emitter {
    pub(crate) fn fresh(&mut self) -> String {
        self.next_id += 1;
        format!("%{}", self.next_id - 1)
    }

    /// `#sdy.sharding<@mesh, [{"fsdp"}, {}]>` for `s` (replicated when `None`), or nothing without a mesh.
    pub(crate) fn sharding_attr(&self, s: Option<&Sharding>, ty: &TensorType) -> Option<String> {
        let mesh = self.mesh.as_ref()?;
        Some(format!("#sdy.sharding<@mesh, {}>", self.dims_spec(s, ty, mesh)))
    }

    pub(crate) fn sharding_spec(&self, s: &Sharding, ty: &TensorType) -> Option<String> {
        let mesh = self.mesh.as_ref()?;
        Some(format!("<@mesh, {}>", self.dims_spec(Some(s), ty, mesh)))
    }

    fn dims_spec(&self, s: Option<&Sharding>, ty: &TensorType, mesh: &Mesh) -> String {
        let rep = Sharding::replicated(ty.rank());
        let s = s.unwrap_or(&rep);
        assert_eq!(s.dims.len(), ty.rank(), "sharding {s:?} for a tensor of type {ty:?}");
        let dims: Vec<String> = s
            .dims
            .iter()
            .zip(&ty.dims)
            .map(|(axes, size)| {
                let kept: Vec<String> =
                    axes.iter().filter(|a| mesh.axis_size(a).is_some()).map(|a| format!("\"{a}\"")).collect();
                let split: i64 = axes.iter().filter_map(|a| mesh.axis_size(a)).product();
                assert!(size % split == 0, "dim of size {size} of {ty:?} is not divisible by mesh axes {axes:?}");
                format!("{{{}}}", kept.join(", "))
            })
            .collect();
        format!("[{}]", dims.join(", "))
    }

    /// Emits the live nodes of `f`. `params` name its parameters, `captures` its captured values.
    pub(crate) fn emit_body(&mut self, f: &Func, params: &[String], captures: &[String], indent: &str) -> Names {
        let live = live_nodes(f);
        let mut names = Names { per_node: vec![Vec::new(); f.nodes.len()] };
        for (i, node) in f.nodes.iter().enumerate() {
            match &node.op {
                Op::Parameter(p) => {
                    names.per_node[i] = vec![params[*p].clone()];
                    continue;
                }
                Op::Capture(c) => {
                    names.per_node[i] = vec![captures[*c].clone()];
                    continue;
                }
                _ => {}
            }
            if !live[i] {
                continue;
            }
            let inputs: Vec<String> = node.inputs.iter().map(|v| names.get(*v).to_string()).collect();
            let in_types: Vec<TensorType> = node.inputs.iter().map(|v| f.value_type(*v).clone()).collect();
            names.per_node[i] = self.emit_node(node, &inputs, &in_types, indent);
        }
        names
    }
}

/// Which nodes reach a result (parameters and captures are always named).
fn live_nodes(f: &Func) -> Vec<bool> {
    let mut live = vec![false; f.nodes.len()];
    let mut stack: Vec<usize> = f.results.iter().map(|r| r.node as usize).collect();
    while let Some(n) = stack.pop() {
        if live[n] {
            continue;
        }
        live[n] = true;
        stack.extend(f.nodes[n].inputs.iter().map(|v| v.node as usize));
    }
    live
}
