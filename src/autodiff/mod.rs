//! Reverse-mode autodiff on the IR.
//!
//! `value_and_grad(f, wrt)` builds a new function that replays `f` and appends the gradients of its first
//! result (a scalar loss) with respect to the parameters `wrt`. The replay is node by node; the backward
//! pass walks the replayed nodes in reverse, applying one VJP rule per op (`rules.rs`) and summing
//! cotangents of values used several times.
//!
//! Loops (`fori_loop`, i.e. `while` with a known trip count): the forward replay also stacks each
//! iteration's input carries (the residuals: for the layer scan that is each layer's input — MaxText's
//! `remat_policy=full`); the backward pass is a reverse loop that reads iteration i's carries, recomputes
//! the body from them and applies the body's VJP, accumulating the cotangents of captured values.

mod rules;

use crate::ir::{DType, Func, Graph, Op, Tensor, ValueRef};
use std::collections::HashMap;

/// What the replay of a counted loop recorded: per carry, its value at the start of every iteration.
struct LoopRecord {
    stacks: Vec<Tensor>,
    lower: i64,
    upper: i64,
}

/// A function replayed into a graph: every value's new tensor, and the loop records.
struct Replay {
    vals: Vec<Vec<Tensor>>,
    loops: HashMap<usize, LoopRecord>,
}

fn zeros_like(t: &Tensor) -> Tensor {
    t.graph().zeros(t.dtype(), t.dims())
}

