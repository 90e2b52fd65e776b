//! The forward program: (tokens, positions, params...) -> logits [batch, seq, vocab] in f32.

use crate::config::{Config, MatmulPrecision};
use crate::ir::{DType, Graph, Mesh, Precision, Program, Sharding, TensorType};
use crate::model::{self, ForwardInputs};
use crate::nn::{ParamBuilder, ParamDecl};
use crate::sharding::{device_mesh, LogicalAxisRules, ShardingError};

/// A traced forward program and the parameters it takes after its two token inputs.
pub struct ForwardProgram {
    pub program: Program,
    /// Parameter declarations, in argument order (argument `i + NUM_INPUTS` is `decls[i]`).
    pub decls: Vec<ParamDecl>,
}

impl ForwardProgram {
    /// Arguments before the parameters: tokens, positions.
    pub const NUM_INPUTS: usize = 2;

    pub fn num_params(&self) -> i64 {
        self.decls.iter().map(|d| d.num_elements()).sum()
    }
}

/// The parameter builder of a program traced for `cfg` (dtypes and activation precision).
pub fn model_params(g: &Graph, cfg: &Config) -> ParamBuilder {
    let mut pb = ParamBuilder::new(g, cfg.compute.weight_dtype, cfg.compute.dtype);
    pb.activations_in_float32 = cfg.compute.activations_in_float32;
    pb
}

/// MaxText's `matmul_precision` as the IR's dot precision.
pub fn matmul_precision(cfg: &Config) -> Precision {
    match cfg.compute.matmul_precision {
        MatmulPrecision::Default => Precision::Default,
        MatmulPrecision::High => Precision::High,
        MatmulPrecision::Highest => Precision::Highest,
    }
}

/// Shardings of parameters from their logical axes and the config's rules.
pub fn param_shardings(decls: &[ParamDecl], rules: &LogicalAxisRules, mesh: &Mesh) -> Vec<Sharding> {
    decls
        .iter()
        .map(|d| {
            let logical: Vec<&str> = d.logical.iter().map(|a| a.unwrap_or("")).collect();
            rules.resolve(&logical, &d.dims, mesh)
        })
        .collect()
}

/// Traces the forward pass for a batch of `batch` rows of `seq` tokens, sharded by the config's mesh.
pub fn forward_program(cfg: &Config, batch: i64, seq: i64) -> Result<ForwardProgram, ShardingError> {
    let g = Graph::new();
    let tokens = g.param(TensorType::named(DType::S32, &[batch, seq], &["batch", "seq"]));
    let positions = g.param(TensorType::named(DType::S32, &[batch, seq], &["batch", "seq"]));
    let mut pb = model_params(&g, cfg);
    let inputs = ForwardInputs { tokens, positions, segment_ids: None };
    let logits = {
        let _span = tracing::info_span!("trace", program = "forward").entered();
        model::forward(&cfg.model, &mut pb, &inputs, cfg.compute.scan_layers)
    };
    let decls = pb.decls;
    let mut program = Program::new("forward", g.finish(&[logits]));
    program.matmul_precision = matmul_precision(cfg);
    program.arg_names[0] = "tokens".into();
    program.arg_names[1] = "positions".into();
    for (i, d) in decls.iter().enumerate() {
        program.arg_names[ForwardProgram::NUM_INPUTS + i] = d.path.clone();
    }
    let mesh = device_mesh(cfg)?;
    if mesh.num_devices() > 1 {
        let rules = LogicalAxisRules::from_config(cfg);
        for (i, s) in param_shardings(&decls, &rules, &mesh).into_iter().enumerate() {
            program.arg_shardings[ForwardProgram::NUM_INPUTS + i] = Some(s);
        }
        let act = rules.resolve(&["activation_batch", "activation_length"], &[batch, seq], &mesh);
        program.arg_shardings[0] = Some(act.clone());
        program.arg_shardings[1] = Some(act);
        program = program.with_mesh(mesh);
    }
    Ok(ForwardProgram { program, decls })
}

/// The model's parameter declarations for `cfg` (traced on a throwaway one-token graph; cheap).
pub fn param_decls(cfg: &Config) -> Vec<ParamDecl> {
    let g = Graph::new();
    let tokens = g.param(TensorType::named(DType::S32, &[1, 1], &["batch", "seq"]));
    let positions = g.param(TensorType::named(DType::S32, &[1, 1], &["batch", "seq"]));
    let mut pb = model_params(&g, cfg);
    let inputs = ForwardInputs { tokens, positions, segment_ids: None };
    model::forward(&cfg.model, &mut pb, &inputs, cfg.compute.scan_layers);
    pb.decls
}
