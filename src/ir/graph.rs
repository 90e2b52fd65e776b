//! The SSA graph and the tracer. A `Graph` is a handle on the function being traced; a `Tensor` is a value
//! of it. Ops append nodes in creation order, so node order is a topological order. Loop bodies are traced
//! into child functions; a tensor of an enclosing function used inside a body becomes an explicit capture,
//! so every function is closed over its parameters and captures (what autodiff and the emitter need).

use super::{Op, ShardingContext, TensorType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Output `output` of node `node` in one function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    pub node: u32,
    pub output: u32,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueRef>,
    pub outputs: Vec<TensorType>,
    /// Name-scope path, e.g. `decoder/layers/mlp`; becomes the MLIR `loc`.
    pub loc: Option<Rc<str>>,
}

/// A traced function: parameters, captured outer values (for loop bodies), nodes, results.
#[derive(Clone, Debug, Default)]
pub struct Func {
    pub params: Vec<TensorType>,
    /// Per parameter, the signature group it belongs to (`inputs`, `params`, `mu`, ...; "" = none).
    pub param_groups: Vec<String>,
    /// For a loop body: the values of the enclosing function that `Op::Capture(i)` refers to.
    pub captures: Vec<ValueRef>,
    pub capture_types: Vec<TensorType>,
    pub nodes: Vec<Node>,
    pub results: Vec<ValueRef>,
    /// Per result, its signature group ("" = none).
    pub result_groups: Vec<String>,
}

impl Func {
    pub fn value_type(&self, v: ValueRef) -> &TensorType {
        &self.nodes[v.node as usize].outputs[v.output as usize]
    }

    pub fn result_types(&self) -> Vec<TensorType> {
        self.results.iter().map(|r| self.value_type(*r).clone()).collect()
    }

    /// Number of nodes, counting loop bodies.
    pub fn num_ops(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::While { cond, body, .. } => 1 + cond.num_ops() + body.num_ops(),
                _ => 1,
            })
            .sum()
    }
}

pub(crate) struct FuncBuilder {
    pub(crate) func: Func,
    parent: Option<FuncRef>,
    /// parent value -> index in `func.captures`
    capture_index: HashMap<ValueRef, usize>,
    /// parameter index -> node holding `Op::Parameter`
    param_nodes: Vec<ValueRef>,
    scopes: Rc<RefCell<Vec<String>>>,
    /// Mesh and logical-axis rules of the whole trace (shared with loop bodies); `None` = one device.
    sharding: Rc<RefCell<Option<Rc<ShardingContext>>>>,
}

pub(crate) type FuncRef = Rc<RefCell<FuncBuilder>>;

/// A handle on the function being traced. Cheap to clone.
#[derive(Clone)]
pub struct Graph {
    pub(crate) f: FuncRef,
}

/// A traced value: which function, which node output, and its type.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) f: FuncRef,
    pub(crate) v: ValueRef,
    pub(crate) ty: TensorType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor(%{}#{}: {:?})", self.v.node, self.v.output, self.ty)
    }
}

/// Restores the name scopes when dropped: pops the one [`Graph::scope`] pushed, or puts back the stack
/// [`Graph::at_loc`] replaced.
pub struct ScopeGuard {
    scopes: Rc<RefCell<Vec<String>>>,
    replaced: Option<Vec<String>>,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        match self.replaced.take() {
            Some(prev) => *self.scopes.borrow_mut() = prev,
            None => {
                self.scopes.borrow_mut().pop();
            }
        }
    }
}

impl Default for Graph {
    fn default() -> Self {
        Graph::new()
    }
}

impl Graph {
    /// A new top-level function.
    pub fn new() -> Graph {
        Graph::with_parent(None, Rc::new(RefCell::new(Vec::new())), Rc::new(RefCell::new(None)))
    }

    /// A new top-level function traced for `ctx`'s mesh: `Tensor::constrain` resolves logical axis names
    /// through its rules. A one-device mesh traces as [`Graph::new`] does.
    pub fn sharded(ctx: ShardingContext) -> Graph {
        let g = Graph::new();
        if ctx.mesh.num_devices() > 1 {
            *g.f.borrow().sharding.borrow_mut() = Some(Rc::new(ctx));
        }
        g
    }

    /// The mesh and rules this trace shards by (`None` on one device).
    pub fn sharding_context(&self) -> Option<Rc<ShardingContext>> {
        self.f.borrow().sharding.borrow().clone()
    }

