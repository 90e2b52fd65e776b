//! The ops of the graph, one variant per StableHLO-level operation.
//! Attributes mirror StableHLO exactly; the named-axis sugar lives in `named.rs`, above these.

use super::{DType, Func, Sharding};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sign,
    Exp,
    Expm1,
    Log,
    Log1p,
    Sqrt,
    Rsqrt,
    Tanh,
    Logistic,
    Sin,
    Cos,
    Floor,
    Ceil,
    RoundNearestEven,
    Not,
    IsFinite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Max,
    Min,
    Pow,
    Atan2,
    And,
    Or,
    Xor,
    ShiftLeft,
    ShiftRightLogical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareDir {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The combiner of a reduction (the body of `stablehlo.reduce` / `reduce_window` / `scatter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Prod,
    Max,
    Min,
    And,
    Or,
}

/// `stablehlo.dot_general` dimension numbers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct DotDims {
    pub lhs_batch: Vec<i64>,
    pub rhs_batch: Vec<i64>,
    pub lhs_contract: Vec<i64>,
    pub rhs_contract: Vec<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    Default,
    High,
    Highest,
}

/// `stablehlo.gather` dimension numbers and slice sizes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct GatherDims {
    pub offset_dims: Vec<i64>,
    pub collapsed_slice_dims: Vec<i64>,
    pub operand_batching_dims: Vec<i64>,
    pub start_indices_batching_dims: Vec<i64>,
    pub start_index_map: Vec<i64>,
    pub index_vector_dim: i64,
    pub slice_sizes: Vec<i64>,
}

/// `stablehlo.scatter` dimension numbers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ScatterDims {
    pub update_window_dims: Vec<i64>,
    pub inserted_window_dims: Vec<i64>,
    pub input_batching_dims: Vec<i64>,
    pub scatter_indices_batching_dims: Vec<i64>,
    pub scatter_dims_to_operand_dims: Vec<i64>,
    pub index_vector_dim: i64,
}

/// How scatter combines an update with the value already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScatterMode {
    Replace,
    Add,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RngAlgorithm {
    ThreeFry,
    Philox,
    /// The backend's own choice (PHILOX on the XLA CPU and GPU plugins). JAX's `lax.rng_bit_generator`
    /// uses it by default, so MaxText's `unsafe_rbg` keys draw with it (`data::prng`).
    Default,
}

/// Host data of a constant, little-endian, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// One value broadcast to the whole shape (f64 holds every float and every int we emit exactly enough).
    Splat(f64),
    /// Integer splat kept exact (e.g. u64 seeds, i64 limits).
    SplatInt(i64),
    /// Dense bytes, `num_elements * dtype.size_bytes()` long.
    Dense(Vec<u8>),
}

#[derive(Clone, Debug)]
pub enum Op {
    /// Function argument `i`.
    Parameter(usize),
    /// Inside a loop body: the `i`-th value captured from the enclosing function.
    Capture(usize),
    Constant(Literal),
    Iota { dim: i64 },
    Unary(UnaryOp),
    Binary(BinaryOp),
    Compare(CompareDir),
    /// inputs: pred, on_true, on_false
    Select,
    /// inputs: min, x, max
    Clamp,
    Convert,
    BitcastConvert,
    BroadcastInDim { dims: Vec<i64> },
    Reshape,
    Transpose { perm: Vec<i64> },
    Slice { start: Vec<i64>, limit: Vec<i64>, strides: Vec<i64> },
    /// inputs: operand, then one scalar start index per dim
    DynamicSlice { sizes: Vec<i64> },
    /// inputs: operand, update, then one scalar start index per dim
    DynamicUpdateSlice,
    Concatenate { dim: i64 },
    /// inputs: operand, padding value (scalar)
    Pad { low: Vec<i64>, high: Vec<i64>, interior: Vec<i64> },
    /// inputs: operand, start indices
    Gather(GatherDims),
    /// inputs: operand, scatter indices, updates
    Scatter { dims: ScatterDims, mode: ScatterMode },
    DotGeneral { dims: DotDims, precision: Precision },
    /// inputs: operand (the init value is the combiner's identity)
    Reduce { kind: ReduceKind, dims: Vec<i64> },
    /// outputs: (max value, its first index) along `dim`; `index_dtype` is the index type
    ArgMax { dim: i64, index_dtype: DType },
    /// cumulative reduction along `dim` (a `reduce_window` with the full-length window)
    Cumulative { kind: ReduceKind, dim: i64, reverse: bool, exclusive: bool },
    /// sorts all inputs along `dim` by the first; outputs one per input
    Sort { dim: i64, descending: bool, stable: bool },
    /// outputs: (values, i32 indices) of the `k` largest along the last dim
    TopK { k: i64 },
    /// inputs: initial carries then the captures of cond then of body; outputs: final carries.
    /// `trip`: for a counted loop (`fori_loop`), carry 0 counts from `lower` to `upper` (what autodiff needs).
    /// `region`: a remat region (a layer, or the layer scan: `remat_loop`); an enclosing region keeps its
    /// record for the backward pass, where any other loop inside a region is run again in the recomputation.
    While { cond: Box<Func>, body: Box<Func>, num_carries: usize, trip: Option<(i64, i64)>, region: bool },
    /// inputs: state (u64[2]); outputs: new state, random bits of type `out`
    RngBitGenerator { algorithm: RngAlgorithm },
    ShardingConstraint(Sharding),
    /// keeps XLA from moving computation across this point (used by remat)
    OptimizationBarrier,
    /// The identity, naming its input for the remat policy (JAX's `checkpoint_name`): the autodiff keeps a
    /// value tagged with a name its policy saves and recomputes the rest. Emits nothing.
    CheckpointName(&'static str),
    /// inputs: a (batched square matrices), b; solves `op(a) x = b` (left side) or `x op(a) = b`
    TriangularSolve { left_side: bool, lower: bool, unit_diagonal: bool, transpose_a: bool },
    /// A grouped matmul per shard of rows sorted by group (`ops_ragged.rs`; inputs and shapes per
    /// [`RaggedKind`]); the last input is `group_sizes` [P, G] (s32).
    RaggedDot { kind: RaggedKind, spec: RaggedSpec },
}

/// What a [`Op::RaggedDot`] computes, for rows sorted by group within each of P shards (dim 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RaggedKind {
    /// x [P, N, K], w [G, K, F] -> [P, N, F]: row i of shard p times `w[group(p, i)]` (rows past the
    /// groups give zeros).
    Rows,
    /// x [P, N, F], w [G, K, F] -> [P, N, K]: times `w[group]ᵀ` (the input gradient of `Rows`).
    RowsTransposed,
    /// x [P, N, K], dy [P, N, F] -> [P, G, K, F]: per shard and group, the sum of the group's `xᵀ dy`.
    WeightGrad,
    /// As `WeightGrad`, summed over the shards -> [G, K, F], laid out as `RaggedSpec::weight_sharding`
    /// (a reduce-scatter over the shard axes).
    WeightGradReduced,
}

/// Where a [`Op::RaggedDot`] runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RaggedSpec {
    /// The mesh axes dim 0 (the shards) is split over: one shard per device, in a manual computation.
    pub shard_axes: Vec<String>,
    /// `chlo.ragged_dot` (TPU); otherwise an exact dense formulation over every group.
    pub native: bool,
    /// The weights' own sharding, into which a weight gradient is reduced when its mesh axes are all
    /// shard axes.
    pub weight_sharding: Option<Sharding>,
}

impl Op {
    /// A short name for error messages and locs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Parameter(_) => "parameter",
            Op::Capture(_) => "capture",
            Op::Constant(_) => "constant",
            Op::Iota { .. } => "iota",
            Op::Unary(_) => "unary",
            Op::Binary(_) => "binary",
            Op::Compare(_) => "compare",
            Op::Select => "select",
            Op::Clamp => "clamp",
            Op::Convert => "convert",
            Op::BitcastConvert => "bitcast_convert",
            Op::BroadcastInDim { .. } => "broadcast_in_dim",
            Op::Reshape => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::DynamicSlice { .. } => "dynamic_slice",
            Op::DynamicUpdateSlice => "dynamic_update_slice",
            Op::Concatenate { .. } => "concatenate",
            Op::Pad { .. } => "pad",
            Op::Gather(_) => "gather",
            Op::Scatter { .. } => "scatter",
            Op::DotGeneral { .. } => "dot_general",
            Op::Reduce { .. } => "reduce",
            Op::ArgMax { .. } => "argmax",
            Op::Cumulative { .. } => "cumulative",
            Op::Sort { .. } => "sort",
            Op::TopK { .. } => "top_k",
            Op::While { .. } => "while",
            Op::RngBitGenerator { .. } => "rng_bit_generator",
            Op::ShardingConstraint(_) => "sharding_constraint",
            Op::OptimizationBarrier => "optimization_barrier",
            Op::CheckpointName(_) => "checkpoint_name",
            Op::TriangularSolve { .. } => "triangular_solve",
            Op::RaggedDot { .. } => "ragged_dot",
        }
    }
}