/// Replays `f` into `g` with `params` and `captures` as its inputs.
fn replay(g: &Graph, f: &Func, params: &[Tensor], captures: &[Tensor], record_loops: bool) -> Replay {
    let mut vals: Vec<Vec<Tensor>> = Vec::with_capacity(f.nodes.len());
    let mut loops = HashMap::new();
    for (i, node) in f.nodes.iter().enumerate() {
        let ins: Vec<Tensor> = node.inputs.iter().map(|v| vals[v.node as usize][v.output as usize].clone()).collect();
        let out = match &node.op {
            Op::Parameter(p) => vec![params[*p].clone()],
            Op::Capture(c) => vec![captures[*c].clone()],
            Op::While { cond, body, num_carries, trip } => {
                let (outs, rec) = replay_loop(g, cond, body, *num_carries, *trip, &ins, record_loops);
                if let Some(r) = rec {
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
    Replay { vals, loops }
}

/// Replays a `while`; when recording, a counted loop also stacks each iteration's input carries.
fn replay_loop(g: &Graph, cond: &Func, body: &Func, n: usize, trip: Option<(i64, i64)>, ins: &[Tensor], record: bool) -> (Vec<Tensor>, Option<LoopRecord>) {
    let init = &ins[..n];
    let ncond = cond.captures.len();
    let cond_caps = ins[n..n + ncond].to_vec();
    let body_caps = ins[n + ncond..].to_vec();
    let (record, (lower, upper)) = match (record, trip) {
        (true, Some(t)) => (true, t),
        _ => (false, (0, 0)),
    };
    let steps = upper - lower;
    if record && steps <= 0 {
        // No iterations: the loop is the identity on its carries, with nothing to record (a [0, ..] stack
        // could not even be traced into).
        return (init.to_vec(), Some(LoopRecord { stacks: Vec::new(), lower, upper }));
    }
    let mut carries = init.to_vec();
    if record {
        for c in init {
            let mut dims = vec![steps];
            dims.extend_from_slice(c.dims());
            carries.push(g.zeros(c.dtype(), &dims));
        }
    }
    let out = g.while_loop(
        &carries,
        |cg, c| replay(cg, cond, &c[..n], &cond_caps, false).vals[cond.results[0].node as usize][cond.results[0].output as usize].clone(),
        |bg, c| {
            let r = replay(bg, body, &c[..n], &body_caps, true);
            let mut next: Vec<Tensor> = body.results.iter().map(|v| r.vals[v.node as usize][v.output as usize].clone()).collect();
            if record {
                let it = &c[0] - &bg.full(lower as f64, DType::S32, &[]);
                for (k, stack) in c[n..].iter().enumerate() {
                    next.push(stack.update_axis(0, &it, &c[k]));
                }
            }
            next
        },
    );
    let rec = record.then(|| LoopRecord { stacks: out[n..].to_vec(), lower, upper });
    (out[..n].to_vec(), rec)
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
fn backward(f: &Func, r: &Replay, out_cts: &[Option<Tensor>]) -> (Vec<Option<Tensor>>, Vec<Option<Tensor>>) {
    let mut cts: HashMap<ValueRef, Tensor> = HashMap::new();
    for (res, ct) in f.results.iter().zip(out_cts) {
        if let Some(ct) = ct {
            accumulate(&mut cts, *res, ct.clone());
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
                loop_vjp(cond, body, *num_carries, &ins, rec, &node_cts)
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
    (param_cts, cap_cts)
}

/// The VJP of a recorded counted loop: a reverse loop over the iterations that recomputes the body from
/// the recorded carries and applies its VJP. Returns cotangents for the loop's inputs (init carries, cond
/// captures (none), body captures).
fn loop_vjp(cond: &Func, body: &Func, n: usize, ins: &[Tensor], rec: &LoopRecord, out_cts: &[Option<Tensor>]) -> Vec<Option<Tensor>> {
    if rec.upper <= rec.lower {
        // No iterations: carry cotangents pass straight through; captures get none.
        let mut result = out_cts[..n].to_vec();
        result.resize(ins.len(), None);
        return result;
    }
    let ncond = cond.captures.len();
    let body_caps = ins[n + ncond..].to_vec();
    let float_carry: Vec<bool> = ins[..n].iter().map(|t| t.dtype().is_float()).collect();
    let float_cap: Vec<bool> = body_caps.iter().map(|t| t.dtype().is_float()).collect();
    let g = rec.stacks[0].graph();
    // Backward carries: carry cotangents (float carries), then capture cotangent sums (float captures).
    let mut init = Vec::new();
    for (k, t) in ins[..n].iter().enumerate() {
        if float_carry[k] {
            init.push(out_cts[k].clone().unwrap_or_else(|| zeros_like(t)));
        }
    }
    for (k, t) in body_caps.iter().enumerate() {
        if float_cap[k] {
            init.push(zeros_like(t));
        }
    }
    if init.is_empty() {
        return vec![None; ins.len()];
    }
    let steps = rec.upper - rec.lower;
    let nfc = float_carry.iter().filter(|f| **f).count();
    let out = g.fori_loop(0, steps, &init, |bg, j, c| {
        let it = &bg.full((steps - 1) as f64, DType::S32, &[]) - j;
        let carries: Vec<Tensor> = rec.stacks.iter().map(|s| s.index_axis(0, &it)).collect();
        let r = replay(bg, body, &carries, &body_caps, true);
        let mut cts_in = Vec::new();
        let mut fi = 0;
        for k in 0..n {
            if float_carry[k] {
                cts_in.push(Some(c[fi].clone()));
                fi += 1;
            } else {
                cts_in.push(None);
            }
        }
        let (p_cts, cap_cts) = backward(body, &r, &cts_in);
        let mut next = Vec::new();
        for k in 0..n {
            if float_carry[k] {
                next.push(p_cts[k].clone().unwrap_or_else(|| zeros_like(&carries[k])));
            }
        }
        let mut ci = nfc;
        for (k, t) in body_caps.iter().enumerate() {
            if float_cap[k] {
                let acc = &c[ci];
                next.push(match &cap_cts[k] {
                    Some(ct) => acc + &ct.convert(t.dtype()),
                    None => acc.clone(),
                });
                ci += 1;
            }
        }
        next
    });
    let mut result = Vec::with_capacity(ins.len());
    let mut fi = 0;
    for k in 0..n {
        result.push(if float_carry[k] {
            fi += 1;
            Some(out[fi - 1].clone())
        } else {
            None
        });
    }
    result.extend((0..ncond).map(|_| None));
    let mut ci = nfc;
    for k in 0..body_caps.len() {
        result.push(if float_cap[k] {
            ci += 1;
            Some(out[ci - 1].clone())
        } else {
            None
        });
    }
    result
}

/// Inlines `f` into `g` on `args` and returns its results (the forward pass alone: the eval step reuses
/// the train step's loss function this way).
pub fn inline(g: &Graph, f: &Func, args: &[Tensor]) -> Vec<Tensor> {
    let r = replay(g, f, args, &[], false);
    f.results.iter().map(|v| r.vals[v.node as usize][v.output as usize].clone()).collect()
}

/// Inlines `f` into `g` on `args` and differentiates its first result (a float scalar) with respect to
/// the arguments `wrt`: returns (f's results, one gradient per `wrt`, zeros where there is no dependence).
pub fn grad_in(g: &Graph, f: &Func, args: &[Tensor], wrt: &[usize]) -> (Vec<Tensor>, Vec<Tensor>) {
    let loss_ty = f.value_type(f.results[0]);
    assert!(loss_ty.dims.is_empty() && loss_ty.dtype.is_float(), "grad_in: results[0] must be a float scalar, got {loss_ty:?}");
    let r = replay(g, f, args, &[], true);
    let results: Vec<Tensor> = f.results.iter().map(|v| r.vals[v.node as usize][v.output as usize].clone()).collect();
    let mut out_cts = vec![None; f.results.len()];
    out_cts[0] = Some(g.full(1.0, loss_ty.dtype, &[]));
    let (p_cts, _) = backward(f, &r, &out_cts);
    let grads = wrt.iter().map(|&i| p_cts[i].clone().map(|c| c.convert(f.params[i].dtype)).unwrap_or_else(|| zeros_like(&args[i]))).collect();
    (results, grads)
}

/// A function with the parameters of `f` returning `f`'s results followed by d results[0] / d params[i]
/// for each `i` in `wrt` (zeros where the loss does not depend on a parameter). `results[0]` must be a
/// float scalar.
pub fn value_and_grad(f: &Func, wrt: &[usize]) -> Func {
    let g = Graph::new();
    let params: Vec<Tensor> = f.params.iter().map(|ty| g.param(ty.clone())).collect();
    let (mut outs, grads) = grad_in(&g, f, &params, wrt);
    outs.extend(grads);
    g.finish(&outs)
}