    fn with_parent(parent: Option<FuncRef>, scopes: Rc<RefCell<Vec<String>>>, sharding: Rc<RefCell<Option<Rc<ShardingContext>>>>) -> Graph {
        let b = FuncBuilder {
            func: Func::default(),
            parent,
            capture_index: HashMap::new(),
            param_nodes: Vec::new(),
            scopes,
            sharding,
        };
        Graph { f: Rc::new(RefCell::new(b)) }
    }

    /// A child function (loop body) whose captures refer to values of `self`.
    pub(crate) fn child(&self) -> Graph {
        let (scopes, sharding) = (self.f.borrow().scopes.clone(), self.f.borrow().sharding.clone());
        Graph::with_parent(Some(self.f.clone()), scopes, sharding)
    }

    pub fn same_as(&self, other: &Graph) -> bool {
        Rc::ptr_eq(&self.f, &other.f)
    }

    /// Appends a parameter of type `ty`.
    pub fn param(&self, ty: TensorType) -> Tensor {
        self.param_in("", ty)
    }

    /// Appends a parameter of type `ty` to the signature group `group` (a program's arguments are named
    /// groups; each group's parameters must be contiguous).
    pub fn param_in(&self, group: &str, ty: TensorType) -> Tensor {
        let index = self.f.borrow().func.params.len();
        self.f.borrow_mut().func.params.push(ty.clone());
        self.f.borrow_mut().func.param_groups.push(group.to_string());
        let t = self.push(Op::Parameter(index), &[], vec![ty]).remove(0);
        self.f.borrow_mut().param_nodes.push(t.v);
        t
    }

    /// Enters a name scope; nodes created until the guard drops carry `outer/name` as their location.
    pub fn scope(&self, name: &str) -> ScopeGuard {
        let scopes = self.f.borrow().scopes.clone();
        scopes.borrow_mut().push(name.to_string());
        ScopeGuard { scopes, replaced: None }
    }

    /// Until the guard drops, nodes carry the location `loc` (`a/b/c`, or none) whatever the current scopes
    /// are: the autodiff replays a node, and builds its derivative, at the node's own location, so that
    /// a profile of the compiled step names the model part each op comes from (XLA keeps the location as
    /// the op's `op_name`).
    pub fn at_loc(&self, loc: Option<&str>) -> ScopeGuard {
        let scopes = self.f.borrow().scopes.clone();
        let new = loc.map(|l| vec![l.to_string()]).unwrap_or_default();
        let prev = std::mem::replace(&mut *scopes.borrow_mut(), new);
        ScopeGuard { scopes, replaced: Some(prev) }
    }

    /// The innermost function among the operands' functions. An op mixing a loop-body value with values of
    /// enclosing functions belongs in the body (the outer ones become captures), whichever operand is `self`.
    pub(crate) fn innermost(operands: &[&Tensor]) -> Graph {
        let depth = |f: &FuncRef| {
            let (mut d, mut p) = (0, f.borrow().parent.clone());
            while let Some(q) = p {
                d += 1;
                p = q.borrow().parent.clone();
            }
            d
        };
        let t = operands.iter().max_by_key(|t| depth(&t.f)).expect("an op with operands");
        Graph { f: t.f.clone() }
    }

    /// Appends a node; `inputs` may come from enclosing functions (they become captures).
    pub(crate) fn push(&self, op: Op, inputs: &[&Tensor], outputs: Vec<TensorType>) -> Vec<Tensor> {
        let inputs: Vec<ValueRef> = inputs.iter().map(|t| self.import(t)).collect();
        let mut b = self.f.borrow_mut();
        let loc = {
            let s = b.scopes.borrow();
            if s.is_empty() {
                None
            } else {
                Some(Rc::<str>::from(s.join("/")))
            }
        };
        let node = b.func.nodes.len() as u32;
        b.func.nodes.push(Node { op, inputs, outputs: outputs.clone(), loc });
        drop(b);
        outputs
            .into_iter()
            .enumerate()
            .map(|(i, ty)| Tensor { f: self.f.clone(), v: ValueRef { node, output: i as u32 }, ty })
            .collect()
    }

