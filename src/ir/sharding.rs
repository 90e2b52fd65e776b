//! Sharding annotations carried by the graph: a device mesh and, per tensor, the mesh axes of each dim.
//! The emitter prints them as Shardy (`sdy.mesh`, `#sdy.sharding`); `crate::sharding` builds them from config.
//! The one place where logical axis names are resolved to mesh axes: a traced graph holds a
//! [`ShardingContext`] (mesh + rules), so layers constrain activations by logical name
//! (`x.constrain(&["activation_batch", "activation_length", "activation_embed"])`) and parameters get
//! theirs from their declaration.
//!
//! ## Logical axis names -> mesh axes (MaxText's rule table)
//!
//! Semantics (flax `linen.spmd._logical_to_mesh_axes`, as called by MaxText's
//! `utils/sharding.logical_to_mesh_axes`, then `remove_size_one_mesh_axis`):
//! 1. Every dim starts unassigned. The rules are walked **in table order** (not dim order). A rule
//!    `(name, mesh_axes)` applies to the dim whose logical name is `name` if that dim is still unassigned and
//!    none of `mesh_axes` is already used by any dim of this tensor. Later rules with the same name are
//!    therefore fallbacks (`embed` -> `[fsdp, fsdp_transpose, ...]`, else `[fsdp, context, ...]`). A rule with
//!    no mesh axes (`['qkv', []]`) assigns "replicated" and stops later rules for that dim.
//! 2. Size-1 mesh axes count as used when they are assigned (as in flax) and are dropped from the result
//!    afterwards; mesh axes that the mesh does not have count as size 1.
//! 3. Extension over flax: a rule applies only if the product of its mesh-axis sizes divides the dim (a dim
//!    whose size is unknown, < 0, always qualifies). A rule that does not divide is skipped, so the next rule
//!    for that name, or replication, applies: e.g. a batch of 1 is not split over fsdp=4. Flax would assign
//!    it anyway and leave the uneven split to XLA; MaxText drops such axes by hand in places.
//! 4. Unnamed dims (`""`) and names without a rule are replicated. A logical name used twice in one tensor
//!    is a bug in the caller (flax raises) and panics.

/// A logical device mesh: named axes with sizes, row-major over devices (partition p = row-major index).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mesh {
    pub axes: Vec<(String, i64)>,
}

impl Mesh {
    pub fn new(axes: &[(&str, i64)]) -> Mesh {
        Mesh { axes: axes.iter().map(|(n, s)| (n.to_string(), *s)).collect() }
    }

    pub fn num_devices(&self) -> i64 {
        self.axes.iter().map(|(_, s)| *s).product()
    }

    pub fn axis_size(&self, name: &str) -> Option<i64> {
        self.axes.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }
}

/// For each tensor dim, the mesh axes it is split over (major to minor); an empty list = replicated dim.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sharding {
    pub dims: Vec<Vec<String>>,
}

impl Sharding {
    pub fn replicated(rank: usize) -> Sharding {
        Sharding { dims: vec![Vec::new(); rank] }
    }

    /// `Sharding::new(&[&["fsdp"], &[]])`.
    pub fn new(dims: &[&[&str]]) -> Sharding {
        Sharding { dims: dims.iter().map(|d| d.iter().map(|a| a.to_string()).collect()).collect() }
    }

    pub fn is_replicated(&self) -> bool {
        self.dims.iter().all(|d| d.is_empty())
    }

    /// This sharding with dim `from`'s mesh axes moved onto dim `onto`, when `onto` has none of its own
    /// and their product divides `shape[onto]` (else unchanged). Each device then holds the same number
    /// of elements, cut along another dim.
    pub fn moved(&self, from: usize, onto: usize, shape: &[i64], mesh: &Mesh) -> Sharding {
        let parts: i64 = self.dims[from].iter().map(|a| mesh.axis_size(a).unwrap_or(1)).product();
        if self.dims[from].is_empty() || !self.dims[onto].is_empty() || shape[onto] % parts != 0 {
            return self.clone();
        }
        let mut s = self.clone();
        s.dims[onto] = std::mem::take(&mut s.dims[from]);
        s
    }
}

/// What a traced graph shards by: the device mesh and the resolved logical-axis rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardingContext {
    pub mesh: Mesh,
    pub rules: LogicalAxisRules,
}

impl ShardingContext {
    /// The sharding of a tensor with these logical dim names and shape.
    pub fn resolve(&self, logical_axes: &[&str], shape: &[i64]) -> Sharding {
        self.rules.resolve(logical_axes, shape, &self.mesh)
    }

    /// As [`resolve`](Self::resolve), then the mesh axes of logical dim `from` moved onto logical dim
    /// `onto` ([`Sharding::moved`]). For weights that are gathered whole before every use, where the dim
    /// the shards are cut along changes nothing but their on-chip layout (see `nn::moe`).
    pub fn resolve_moved(&self, logical_axes: &[&str], shape: &[i64], (from, onto): (&str, &str)) -> Sharding {
        let s = self.resolve(logical_axes, shape);
        let at = |name: &str| logical_axes.iter().position(|a| *a == name);
        match (at(from), at(onto)) {
            (Some(f), Some(o)) => s.moved(f, o, shape, &self.mesh),
            _ => s,
        }
    }
}

