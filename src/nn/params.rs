//! Parameter declarations. Each parameter is declared once, by the layer that uses it, with its path,
//! shape, axis names, logical (sharding) axes, storage dtype and initializer; that one declaration drives
//! tracing (it becomes a program argument), loading (HF mapping, Orbax paths), sharding and checkpoint
//! metadata.
//!
//! Scanned layers: while a stack is active (`ParamBuilder::stacked`), every declared parameter gets the
//! stack's axes inserted at position `min(1, rank)` — MaxText's `param_scan_axis=1` — and the layer receives
//! the slice at the current loop indices, so the layer code is the same scanned or not.
//!
//! A scan traced unrolled (prefill and decode: constant layer indices) gives each layer's parameters
//! their own program argument instead ([`ParamArg`]): slicing a layer out of MaxText's stacked layout
//! ([embed, layers, ...]) is a strided copy of every weight on every step, which made a scanned decode
//! step twice its unscanned time. The declarations stay the stacked ones (what checkpoints hold); the
//! runtime splits the stacked arrays into the per-layer arguments once, when it loads them.

use crate::ir::{index_const, AxisName, DType, Graph, Tensor, TensorType};

/// How a parameter is initialised when training from scratch.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    /// Truncated normal with this standard deviation (MaxText's `nd_dense_init(1.0, "fan_in", "truncated_normal")`
    /// gives `1/sqrt(fan_in)`; the caller computes it).
    Normal { stddev: f64 },
    /// `log(uniform(lo, hi))` (GDN `A_log`).
    LogUniform { lo: f64, hi: f64 },
    /// Uniform in `[lo, hi)`.
    Uniform { lo: f64, hi: f64 },
}

/// One parameter of the model, as stored (with scan axes included).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    /// MaxText path below `params/params/`, '/'-joined: `decoder/layers/local_layers/attention/A_log`.
    pub path: String,
    pub dims: Vec<i64>,
    /// Axis names used while tracing (scan axes are `layers` / `local_layers`).
    pub axes: Vec<AxisName>,
    /// MaxText logical axis names for the sharding rules (`None` = never sharded).
    pub logical: Vec<Option<AxisName>>,
    pub dtype: DType,
    pub init: Init,
    /// Number of leading scan axes inserted at position `min(1, rank)` (0 unscanned, 1 or 2).
    pub scan_axes: usize,
    /// `(from, onto)`: the mesh axes the rules give logical dim `from` shard dim `onto` instead
    /// ([`ShardingContext::resolve_moved`](crate::ir::ShardingContext::resolve_moved)).
    pub shard_move: Option<(AxisName, AxisName)>,
}

impl ParamDecl {
    pub fn num_elements(&self) -> i64 {
        self.dims.iter().product()
    }

    /// Where this parameter's scan axes are.
    pub fn scan_position(&self) -> usize {
        scan_position(self.dims.len() - self.scan_axes)
    }

    /// One layer's slice as a declaration of its own: scan axes removed, path `path[i,j]`.
    pub fn layer_decl(&self, layer: &[i64]) -> ParamDecl {
        assert_eq!(layer.len(), self.scan_axes, "{}: layer index {layer:?}", self.path);
        let scan = self.scan_position()..self.scan_position() + self.scan_axes;
        let mut d = self.clone();
        let idx: Vec<String> = layer.iter().map(|i| i.to_string()).collect();
        d.path = format!("{}[{}]", self.path, idx.join(","));
        d.dims.drain(scan.clone());
        d.axes.drain(scan.clone());
        d.logical.drain(scan);
        d.scan_axes = 0;
        d
    }

    /// Dims of one layer's slice (scan axes removed).
    pub fn layer_dims(&self) -> Vec<i64> {
        let mut d = self.dims.clone();
        let at = self.scan_position();
        d.drain(at..at + self.scan_axes);
        d
    }
}

/// Where scan axes go: MaxText inserts them at `min(1, rank)` of the unstacked parameter.
pub fn scan_position(unstacked_rank: usize) -> usize {
    unstacked_rank.min(1)
}

