//! How a program's arguments and results are laid over the mesh — the one prologue every program shares:
//! parameter (and optimizer-state) groups sharded from their declarations' logical axes, data inputs by
//! MaxText's `input_data_sharding_logical_axes`, and the mesh itself.

use crate::ir::{Program, Sharding, ShardingContext};
use crate::nn::ParamDecl;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// MaxText's `input_data_sharding_logical_axes` for [batch, length] inputs.
pub const INPUT_LOGICAL: [&str; 2] = ["activation_embed_and_logits_batch", "activation_norm_length"];

/// Shardings of parameters from their logical axes (and their `shard_move`). A dim whose rule names mesh
/// axes that do not divide it is replicated instead (MaxText's behaviour for such dims), said once per
/// parameter on stderr.
pub fn param_shardings(decls: &[ParamDecl], ctx: &ShardingContext) -> Vec<Sharding> {
    decls
        .iter()
        .map(|d| {
            let logical: Vec<&str> = d.logical.iter().map(|a| a.unwrap_or("")).collect();
            let s = ctx.resolve(&logical, &d.dims);
            report_replicated_dims(d, &logical, &s, ctx);
            match d.shard_move {
                Some(m) => ctx.resolve_moved(&logical, &d.dims, m),
                None => s,
            }
        })
        .collect()
}

fn report_replicated_dims(d: &ParamDecl, logical: &[&str], got: &Sharding, ctx: &ShardingContext) {
    static SAID: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let wanted = ctx.rules.logical_to_mesh_axes(logical);
    for (i, w) in wanted.iter().enumerate() {
        let axes: Vec<&String> = w.iter().flatten().filter(|a| ctx.mesh.axis_size(a).unwrap_or(1) > 1).collect();
        if axes.is_empty() || !got.dims[i].is_empty() {
            continue;
        }
        let key = format!("{} {i}", d.path);
        if SAID.get_or_init(Default::default).lock().unwrap().insert(key) {
            let sizes: Vec<String> = axes.iter().map(|a| format!("{a}={}", ctx.mesh.axis_size(a).unwrap_or(1))).collect();
            eprintln!(
                "note: {} dim {i} ({}, size {}) does not divide over mesh axes [{}]: replicated on that dim",
                d.path, logical[i], d.dims[i], sizes.join(", ")
            );
        }
    }
}

/// Puts `program` on the mesh of `ctx` (nothing on one device): each group in `param_groups` (arguments
/// and results of that name, whichever the program has) is sharded like `decls`; each argument
/// group in `input_groups` holds [batch, length] (or [batch]) data sharded by [`INPUT_LOGICAL`].
pub fn lay_out(program: &mut Program, ctx: &ShardingContext, decls: &[ParamDecl], param_groups: &[&str], input_groups: &[&str]) {
    if ctx.mesh.num_devices() <= 1 {
        return;
    }
    let shardings = param_shardings(decls, ctx);
    for g in param_groups {
        if program.arg_groups.iter().any(|a| a.name == *g) {
            program.shard_args(g, &shardings);
        }
        if program.result_groups.iter().any(|r| r.name == *g) {
            program.shard_results(g, &shardings);
        }
    }
    for g in input_groups {
        let s: Vec<Sharding> = program.args(g).map(|i| {
            let dims = &program.main.params[i].dims;
            ctx.resolve(&INPUT_LOGICAL[..dims.len().min(2)], dims)
        }).collect();
        program.shard_args(g, &s);
    }
    // Everything else goes to and comes back from every device whole (tokens, rng, metrics, logits): the
    // host writes and reads one copy, so the partitioner must not pick another layout for them.
    for a in 0..program.arg_shardings.len() {
        if program.arg_shardings[a].is_none() {
            program.arg_shardings[a] = Some(Sharding::replicated(program.main.params[a].rank()));
        }
    }
    for r in 0..program.result_shardings.len() {
        if program.result_shardings[r].is_none() {
            let rank = program.main.value_type(program.main.results[r]).rank();
            program.result_shardings[r] = Some(Sharding::replicated(rank));
        }
    }
    program.mesh = Some(ctx.mesh.clone());
}
