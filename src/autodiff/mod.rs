//! Reverse-mode autodiff on the IR.
//!
//! `value_and_grad(f, wrt)` builds a new function that replays `f` and appends the gradients of its first
//! result (a scalar loss) with respect to the parameters `wrt`. The replay is node by node; the backward
//! pass walks the replayed nodes in reverse, applying one VJP rule per op (`rules.rs`) and summing
//! cotangents of values used several times.
//!
//! Rematerialisation: a counted loop (`fori_loop`) is a remat region, as `jax.checkpoint` around a
//! scanned layer is in MaxText (`loops.rs`). Its forward replay keeps each iteration's input carries and
//! the values its [`Remat`] policy saves (tagged with `Tensor::checkpoint_name`); the backward pass
//! recomputes everything else of the body from those. Outside loops every value is kept.

mod loops;
mod rules;

use crate::ir::{Func, Graph, Op, Tensor, ValueRef};
use loops::{loop_vjp, replay_loop, LoopRecord};
use std::collections::HashMap;

/// A remat policy: which tagged values (`Tensor::checkpoint_name`) inside a remat region the forward pass
/// keeps for the backward pass. Everything else in the region is recomputed from its inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Remat {
    saved: Vec<String>,
}

impl Remat {
    /// Keep only each region's inputs and recompute the rest (MaxText's `remat_policy=full`).
    pub fn full() -> Remat {
        Remat::default()
    }

    /// Keep the values tagged with any of `names` (`jax.checkpoint_policies.save_only_these_names`).
    pub fn saving<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Remat {
        Remat { saved: names.into_iter().map(Into::into).collect() }
    }

    /// Whether a value tagged `name` is kept.
    pub fn saves(&self, name: &str) -> bool {
        self.saved.iter().any(|s| s == name)
    }

    /// The names kept, as given.
    pub fn saved_names(&self) -> &[String] {
        &self.saved
    }
}

/// A function replayed into a graph: every value's new tensor, the loop records, and the values its remat
/// policy saves (in node order: each saved tag's value, then each recorded loop's saved stacks).
struct Replay {
    vals: Vec<Vec<Tensor>>,
    loops: HashMap<usize, LoopRecord>,
    saved: Vec<Tensor>,
}

fn zeros_like(t: &Tensor) -> Tensor {
    t.graph().zeros(t.dtype(), t.dims())
}

/// Replays `f` into `g` with `params` and `captures` as its inputs. With `given` (a recomputation in the
/// backward pass), the values `remat` saves are taken from `given`, in the order [`Replay::saved`] lists
/// them, instead of being recomputed.
fn replay(g: &Graph, f: &Func, params: &[Tensor], captures: &[Tensor], record_loops: bool, remat: &Remat, given: Option<&[Tensor]>) -> Replay {
    let mut vals: Vec<Vec<Tensor>> = Vec::with_capacity(f.nodes.len());
    let mut loops = HashMap::new();
    let mut saved = Vec::new();
    let mut given = given.map(|v| v.iter());
    for (i, node) in f.nodes.iter().enumerate() {
        let ins: Vec<Tensor> = node.inputs.iter().map(|v| vals[v.node as usize][v.output as usize].clone()).collect();
        let _at = g.at_loc(node.loc.as_deref());
        let out = match &node.op {
            Op::Parameter(p) => vec![params[*p].clone()],
            Op::Capture(c) => vec![captures[*c].clone()],
            Op::CheckpointName(name) if remat.saves(name) => {
                let v = match given.as_mut() {
                    Some(it) => it.next().expect("autodiff: fewer saved values than saved tags").with_axes(&node.outputs[0].axes),
                    None => ins[0].checkpoint_name(name),
                };
                saved.push(v.clone());
                vec![v]
            }
            Op::While { cond, body, num_carries, trip, region } => {
                let recorded = record_loops && loops::records(*trip);
                let stacks = match (recorded && *region, given.as_mut()) {
                    // Its record as the enclosing loop kept it: carry stacks, final carries, saved stacks.
                    (true, Some(it)) => Some(it.by_ref().take(2 * num_carries + loops::saved_types(body, remat).len()).cloned().collect()),
                    _ => None,
                };
                let (outs, rec) = replay_loop(g, cond, body, *num_carries, *trip, &ins, record_loops, remat, stacks);
                if let Some(r) = rec {
                    // Only a region's record is kept by an enclosing loop (see `loops::saved_types`).
                    if *region {
                        saved.extend(r.saved_values().cloned());
                    }
                    loops.insert(i, r);
                }
                outs
            }
            op => {
                let refs: Vec<&Tensor> = ins.iter().collect();
                let host = if refs.is_empty() { g.clone() } else { Graph::innermost(&refs) };
                let host = if host.depth() < g.depth() { g.clone() } else { host };
                let mut out = host.push(op.clone(), &refs, node.outputs.clone());
                for (o, ty) in out.iter_mut().zip(&node.outputs) {
                    *o = o.with_axes(&ty.axes);
                }
                out
            }
        };
        vals.push(out);
    }
    assert!(given.is_none_or(|mut it| it.next().is_none()), "autodiff: more saved values than saved tags");
    Replay { vals, loops, saved }
}

