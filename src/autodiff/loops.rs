//! Counted loops (`fori_loop`, i.e. `while` with a known trip count) as remat regions.
//!
//! The forward replay stacks, per iteration, the loop's input carries (for the layer scan: each block's
//! input, MaxText's `remat_policy=full`) and the values the [`Remat`] policy saves: the body's tagged values
//! and, for loops nested in the body, their whole records: input-carry stacks, final carries and saved
//! stacks (so a saved value of an inner layer loop is stacked [outer, inner, ...]). The backward pass is a
//! reverse loop that reads iteration i's carries and saved values, recomputes the rest of the body from
//! them (a nested loop is not run again: its record is given), and applies the body's VJP, accumulating the
//! cotangents of captured values.

use super::{backward, replay, zeros_like, Remat};
use crate::ir::{DType, Func, Graph, Op, Tensor, TensorType};

/// What the replay of a counted loop recorded: per carry, its value at the start of every iteration, and
/// per saved value of the body ([`saved_types`]), its value in every iteration.
pub(super) struct LoopRecord {
    pub(super) stacks: Vec<Tensor>,
    /// The loop's final carries (its outputs).
    finals: Vec<Tensor>,
    pub(super) saved: Vec<Tensor>,
    lower: i64,
    upper: i64,
}

impl LoopRecord {
    /// What an enclosing loop keeps of this record, in [`saved_types`]' order: stacks, finals, saved.
    pub(super) fn saved_values(&self) -> impl Iterator<Item = &Tensor> {
        self.stacks.iter().chain(&self.finals).chain(&self.saved)
    }
}

/// Whether a loop with this trip count is recorded (counted, at least one iteration).
pub(super) fn records(trip: Option<(i64, i64)>) -> bool {
    trip.is_some_and(|(lower, upper)| upper > lower)
}

/// The types of the values `remat` saves in one run of `f`, in the order `replay` lists them: a saved tag's
/// value, or for a recorded nested loop its record ([`LoopRecord::saved_values`]): its input carries
/// stacked over its iterations, its final carries, and its own saved values stacked over its iterations.
/// Keeping a nested region's carries (MaxText: the outer scan keeps the inputs of the layers its block
/// rematerialises one by one) lets the enclosing loop's backward pass take the nested loop's record as
/// given instead of running the nested loop forward again just to record it: each layer of a nested scan
/// is then computed twice (forward, recomputation), not three times. Other loops (a layer's chunk loop,
/// flash attention's key blocks) are not kept: the recomputation runs them again, so what the backward pass
/// holds per layer is what the remat policy says (with `full`, the layer's input), not their per-chunk
/// states (at 4096 tokens the Gated DeltaNet's were 4.5 GiB a chip on the 80B).
pub(super) fn saved_types(f: &Func, remat: &Remat) -> Vec<TensorType> {
    let stack = |steps: i64, ty: &TensorType| {
        let mut dims = vec![steps];
        dims.extend_from_slice(&ty.dims);
        TensorType::new(ty.dtype, &dims)
    };
    let mut types = Vec::new();
    for node in &f.nodes {
        match &node.op {
            Op::CheckpointName(name) if remat.saves(name) => types.push(node.outputs[0].clone()),
            Op::While { body, trip: Some((lower, upper)), region: true, .. } if upper > lower => {
                let steps = upper - lower;
                types.extend(node.outputs.iter().map(|ty| stack(steps, ty)));
                types.extend(node.outputs.iter().cloned());
                types.extend(saved_types(body, remat).iter().map(|ty| stack(steps, ty)));
            }
            _ => {}
        }
    }
    types
}

/// Replays a `while`; when recording, a counted loop also stacks each iteration's input carries and saved
/// values. `given`: the loop's whole record, when it is replayed inside a recomputation (the loop then
/// does not run).
#[allow(clippy::too_many_arguments)]
pub(super) fn replay_loop(
    g: &Graph,
    cond: &Func,
    body: &Func,
    n: usize,
    trip: Option<(i64, i64)>,
    ins: &[Tensor],
    record: bool,
    remat: &Remat,
    given: Option<Vec<Tensor>>,
) -> (Vec<Tensor>, Option<LoopRecord>) {
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
        return (init.to_vec(), Some(LoopRecord { stacks: Vec::new(), finals: Vec::new(), saved: Vec::new(), lower, upper }));
    }
    if let (true, Some(given)) = (record, given) {
        // Inside a recomputation: the record is given whole (input-carry stacks, final carries, saved
        // stacks), so the loop does not run.
        let (stacks, rest) = given.split_at(n);
        let (finals, saved) = rest.split_at(n);
        let finals: Vec<Tensor> = finals.iter().zip(init).map(|(f, c)| f.with_axes(&c.ty().axes)).collect();
        let rec = LoopRecord { stacks: stacks.to_vec(), finals: finals.clone(), saved: saved.to_vec(), lower, upper };
        return (finals, Some(rec));
    }
    let stacked = |dtype: DType, dims: &[i64]| {
        let mut d = vec![steps];
        d.extend_from_slice(dims);
        g.zeros(dtype, &d)
    };
    let mut carries = init.to_vec();
    if record {
        carries.extend(init.iter().map(|c| stacked(c.dtype(), c.dims())));
        carries.extend(saved_types(body, remat).iter().map(|ty| stacked(ty.dtype, &ty.dims)));
    }
    let out = g.while_loop(
        &carries,
        |cg, c| {
            let r = replay(cg, cond, &c[..n], &cond_caps, false, remat, None);
            r.vals[cond.results[0].node as usize][cond.results[0].output as usize].clone()
        },
        |bg, c| {
            let it = &c[0] - &bg.full(lower as f64, DType::S32, &[]);
            let r = replay(bg, body, &c[..n], &body_caps, true, remat, None);
            let mut next: Vec<Tensor> = body.results.iter().map(|v| r.vals[v.node as usize][v.output as usize].clone()).collect();
            if record {
                for (k, stack) in c[n..2 * n].iter().enumerate() {
                    next.push(stack.update_axis(0, &it, &c[k]));
                }
                for (stack, v) in c[2 * n..].iter().zip(&r.saved) {
                    next.push(stack.update_axis(0, &it, v));
                }
            }
            next
        },
    );
    let rec = record.then(|| LoopRecord {
        stacks: out[n..2 * n].to_vec(),
        finals: out[..n].to_vec(),
        saved: out[2 * n..].to_vec(),
        lower,
        upper,
    });
    (out[..n].to_vec(), rec)
}

