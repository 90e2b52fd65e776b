//! Sharding annotations carried by the graph: a device mesh and, per tensor, the mesh axes of each dim.
//! The emitter prints them as Shardy (`sdy.mesh`, `#sdy.sharding`); `crate::sharding` builds them from config.

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
}
