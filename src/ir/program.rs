//! A traced program: the main function plus what the module needs around it (mesh, argument and result
//! shardings, donation, names for diagnostics).

use super::{Func, Mesh, Precision, Sharding};

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
}

impl Program {
    /// A single-device program with no shardings and no donation.
    pub fn new(name: &str, main: Func) -> Program {
        let n = main.params.len();
        let r = main.results.len();
        Program {
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

    pub fn num_partitions(&self) -> i64 {
        self.mesh.as_ref().map_or(1, |m| m.num_devices())
    }
}
