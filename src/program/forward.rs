//! The forward program: arguments `inputs` (tokens, positions [batch, seq]) and `params`; result `logits`
//! [batch, seq, vocab] in f32.

use super::layout::lay_out;
use crate::config::{Config, MatmulPrecision};
use crate::ir::{DType, Graph, Precision, Program, TensorType};
use crate::model::{self, ForwardInputs};
use crate::nn::{F32Casts, ParamBuilder, ParamDecl};
use crate::sharding::{sharding_context, ShardingError};

/// A traced forward program and its parameter declarations (the `params` group, in order).
pub struct ForwardProgram {
    pub program: Program,
    pub decls: Vec<ParamDecl>,
}

impl ForwardProgram {
    pub fn num_params(&self) -> i64 {
        self.decls.iter().map(|d| d.num_elements()).sum()
    }
}

/// The parameter builder of a program traced for `cfg` (dtypes, activation precision, MoE strategy and
/// attention kernel).
pub fn model_params(g: &Graph, cfg: &Config) -> ParamBuilder {
    let mut pb = ParamBuilder::new(g, cfg.compute.weight_dtype, cfg.compute.dtype);
    pb.activations_in_float32 = cfg.compute.activations_in_float32;
    pb.moe_strategy = cfg.compute.moe_strategy(cfg.run.hardware);
    pb.attention = cfg.compute.attention_kernel(cfg.run.hardware);
    pb.precision = F32Casts {
        qk_product: cfg.compute.float32_qk_product,
        attention_logits: cfg.compute.float32_logits,
        gate_logits: cfg.compute.float32_gate_logits,
        logits_dot: cfg.compute.logits_dot_in_fp32,
    };
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

/// Traces the forward pass for a batch of `batch` rows of `seq` tokens, sharded by the config's mesh.
pub fn forward_program(cfg: &Config, batch: i64, seq: i64) -> Result<ForwardProgram, ShardingError> {
    let ctx = sharding_context(cfg)?;
    let g = Graph::sharded(ctx.clone());
    let tokens = g.param_in("inputs", TensorType::named(DType::S32, &[batch, seq], &["batch", "seq"]));
    let positions = g.param_in("inputs", TensorType::named(DType::S32, &[batch, seq], &["batch", "seq"]));
    let mut pb = model_params(&g, cfg);
    let inputs = ForwardInputs { tokens, positions, segment_ids: None };
    let logits = {
        let _span = tracing::info_span!("trace", program = "forward").entered();
        model::forward(&cfg.model, &mut pb, &inputs, cfg.compute.scan_layers)
    };
    let decls = pb.decls;
    let mut program = Program::new("forward", g.finish_groups(&[("logits", vec![logits])]));
    program.matmul_precision = matmul_precision(cfg);
    program.name_args("inputs", ["tokens".to_string(), "positions".to_string()]);
    program.name_args("params", decls.iter().map(|d| d.path.clone()));
    lay_out(&mut program, &ctx, &decls, &["params"], &["inputs"]);
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