/// `values`, each float one plus zero times an element of the first cotangent: the same values, which
/// XLA can neither merge with the forward pass's nor compute before the cotangents arrive. The XLA CPU
/// compiler drops optimization barriers before its last CSE, so for an inlined one-iteration loop the
/// barrier alone does not keep the recomputation (float `x * 0` is not folded: NaN · 0 is NaN).
fn after_cotangents(values: &[Tensor], cts: &[Tensor]) -> Vec<Tensor> {
    let Some(ct) = cts.first() else { return values.to_vec() };
    let r = ct.rank();
    let zero = ct.slice(&vec![0; r], &vec![1; r], &vec![1; r]).reshape(&[]).mul_scalar(0.0);
    values.iter().map(|t| if t.dtype().is_float() { t + &zero.convert(t.dtype()).broadcast_to(t.dims()) } else { t.clone() }).collect()
}

/// The VJP of a recorded counted loop: a reverse loop over the iterations that recomputes the body from
/// the recorded carries and saved values and applies its VJP. Returns cotangents for the loop's inputs
/// (init carries, cond captures (none), body captures).
/// `seeds`: per body capture, the cotangent summed so far outside the loop, which the loop adds to (see
/// `backward`'s `cap_seeds`); the capture's returned cotangent includes it.
#[allow(clippy::too_many_arguments)]
pub(super) fn loop_vjp(cond: &Func, body: &Func, n: usize, ins: &[Tensor], rec: &LoopRecord, out_cts: &[Option<Tensor>], remat: &Remat, seeds: &[Option<Tensor>]) -> Vec<Option<Tensor>> {
    let ncond = cond.captures.len();
    if rec.upper <= rec.lower {
        // No iterations: carry cotangents pass straight through; captures get only their seeds.
        let mut result = out_cts[..n].to_vec();
        result.resize(n + ncond, None);
        result.extend(seeds.iter().cloned());
        return result;
    }
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
            init.push(seeds[k].clone().unwrap_or_else(|| zeros_like(t)));
        }
    }
    if init.is_empty() {
        let mut result = vec![None; n + ncond];
        result.extend(seeds.iter().cloned());
        return result;
    }
    let steps = rec.upper - rec.lower;
    let nfc = float_carry.iter().filter(|f| **f).count();
    let out = g.fori_loop(0, steps, &init, |bg, j, c| {
        let it = &bg.full((steps - 1) as f64, DType::S32, &[]) - j;
        let carries: Vec<Tensor> = rec.stacks.iter().map(|s| s.index_axis(0, &it)).collect();
        // A one-iteration loop (an unscanned layer) is inlined by XLA and its stack read folds to the
        // forward value, so the recomputation must be kept apart from the forward pass (JAX's
        // `prevent_cse`) and after the cotangents (run during the forward pass, it would keep as much alive
        // as no remat does): a barrier over the carries and cotangents, which compilers that keep barriers
        // until scheduling honour, and a data dependency for those that drop them earlier (XLA CPU).
        // The saved values go the same way: what is recomputed from them alone must not merge either.
        let saved: Vec<Tensor> = rec.saved.iter().map(|s| s.index_axis(0, &it)).collect();
        let ns = saved.len();
        let barred = bg.optimization_barrier(&[carries, saved, c[..nfc].to_vec()].concat());
        let (inputs, carry_cts) = barred.split_at(n + ns);
        let inputs = if steps == 1 { after_cotangents(inputs, carry_cts) } else { inputs.to_vec() };
        let (carries, saved) = inputs.split_at(n);
        let r = replay(bg, body, carries, &body_caps, true, remat, Some(saved));
        let mut cts_in = Vec::new();
        let mut fi = 0;
        for k in 0..n {
            if float_carry[k] {
                cts_in.push(Some(carry_cts[fi].clone()));
                fi += 1;
            } else {
                cts_in.push(None);
            }
        }
        // The running sums of the capture cotangents (carries after the float carries' cotangents) seed
        // this iteration's backward pass, which adds to them.
        let mut ci = nfc;
        let acc_seeds: Vec<Option<Tensor>> = float_cap.iter().map(|&f| f.then(|| { ci += 1; c[ci - 1].clone() })).collect();
        let (p_cts, cap_cts) = backward(body, &r, &cts_in, remat, Some(&acc_seeds));
        let mut next = Vec::new();
        for k in 0..n {
            if float_carry[k] {
                next.push(p_cts[k].clone().unwrap_or_else(|| zeros_like(&carries[k])));
            }
        }
        for (k, t) in body_caps.iter().enumerate() {
            if float_cap[k] {
                next.push(cap_cts[k].clone().expect("a seeded capture has a cotangent").convert(t.dtype()));
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