/// MaxText's `logical_axis_rules`: (logical name, mesh axes major to minor), in priority order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalAxisRules {
    pub rules: Vec<(String, Vec<String>)>,
}

impl LogicalAxisRules {
    pub fn new(rules: Vec<(String, Vec<String>)>) -> LogicalAxisRules {
        LogicalAxisRules { rules }
    }

    /// `LogicalAxisRules::from_pairs(&[("embed", &["fsdp"]), ("mlp", &["tensor"])])`.
    pub fn from_pairs(pairs: &[(&str, &[&str])]) -> LogicalAxisRules {
        LogicalAxisRules {
            rules: pairs.iter().map(|(n, m)| (n.to_string(), m.iter().map(|a| a.to_string()).collect())).collect(),
        }
    }

    /// The sharding of a tensor with these logical dim names and `shape` on `mesh` (see the module docs).
    pub fn resolve(&self, logical_axes: &[&str], shape: &[i64], mesh: &Mesh) -> Sharding {
        resolve(&self.rules, logical_axes, shape, mesh)
    }

    /// Mesh axes per dim before size-1 axes are dropped and without the divisibility check: exactly flax's
    /// `logical_to_mesh_axes` (for comparing with MaxText's PartitionSpecs).
    pub fn logical_to_mesh_axes(&self, logical_axes: &[&str]) -> Vec<Option<Vec<String>>> {
        assign(&self.rules, logical_axes, |_, _| true)
    }
}

fn check_names(logical_axes: &[&str]) {
    for (i, a) in logical_axes.iter().enumerate() {
        if !a.is_empty() && logical_axes[..i].contains(a) {
            panic!("logical axis `{a}` occurs more than once in {logical_axes:?}");
        }
    }
}

/// Flax's rule walk; `fits(dim, mesh_axes)` can veto a rule for a dim.
fn assign(
    rules: &[(String, Vec<String>)],
    logical_axes: &[&str],
    fits: impl Fn(usize, &[String]) -> bool,
) -> Vec<Option<Vec<String>>> {
    check_names(logical_axes);
    let mut result: Vec<Option<Vec<String>>> = vec![None; logical_axes.len()];
    for (name, mesh_axes) in rules {
        let Some(pos) = logical_axes.iter().position(|a| !a.is_empty() && a == name) else { continue };
        if result[pos].is_some() {
            continue;
        }
        let used = result.iter().flatten().flatten().any(|u| mesh_axes.contains(u));
        if !used && fits(pos, mesh_axes) {
            result[pos] = Some(mesh_axes.clone());
        }
    }
    result
}