struct StackAxis {
    name: AxisName,
    size: i64,
    /// The loop index (i32 scalar, in the loop body's graph).
    index: Tensor,
}

/// One argument of a program's `params` group: declaration `decl` whole (`layer` empty), or its slice
/// at scan indices `layer` (a scan traced unrolled).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamArg {
    pub decl: usize,
    pub layer: Vec<i64>,
}

/// Declares parameters as program arguments of `root` and hands layers their (sliced, cast) tensors.
pub struct ParamBuilder {
    root: Graph,
    prefix: Vec<String>,
    stack: Vec<StackAxis>,
    /// The parameters, as stored (stacked over scan axes).
    pub decls: Vec<ParamDecl>,
    /// The program's `params` arguments, in order.
    pub args: Vec<ParamArg>,
    /// Storage dtype of ordinary parameters (`weight_dtype`).
    pub weight_dtype: DType,
    /// Dtype parameters are cast to at use (`dtype`).
    pub compute_dtype: DType,
    /// MaxText's `activations_in_float32`: MLP activations are computed in f32.
    pub activations_in_float32: bool,
    /// How routed MoE experts are computed (`sparse_matmul`, `capacity_factor`).
    pub moe_strategy: crate::config::MoeStrategy,
    /// The full-attention kernel of whole-sequence passes (`attention`, `sa_block_q`, `sa_block_kv`).
    pub attention: crate::config::AttentionKernel,
    /// Where attention and the router leave `dtype` for f32 (`float32_qk_product`, `float32_logits`, ...).
    pub precision: F32Casts,
}

/// MaxText's keys that move one computation from `dtype` to f32 (all no-ops when `dtype=float32`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct F32Casts {
    /// `float32_qk_product`: q and k are cast to f32 for the q·k product.
    pub qk_product: bool,
    /// `float32_logits`: the attention scores are cast to f32 before the softmax (else it runs in the
    /// scores' dtype; the flash kernel always keeps its running softmax in f32, as MaxText's kernels do).
    pub attention_logits: bool,
    /// `float32_gate_logits`: the router's input and kernel are cast to f32 for the gate logits.
    pub gate_logits: bool,
    /// `logits_dot_in_fp32`: the output projection (`logits_dense`) runs in f32.
    pub logits_dot: bool,
}

impl ParamBuilder {
    pub fn new(root: &Graph, weight_dtype: DType, compute_dtype: DType) -> ParamBuilder {
        ParamBuilder {
            root: root.clone(),
            prefix: Vec::new(),
            stack: Vec::new(),
            decls: Vec::new(),
            args: Vec::new(),
            weight_dtype,
            compute_dtype,
            activations_in_float32: false,
            moe_strategy: crate::config::MoeStrategy::Dense,
            attention: crate::config::AttentionKernel::DotProduct,
            precision: F32Casts::default(),
        }
    }

    /// Runs `f` with `name` appended to the path prefix.
    pub fn scope<R>(&mut self, name: &str, f: impl FnOnce(&mut ParamBuilder) -> R) -> R {
        self.prefix.push(name.to_string());
        let r = f(self);
        self.prefix.pop();
        r
    }

    /// Runs `f` with a scan axis `name` of `size` active; `index` is the loop index in the body graph.
    pub fn stacked<R>(&mut self, name: AxisName, size: i64, index: &Tensor, f: impl FnOnce(&mut ParamBuilder) -> R) -> R {
        self.stack.push(StackAxis { name, size, index: index.clone() });
        let r = f(self);
        self.stack.pop();
        r
    }

    pub fn path(&self, name: &str) -> String {
        let mut p = self.prefix.join("/");
        if !p.is_empty() {
            p.push('/');
        }
        p.push_str(name);
        p
    }

    /// Declares a parameter stored in `weight_dtype`; returns this layer's slice cast to `compute_dtype`.
    pub fn param(&mut self, name: &str, dims: &[i64], axes: &[AxisName], logical: &[Option<AxisName>], init: Init) -> Tensor {
        let dtype = self.weight_dtype;
        self.param_stored_as(name, dims, axes, logical, init, dtype)
    }