/// Adds `ct` to the cotangent of `v`.
fn accumulate(cts: &mut HashMap<ValueRef, Tensor>, v: ValueRef, ct: Tensor) {
    let ct = match cts.remove(&v) {
        Some(prev) => &prev + &ct.convert(prev.dtype()),
        None => ct,
    };
    cts.insert(v, ct);
}

/// Backward pass over a replayed `f`: from the cotangents of its results, the cotangents of its
/// parameters and captures (`None` = zero).
///
/// `cap_seeds`: running sums to add the captures' cotangents to (a loop's backward carries them). Seeding
/// the sum, rather than adding this body's cotangent to it afterwards, lets a captured stacked parameter
/// read at one index (`take(params, i)`) accumulate in place: XLA rewrites `acc + dus(zeros, u, i)` into
/// an update of the slice, where `acc + ct` with `ct` a nested loop's own zero-initialised sum would fill
/// and add the whole stack once per outer iteration.
fn backward(f: &Func, r: &Replay, out_cts: &[Option<Tensor>], remat: &Remat, cap_seeds: Option<&[Option<Tensor>]>) -> (Vec<Option<Tensor>>, Vec<Option<Tensor>>) {
    let mut cts: HashMap<ValueRef, Tensor> = HashMap::new();
    for (res, ct) in f.results.iter().zip(out_cts) {
        if let Some(ct) = ct {
            accumulate(&mut cts, *res, ct.clone());
        }
    }
    if let Some(seeds) = cap_seeds {
        for (i, node) in f.nodes.iter().enumerate() {
            if let Op::Capture(c) = node.op {
                if let Some(Some(seed)) = seeds.get(c) {
                    cts.insert(ValueRef { node: i as u32, output: 0 }, seed.clone());
                }
            }
        }
    }
    let mut param_cts = vec![None; f.params.len()];
    let mut cap_cts = vec![None; f.captures.len()];
    for (i, node) in f.nodes.iter().enumerate().rev() {
        let node_cts: Vec<Option<Tensor>> =
            (0..node.outputs.len()).map(|o| cts.remove(&ValueRef { node: i as u32, output: o as u32 })).collect();
        if node_cts.iter().all(|c| c.is_none()) {
            continue;
        }
        let ins: Vec<Tensor> = node.inputs.iter().map(|v| r.vals[v.node as usize][v.output as usize].clone()).collect();
        let grad_loc = node.loc.as_deref().map(|l| format!("{l}/grad"));
        let _at = r.vals[i].first().map(|t| t.graph().at_loc(grad_loc.as_deref().or(Some("grad"))));
        let in_cts = match &node.op {
            Op::Parameter(p) => {
                param_cts[*p] = node_cts[0].clone();
                continue;
            }
            Op::Capture(c) => {
                cap_cts[*c] = node_cts[0].clone();
                continue;
            }
            Op::While { cond, body, num_carries, .. } => {
                let rec = r.loops.get(&i).unwrap_or_else(|| panic!("autodiff: a `while` without a trip count (use fori_loop) is not differentiable"));
                // The cotangents summed so far for the loop's captured inputs seed its running sums (the
                // first occurrence of a value; see `cap_seeds`).
                let first_cap = num_carries + cond.captures.len();
                let seeds: Vec<Option<Tensor>> = node.inputs.iter().enumerate().map(|(k, v)| {
                    let first = node.inputs[..k].iter().all(|u| u != v);
                    if k >= first_cap && first { cts.remove(v) } else { None }
                }).collect();
                loop_vjp(cond, body, *num_carries, &ins, rec, &node_cts, remat, &seeds[first_cap..])
            }
            op => rules::vjp(op, &ins, &r.vals[i], &node_cts),
        };
        for (v, ct) in node.inputs.iter().zip(in_cts) {
            if let Some(ct) = ct {
                let ty = f.value_type(*v);
                if ty.dtype.is_float() {
                    assert_eq!(ct.dims(), &ty.dims[..], "autodiff: cotangent shape of {:?} input", node.op.name());
                    accumulate(&mut cts, *v, ct.convert(ty.dtype));
                }
            }
        }
    }
    // A seeded capture the body never reads keeps its sum.
    for (c, seed) in cap_seeds.unwrap_or(&[]).iter().enumerate() {
        if cap_cts[c].is_none() {
            cap_cts[c] = seed.clone();
        }
    }
    (param_cts, cap_cts)
}