    /// The value of `t` inside this function, capturing it from an enclosing function if needed.
    pub(crate) fn import(&self, t: &Tensor) -> ValueRef {
        if Rc::ptr_eq(&t.f, &self.f) {
            return t.v;
        }
        let parent = self.f.borrow().parent.clone().unwrap_or_else(|| {
            panic!("tensor {t:?} belongs to a function that does not enclose this one (used outside its loop body?)")
        });
        let outer = Graph { f: parent }.import(t);
        if let Some(&i) = self.f.borrow().capture_index.get(&outer) {
            return self.capture_value(i);
        }
        let i = {
            let mut b = self.f.borrow_mut();
            b.func.captures.push(outer);
            b.func.capture_types.push(t.ty.clone());
            let i = b.func.captures.len() - 1;
            b.capture_index.insert(outer, i);
            i
        };
        // A capture node is created without location and without inputs.
        let mut b = self.f.borrow_mut();
        let node = b.func.nodes.len() as u32;
        b.func.nodes.push(Node { op: Op::Capture(i), inputs: vec![], outputs: vec![t.ty.clone()], loc: None });
        ValueRef { node, output: 0 }
    }

    fn capture_value(&self, i: usize) -> ValueRef {
        let b = self.f.borrow();
        let node = b.func.nodes.iter().position(|n| matches!(n.op, Op::Capture(j) if j == i)).unwrap();
        ValueRef { node: node as u32, output: 0 }
    }

    /// Tensor handles for this function's parameters, in order.
    pub fn params(&self) -> Vec<Tensor> {
        let b = self.f.borrow();
        b.param_nodes
            .iter()
            .map(|v| Tensor { f: self.f.clone(), v: *v, ty: b.func.value_type(*v).clone() })
            .collect()
    }

    /// Ends tracing: sets the results and returns the function.
    pub fn finish(self, results: &[Tensor]) -> Func {
        let refs: Vec<ValueRef> = results.iter().map(|t| self.import(t)).collect();
        let mut b = self.f.borrow_mut();
        b.func.result_groups = vec![String::new(); refs.len()];
        b.func.results = refs;
        std::mem::take(&mut b.func)
    }

    /// Ends tracing with named result groups, in order: `g.finish_groups(&[("logits", vec![l]), ...])`.
    pub fn finish_groups(self, groups: &[(&str, Vec<Tensor>)]) -> Func {
        let results: Vec<Tensor> = groups.iter().flat_map(|(_, ts)| ts.iter().cloned()).collect();
        let names: Vec<String> = groups.iter().flat_map(|(n, ts)| ts.iter().map(move |_| n.to_string())).collect();
        let mut f = self.finish(&results);
        f.result_groups = names;
        f
    }

    /// How many loop bodies enclose this function (0 for a top-level function).
    pub fn depth(&self) -> usize {
        let (mut d, mut p) = (0, self.f.borrow().parent.clone());
        while let Some(q) = p {
            d += 1;
            p = q.borrow().parent.clone();
        }
        d
    }

    pub fn num_nodes(&self) -> usize {
        self.f.borrow().func.nodes.len()
    }
}

impl Tensor {
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }

    pub fn dims(&self) -> &[i64] {
        &self.ty.dims
    }

    pub fn dtype(&self) -> super::DType {
        self.ty.dtype
    }

    pub fn rank(&self) -> usize {
        self.ty.dims.len()
    }

    /// The function this tensor belongs to.
    pub fn graph(&self) -> Graph {
        Graph { f: self.f.clone() }
    }

    /// The value of an integer scalar constant (e.g. a layer index of a scan traced unrolled), else `None`.
    pub fn int_constant(&self) -> Option<i64> {
        if self.rank() != 0 || !self.dtype().is_int() {
            return None;
        }
        match &self.f.borrow().func.nodes[self.v.node as usize].op {
            super::Op::Constant(super::Literal::SplatInt(v)) => Some(*v),
            _ => None,
        }
    }

    /// This tensor with new axis names (same value; names are tracing metadata only).
    pub fn with_axes(&self, axes: &[Option<super::AxisName>]) -> Tensor {
        assert_eq!(axes.len(), self.rank(), "with_axes: {:?} given {} names", self.ty, axes.len());
        let mut t = self.clone();
        t.ty.axes = axes.to_vec();
        t
    }

    /// This tensor with every dim named (`x.named(&["batch", "seq", "embed"])`).
    pub fn named(&self, axes: &[super::AxisName]) -> Tensor {
        let axes: Vec<_> = axes.iter().map(|a| Some(*a)).collect();
        self.with_axes(&axes)
    }
}