/// See the module docs. Panics if `logical_axes` and `shape` differ in rank (a bug in the caller).
pub fn resolve(rules: &[(String, Vec<String>)], logical_axes: &[&str], shape: &[i64], mesh: &Mesh) -> Sharding {
    assert_eq!(
        logical_axes.len(),
        shape.len(),
        "logical axes {logical_axes:?} do not match the rank of shape {shape:?}"
    );
    let size = |axis: &String| mesh.axis_size(axis).unwrap_or(1);
    let assigned = assign(rules, logical_axes, |dim, axes| {
        let product: i64 = axes.iter().map(size).product();
        shape[dim] < 0 || (product > 0 && shape[dim] % product == 0)
    });
    Sharding {
        dims: assigned
            .into_iter()
            .map(|axes| axes.unwrap_or_default().into_iter().filter(|a| size(a) != 1).collect())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maxtext_rules() -> LogicalAxisRules {
        let cfg = crate::config::Config::from_raw(crate::config::Config::defaults()).unwrap();
        LogicalAxisRules::new(cfg.parallelism.logical_axis_rules.clone())
    }

    fn mesh(sizes: &[(&str, i64)]) -> Mesh {
        let all = [
            "diloco", "data", "stage", "fsdp", "fsdp_transpose", "context", "context_usp_ulysses",
            "context_autoregressive", "tensor", "tensor_sequence", "expert", "autoregressive",
        ];
        Mesh {
            axes: all
                .iter()
                .map(|a| (a.to_string(), sizes.iter().find(|(n, _)| n == a).map_or(1, |(_, s)| *s)))
                .collect(),
        }
    }

    fn s(dims: &[&[&str]]) -> Sharding {
        Sharding::new(dims)
    }

    #[test]
    fn flax_assignment_matches_reference_table() {
        let r = maxtext_rules();
        // in_proj [E, .] (embed, gdn_head): gdn_head's rule comes first and takes fsdp_transpose, so embed
        // falls back to [fsdp, context, context_usp_ulysses, expert] (reference §6 table).
        let a = r.logical_to_mesh_axes(&["embed", "gdn_head"]);
        assert_eq!(a[0].as_deref().unwrap(), ["fsdp", "context", "context_usp_ulysses", "expert"]);
        assert_eq!(a[1].as_deref().unwrap(), ["fsdp_transpose", "tensor", "tensor_sequence", "autoregressive"]);
        // query [E, 16, 512] (embed, q_heads, kv): embed gets the full first rule, kv is [] (replicated).
        let a = r.logical_to_mesh_axes(&["embed", "q_heads", "kv"]);
        assert_eq!(a[0].as_deref().unwrap(), ["fsdp", "fsdp_transpose", "context", "context_usp_ulysses", "expert"]);
        assert_eq!(a[2].as_deref(), Some(&[][..]));
        // wi_0 (exp, embed_moe, mlp_moe).
        let a = r.logical_to_mesh_axes(&["exp", "embed_moe", "mlp_moe"]);
        assert_eq!(a[0].as_deref().unwrap(), ["expert"]);
        assert_eq!(a[1].as_deref().unwrap(), ["fsdp", "context", "context_usp_ulysses"]);
        // Unknown names and unnamed dims stay unassigned.
        assert_eq!(r.logical_to_mesh_axes(&["embed", ""])[1], None);
    }

    #[test]
    fn resolve_drops_size_one_axes_on_2d_mesh() {
        let r = maxtext_rules();
        let m = mesh(&[("fsdp", 2), ("tensor", 2)]);
        assert_eq!(r.resolve(&["embed", "mlp"], &[128, 64], &m), s(&[&["fsdp"], &["tensor"]]));
        assert_eq!(r.resolve(&["vocab", "embed_vocab"], &[1024, 128], &m), s(&[&["tensor"], &["fsdp"]]));
        assert_eq!(r.resolve(&["norm"], &[128], &mesh(&[])), s(&[&[]]));
        // Scanned params: "layers" -> stage (size 1, dropped).
        assert_eq!(r.resolve(&["embed", "layers", "mlp"], &[128, 4, 64], &m), s(&[&["fsdp"], &[], &["tensor"]]));
    }

    #[test]
    fn dim_over_two_mesh_axes_and_divisibility_fallback() {
        let r = maxtext_rules();
        let m = mesh(&[("data", 2), ("fsdp", 2), ("expert", 2)]);
        // activation_batch -> [data, fsdp, fsdp_transpose, expert]: three non-trivial axes on one dim.
        assert_eq!(
            r.resolve(&["activation_batch", "activation_length", "activation_embed"], &[8, 16, 32], &m),
            s(&[&["data", "fsdp", "expert"], &[], &[]])
        );
        // Batch 2 is not divisible by 8: replicated instead.
        assert_eq!(
            r.resolve(&["activation_batch", "activation_length", "activation_embed"], &[2, 16, 32], &m),
            s(&[&[], &[], &[]])
        );
        // embed over [fsdp, expert] (fallback with fsdp_transpose of size 1 used elsewhere).
        let m = mesh(&[("fsdp", 2), ("expert", 2)]);
        assert_eq!(r.resolve(&["embed", "mlp"], &[128, 64], &m), s(&[&["fsdp", "expert"], &[]]));
    }

    #[test]
    fn divisibility_uses_the_fallback_rule() {
        let r = LogicalAxisRules::from_pairs(&[("heads", &["tensor", "expert"]), ("heads", &["tensor"])]);
        let m = Mesh::new(&[("tensor", 2), ("expert", 4)]);
        assert_eq!(r.resolve(&["heads"], &[8], &m), s(&[&["tensor", "expert"]]));
        assert_eq!(r.resolve(&["heads"], &[2], &m), s(&[&["tensor"]]));
        assert_eq!(r.resolve(&["heads"], &[3], &m), s(&[&[]]));
    }

    #[test]
    fn moved_shards_cut_the_experts_only_when_they_are_free_and_divide() {
        let r = maxtext_rules();
        let logical = ["exp", "mlp_moe", "embed_moe"];
        let ctx = |axes: &[(&str, i64)]| ShardingContext { mesh: mesh(axes), rules: r.clone() };
        let fsdp = ctx(&[("fsdp", 4)]);
        assert_eq!(fsdp.resolve(&logical, &[8, 16, 32]), s(&[&[], &[], &["fsdp"]]));
        assert_eq!(fsdp.resolve_moved(&logical, &[8, 16, 32], ("embed_moe", "exp")), s(&[&["fsdp"], &[], &[]]));
        // 6 experts do not divide over 4: left where the rules put it.
        assert_eq!(fsdp.resolve_moved(&logical, &[6, 16, 32], ("embed_moe", "exp")), s(&[&[], &[], &["fsdp"]]));
        // Expert parallelism holds the expert dim already.
        let ep = ctx(&[("fsdp", 2), ("expert", 2)]);
        assert_eq!(ep.resolve_moved(&logical, &[8, 16, 32], ("embed_moe", "exp")), s(&[&["expert"], &[], &["fsdp"]]));
        // Names the tensor does not have: unchanged.
        assert_eq!(fsdp.resolve_moved(&["embed", "mlp"], &[8, 8], ("embed_moe", "exp")), fsdp.resolve(&["embed", "mlp"], &[8, 8]));
    }

    #[test]
    #[should_panic(expected = "occurs more than once")]
    fn duplicate_logical_names_panic() {
        maxtext_rules().resolve(&["embed", "embed"], &[4, 4], &mesh(&[]));
    }
}