/// Inlines `f` into `g` on `args` and returns its results (the forward pass alone: the eval step reuses
/// the train step's loss function this way).
pub fn inline(g: &Graph, f: &Func, args: &[Tensor]) -> Vec<Tensor> {
    let r = replay(g, f, args, &[], false, &Remat::full(), None);
    f.results.iter().map(|v| r.vals[v.node as usize][v.output as usize].clone()).collect()
}

/// Inlines `f` into `g` on `args` and differentiates its first result (a float scalar) with respect to
/// the arguments `wrt`, keeping inside counted loops what `remat` saves: returns (f's results, one
/// gradient per `wrt`, zeros where there is no dependence).
pub fn grad_in(g: &Graph, f: &Func, args: &[Tensor], wrt: &[usize], remat: &Remat) -> (Vec<Tensor>, Vec<Tensor>) {
    let loss_ty = f.value_type(f.results[0]);
    assert!(loss_ty.dims.is_empty() && loss_ty.dtype.is_float(), "grad_in: results[0] must be a float scalar, got {loss_ty:?}");
    let r = replay(g, f, args, &[], true, remat, None);
    let results: Vec<Tensor> = f.results.iter().map(|v| r.vals[v.node as usize][v.output as usize].clone()).collect();
    let mut out_cts = vec![None; f.results.len()];
    out_cts[0] = Some(g.full(1.0, loss_ty.dtype, &[]));
    let (p_cts, _) = backward(f, &r, &out_cts, remat, None);
    let grads = wrt.iter().map(|&i| p_cts[i].clone().map(|c| c.convert(f.params[i].dtype)).unwrap_or_else(|| zeros_like(&args[i]))).collect();
    (results, grads)
}

/// A function with the parameters of `f` returning `f`'s results followed by d results[0] / d params[i]
/// for each `i` in `wrt` (zeros where the loss does not depend on a parameter). `results[0]` must be a
/// float scalar. Counted loops are rematerialised fully ([`Remat::full`]).
pub fn value_and_grad(f: &Func, wrt: &[usize]) -> Func {
    let g = Graph::new();
    let params: Vec<Tensor> = f.params.iter().map(|ty| g.param(ty.clone())).collect();
    let (mut outs, grads) = grad_in(&g, f, &params, wrt, &Remat::full());
    outs.extend(grads);
    g.finish(&outs)
}
