//! A traced program: the main function plus what the module needs around it (mesh, argument and result
//! shardings, donation, names for diagnostics) and its typed signature: arguments and results come in named
//! groups (`inputs`, `params`, `mu`, `cache`, `rng`, `metrics`, ...), which is how the runtime binds them.

use super::{Func, Mesh, Precision, Sharding};
use std::ops::Range;

/// A named run of consecutive arguments or results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub range: Range<usize>,
}

/// Contiguous runs of equal names; a name that comes back after another is a bug in the tracer.
fn groups_of(names: &[String]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if &g.name == n => g.range.end = i + 1,
            _ => {
                assert!(!groups.iter().any(|g| &g.name == n), "signature group `{n}` is not contiguous in {names:?}");
                groups.push(Group { name: n.clone(), range: i..i + 1 });
            }
        }
    }
    groups
}

#[derive(Clone, Debug)]
pub struct Program {
    /// MLIR module name (`@train_step`).
    pub name: String,
    pub main: Func,
    pub mesh: Option<Mesh>,
    /// Per argument; `None` = left to the partitioner (replicated when there is no mesh).
    pub arg_shardings: Vec<Option<Sharding>>,
    pub result_shardings: Vec<Option<Sharding>>,
    /// Per argument: the result it is donated to (`tf.aliasing_output`).
    pub donations: Vec<Option<usize>>,
    /// Per argument: a name for messages (`params/decoder/...`); empty if unnamed.
    pub arg_names: Vec<String>,
    /// Precision of every `dot_general` traced with `Precision::Default` (MaxText's `matmul_precision`).
    pub matmul_precision: Precision,
    pub arg_groups: Vec<Group>,
    pub result_groups: Vec<Group>,
}

impl Program {
    /// A single-device program with no shardings and no donation.
    pub fn new(name: &str, main: Func) -> Program {
        let n = main.params.len();
        let r = main.results.len();
        let mut param_groups = main.param_groups.clone();
        param_groups.resize(n, String::new());
        let mut result_groups = main.result_groups.clone();
        result_groups.resize(r, String::new());
        Program {
            arg_groups: groups_of(&param_groups),
            result_groups: groups_of(&result_groups),
            name: name.to_string(),
            main,
            mesh: None,
            arg_shardings: vec![None; n],
            result_shardings: vec![None; r],
            donations: vec![None; n],
            arg_names: vec![String::new(); n],
            matmul_precision: Precision::Default,
        }
    }

    pub fn with_mesh(mut self, mesh: Mesh) -> Program {
        self.mesh = Some(mesh);
        self
    }

    pub fn shard_arg(mut self, i: usize, s: Sharding) -> Program {
        self.arg_shardings[i] = Some(s);
        self
    }

    pub fn shard_result(mut self, i: usize, s: Sharding) -> Program {
        self.result_shardings[i] = Some(s);
        self
    }

    /// Donates argument `arg` to result `result` (types must match; checked by the emitter).
    pub fn donate(mut self, arg: usize, result: usize) -> Program {
        self.donations[arg] = Some(result);
        self
    }

    /// Whether the program has argument group `name` (a train step of `opt_type=sgd` has no `mu`).
    pub fn has_args(&self, name: &str) -> bool {
        self.arg_groups.iter().any(|g| g.name == name)
    }

    /// The arguments of group `name` (an unknown group is a bug in the caller).
    pub fn args(&self, name: &str) -> Range<usize> {
        find(&self.arg_groups, name, &self.name, "argument")
    }

    /// The results of group `name`.
    pub fn results(&self, name: &str) -> Range<usize> {
        find(&self.result_groups, name, &self.name, "result")
    }

    /// Sets the shardings of argument group `name`, one per argument.
    pub fn shard_args(&mut self, name: &str, shardings: &[Sharding]) {
        let r = self.args(name);
        assert_eq!(r.len(), shardings.len(), "group `{name}` of `{}`", self.name);
        for (i, s) in r.zip(shardings) {
            self.arg_shardings[i] = Some(s.clone());
        }
    }

    /// Sets the shardings of result group `name`, one per result.
    pub fn shard_results(&mut self, name: &str, shardings: &[Sharding]) {
        let r = self.results(name);
        assert_eq!(r.len(), shardings.len(), "group `{name}` of `{}`", self.name);
        for (i, s) in r.zip(shardings) {
            self.result_shardings[i] = Some(s.clone());
        }
    }

    /// Donates every argument of group `arg` to the same-position result of group `result`.
    pub fn donate_group(&mut self, arg: &str, result: &str) {
        let (a, r) = (self.args(arg), self.results(result));
        assert_eq!(a.len(), r.len(), "donating `{arg}` to `{result}` of `{}`", self.name);
        for (i, j) in a.zip(r) {
            self.donations[i] = Some(j);
        }
    }

    /// Names the arguments of group `name` for messages (`params/decoder/...`).
    pub fn name_args(&mut self, name: &str, names: impl IntoIterator<Item = String>) {
        let r = self.args(name);
        let names: Vec<String> = names.into_iter().collect();
        assert_eq!(r.len(), names.len(), "group `{name}` of `{}`", self.name);
        for (i, n) in r.zip(names) {
            self.arg_names[i] = n;
        }
    }

    pub fn num_partitions(&self) -> i64 {
        self.mesh.as_ref().map_or(1, |m| m.num_devices())
    }
}

fn find(groups: &[Group], name: &str, program: &str, what: &str) -> Range<usize> {
    groups
        .iter()
        .find(|g| g.name == name)
        .map(|g| g.range.clone())
        .unwrap_or_else(|| panic!("program `{program}` has no {what} group `{name}` (it has {:?})", groups.iter().map(|g| &g.name).collect::<Vec<_>>()))
}