    /// As [`param`](Self::param), sharded with `shard_move` ([`ParamDecl::shard_move`]).
    pub fn param_moved(&mut self, name: &str, dims: &[i64], axes: &[AxisName], logical: &[Option<AxisName>], init: Init, shard_move: (AxisName, AxisName)) -> Tensor {
        let dtype = self.weight_dtype;
        self.declare(name, dims, axes, logical, init, dtype, Some(shard_move))
    }

    /// As [`param`](Self::param) with an explicit storage dtype (e.g. the f32 `shared_expert_gate`).
    pub fn param_stored_as(&mut self, name: &str, dims: &[i64], axes: &[AxisName], logical: &[Option<AxisName>], init: Init, dtype: DType) -> Tensor {
        self.declare(name, dims, axes, logical, init, dtype, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn declare(
        &mut self,
        name: &str,
        dims: &[i64],
        axes: &[AxisName],
        logical: &[Option<AxisName>],
        init: Init,
        dtype: DType,
        shard_move: Option<(AxisName, AxisName)>,
    ) -> Tensor {
        assert!(dims.len() == axes.len() && dims.len() == logical.len(), "param {name}: dims {dims:?} axes {axes:?} logical {logical:?}");
        let at = scan_position(dims.len());
        let mut full_dims = dims.to_vec();
        let mut full_axes = axes.to_vec();
        let mut full_logical = logical.to_vec();
        for (k, s) in self.stack.iter().enumerate() {
            full_dims.insert(at + k, s.size);
            full_axes.insert(at + k, s.name);
            full_logical.insert(at + k, None);
        }
        let decl = ParamDecl {
            path: self.path(name),
            dims: full_dims.clone(),
            axes: full_axes.clone(),
            logical: full_logical,
            dtype,
            init,
            scan_axes: self.stack.len(),
            shard_move,
        };
        // A scan traced unrolled: this layer's slice is an argument of its own.
        let layer_index: Option<Vec<i64>> = self.stack.iter().map(|s| s.index.int_constant()).collect();
        let unrolled = !self.stack.is_empty() && layer_index.is_some();
        let decl_index = match self.decls.iter().position(|d| d.path == decl.path) {
            // Another iteration of an unrolled scan: the same stacked parameter, another layer.
            Some(i) if unrolled && self.decls[i] == decl => i,
            Some(_) => panic!("parameter {} declared twice", decl.path),
            None => {
                self.decls.push(decl);
                self.decls.len() - 1
            }
        };
        if unrolled {
            self.args.push(ParamArg { decl: decl_index, layer: layer_index.unwrap() });
            return self.root.param_in("params", TensorType::named(dtype, dims, axes)).convert(self.compute_dtype);
        }
        self.args.push(ParamArg { decl: decl_index, layer: Vec::new() });
        let stacked = self.root.param_in("params", TensorType::named(dtype, &full_dims, &full_axes));
        let layer = if self.stack.is_empty() {
            stacked
        } else {
            // Slice this iteration's layer out of the stacked parameter (captured into the loop body).
            let g = self.stack.last().unwrap().index.graph();
            let zero = index_const(&g, 0);
            let mut starts = vec![zero; full_dims.len()];
            let mut sizes = full_dims.clone();
            for (k, s) in self.stack.iter().enumerate() {
                starts[at + k] = s.index.clone();
                sizes[at + k] = 1;
            }
            let sliced = stacked.dynamic_slice(&starts, &sizes);
            sliced.reshape(dims).named(axes)
        };
        layer.convert(self.compute_dtype)
    }

    /// Per `params` argument, its declaration: a layer's slice as [`ParamDecl::layer_decl`].
    pub fn arg_decls(&self) -> Vec<ParamDecl> {
        let decl = |a: &ParamArg| if a.layer.is_empty() { self.decls[a.decl].clone() } else { self.decls[a.decl].layer_decl(&a.layer) };
        self.args.iter().map(decl).collect()
    }

    /// Total parameter count of everything declared so far.
    pub fn num_params(&self) -> i64 {
        self.decls.iter().map(|d| d.num_elements()).sum()
    }
}
