//! The JSON files of an item directory: `_METADATA` (the tree), `_sharding`, `_strings.json`,
//! `array_metadatas/process_<i>` and `_CHECKPOINT_METADATA`, read and written as orbax 0.12.8 does.

use std::collections::HashMap;
use std::fmt::Write as _;
use crate::storage::Location;

use base64::Engine as _;
use serde_json::Value;

use super::{OrbaxError, Result};

pub const METADATA_FILE: &str = "_METADATA";
pub const SHARDING_FILE: &str = "_sharding";
pub const STRINGS_FILE: &str = "_strings.json";
pub const CHECKPOINT_METADATA_FILE: &str = "_CHECKPOINT_METADATA";
pub const ARRAY_METADATAS_DIR: &str = "array_metadatas";
pub const COMMIT_FILE: &str = "commit_success.txt";

/// One step of a leaf's key path: a dict key / attribute (orbax `key_type` 2) or a sequence index (1).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathKey {
    Index(usize),
    Key(String),
}

impl PathKey {
    pub fn as_string(&self) -> String {
        match self {
            PathKey::Index(i) => i.to_string(),
            PathKey::Key(k) => k.clone(),
        }
    }

    fn key_type(&self) -> u8 {
        match self {
            PathKey::Index(_) => 1,
            PathKey::Key(_) => 2,
        }
    }
}

/// What a leaf holds.
#[derive(Clone, Debug, PartialEq)]
pub enum LeafKind {
    /// A zarr array (`jax.Array` or `np.ndarray`).
    Array,
    /// A Python int or float, stored as a 0-d int64 / float64 array.
    Scalar,
    /// A string kept in `_strings.json`.
    String(String),
    /// Nothing stored: `None`, an empty dict / list / tuple, an empty namedtuple (the value_type says which).
    Empty(String),
    /// A value type this reader does not know (a custom orbax type handler).
    Unsupported(String),
}

/// One `tree_metadata` entry of `_METADATA`.
#[derive(Clone, Debug)]
pub struct TreeEntry {
    pub name: String,
    pub path: Vec<PathKey>,
    pub value_type: String,
    pub skip_deserialize: bool,
}

/// `_METADATA`: the tree and the storage flags (absent flags are `None`; see `orbax-format.md` §3.1).
#[derive(Clone, Debug)]
pub struct TreeMetadata {
    pub entries: Vec<TreeEntry>,
    pub use_ocdbt: Option<bool>,
    pub use_zarr3: Option<bool>,
    pub store_array_data_equal_to_fill_value: Option<bool>,
    pub custom_metadata: Value,
}

/// orbax's array name for a key path: the key strings joined with `.`, unescaped.
pub fn leaf_name(path: &[PathKey]) -> String {
    path.iter().map(PathKey::as_string).collect::<Vec<_>>().join(".")
}

pub(crate) fn read_json(path: &Location) -> Result<Value> {
    let raw = path.read().map_err(super::io_err(path))?;
    serde_json::from_slice(&raw)
        .map_err(|e| OrbaxError::BadMetadata { path: path.clone(), reason: format!("not valid JSON ({e})") })
}

impl TreeMetadata {
    pub fn parse(j: &Value, path: &Location) -> Result<TreeMetadata> {
        let bad = |reason: String| OrbaxError::BadMetadata { path: path.clone(), reason };
        let tree = j.get("tree_metadata").and_then(Value::as_object).ok_or_else(|| {
            bad("no tree_metadata object (a legacy or foreign metadata file; orbax 0.12.8 cannot restore it either)".into())
        })?;
        let mut entries = Vec::with_capacity(tree.len());
        // The dict key (a Python tuple repr) is not parsed by orbax either; key_metadata is the path.
        for (k, e) in tree {
            let keys = e
                .get("key_metadata")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(format!("entry {k} has no key_metadata")))?;
            let mut p = Vec::with_capacity(keys.len());
            for km in keys {
                let key = match km.get("key") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => return Err(bad(format!("entry {k}: key_metadata {km} has no key"))),
                };
                p.push(match km.get("key_type").and_then(Value::as_u64) {
                    Some(1) => PathKey::Index(
                        key.parse().map_err(|_| bad(format!("entry {k}: sequence key {key:?} is not an index")))?,
                    ),
                    _ => PathKey::Key(key),
                });
            }
            let vm = e.get("value_metadata").ok_or_else(|| bad(format!("entry {k} has no value_metadata")))?;
            let value_type = vm.get("value_type").and_then(Value::as_str).unwrap_or("jax.Array").to_string();
            let skip_deserialize = vm.get("skip_deserialize").and_then(Value::as_bool).unwrap_or(false);
            entries.push(TreeEntry { name: leaf_name(&p), path: p, value_type, skip_deserialize });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(TreeMetadata {
            entries,
            use_ocdbt: j.get("use_ocdbt").and_then(Value::as_bool),
            use_zarr3: j.get("use_zarr3").and_then(Value::as_bool),
            store_array_data_equal_to_fill_value: j
                .get("store_array_data_equal_to_fill_value")
                .and_then(Value::as_bool),
            custom_metadata: j.get("custom_metadata").cloned().unwrap_or(Value::Null),
        })
    }
}

impl TreeEntry {
    pub fn kind(&self, strings: &HashMap<String, String>) -> LeafKind {
        match self.value_type.as_str() {
            _ if self.skip_deserialize => LeafKind::Empty(self.value_type.clone()),
            "jax.Array" | "np.ndarray" => LeafKind::Array,
            "scalar" => LeafKind::Scalar,
            "string" => match strings.get(&self.name) {
                Some(s) => LeafKind::String(s.clone()),
                None => LeafKind::Unsupported("string missing from _strings.json".into()),
            },
            "None" | "Dict" | "List" | "Tuple" | "NamedTuple" => LeafKind::Empty(self.value_type.clone()),
            other => LeafKind::Unsupported(other.to_string()),
        }
    }
}

/// `_strings.json`: leaf name -> string.
pub fn read_strings(path: &Location) -> Result<HashMap<String, String>> {
    let j = read_json(path)?;
    let obj = j
        .as_object()
        .ok_or_else(|| OrbaxError::BadMetadata { path: path.clone(), reason: "not a JSON object".into() })?;
    Ok(obj.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
}

/// `_sharding`: leaf name -> sharding description (the double-encoded JSON string, decoded).
pub fn read_sharding(path: &Location) -> Result<HashMap<String, Value>> {
    let bad = |reason: String| OrbaxError::BadMetadata { path: path.clone(), reason };
    let j = read_json(path)?;
    let obj = j.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    let mut out = HashMap::new();
    for (k, v) in obj {
        let name = base64::engine::general_purpose::URL_SAFE
            .decode(k)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad(format!("key {k:?} is not base64url of a leaf name")))?;
        let desc = match v {
            Value::String(s) => serde_json::from_str(s).map_err(|e| bad(format!("entry for {name}: {e}")))?,
            other => other.clone(),
        };
        out.insert(name, desc);
    }
    Ok(out)
}

/// `array_metadatas/process_*`: leaf name -> `ext_metadata.random_key_impl` (JAX PRNG key leaves).
pub fn read_prng_impls(item_dir: &Location) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let dir = item_dir.join(ARRAY_METADATAS_DIR);
    let Ok(entries) = dir.list() else { return out };
    for e in entries.iter().filter(|e| !e.is_dir) {
        let Ok(j) = read_json(&dir.join(&e.name)) else { continue };
        for a in j.get("array_metadatas").and_then(Value::as_array).into_iter().flatten() {
            let am = a.get("array_metadata").unwrap_or(a);
            if let (Some(n), Some(k)) = (
                am.get("param_name").and_then(Value::as_str),
                am.pointer("/ext_metadata/random_key_impl").and_then(Value::as_str),
            ) {
                out.insert(n.to_string(), k.to_string());
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------ writing

/// JSON as Python's `json.dumps` prints it (`", "` and `": "` separators, ASCII only), with object members
/// in the order given: orbax's files are written that way and kept in insertion order.
#[derive(Clone, Debug)]
pub enum PyJson {
    Obj(Vec<(String, PyJson)>),
    Arr(Vec<PyJson>),
    Str(String),
    Int(i64),
    Bool(bool),
    Null,
    /// Any serde value (objects in serde's key order).
    Value(Value),
}

impl PyJson {
    pub fn obj<const N: usize>(members: [(&str, PyJson); N]) -> PyJson {
        PyJson::Obj(members.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    pub fn ints(v: &[u64]) -> PyJson {
        PyJson::Arr(v.iter().map(|x| PyJson::Int(*x as i64)).collect())
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }

    fn write(&self, out: &mut String) {
        match self {
            PyJson::Obj(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_str(out, k);
                    out.push_str(": ");
                    v.write(out);
                }
                out.push('}');
            }
            PyJson::Arr(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push(']');
            }
            PyJson::Str(s) => py_str(out, s),
            PyJson::Int(i) => write!(out, "{i}").unwrap(),
            PyJson::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            PyJson::Null => out.push_str("null"),
            PyJson::Value(Value::Number(n)) => write!(out, "{n}").unwrap(),
            PyJson::Value(v) => PyJson::from_value(v).write(out),
        }
    }

    fn from_value(v: &Value) -> PyJson {
        match v {
            Value::Object(m) => PyJson::Obj(m.iter().map(|(k, v)| (k.clone(), PyJson::from_value(v))).collect()),
            Value::Array(a) => PyJson::Arr(a.iter().map(PyJson::from_value).collect()),
            Value::String(s) => PyJson::Str(s.clone()),
            Value::Bool(b) => PyJson::Bool(*b),
            Value::Null => PyJson::Null,
            Value::Number(n) => PyJson::Value(Value::Number(n.clone())),
        }
    }
}

fn py_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    write!(out, "\\u{u:04x}").unwrap();
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `str(tuple(keys))`, orbax's `tree_metadata` dict key: `('params', 'dense', 'bias')`, `('step',)`.
pub fn python_tuple_repr(path: &[PathKey]) -> String {
    let items: Vec<String> = path.iter().map(|k| python_str_repr(&k.as_string())).collect();
    match items.len() {
        1 => format!("({},)", items[0]),
        _ => format!("({})", items.join(", ")),
    }
}

fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(out, "\\x{:02x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The `_METADATA` text for array leaves given in flatten order, as orbax writes it.
pub fn render_tree_metadata(leaves: &[(Vec<PathKey>, &str, Vec<u64>)], use_zarr3: bool, custom: &Value) -> String {
    let tree = leaves
        .iter()
        .map(|(path, value_type, write_shape)| {
            let keys = path
                .iter()
                .map(|k| {
                    PyJson::obj([("key", PyJson::Str(k.as_string())), ("key_type", PyJson::Int(k.key_type() as i64))])
                })
                .collect();
            // An empty node (optax's `EmptyState()`, saved as `None`) has nothing to read and no shape.
            let value = if *value_type == "None" {
                PyJson::obj([("value_type", PyJson::Str("None".into())), ("skip_deserialize", PyJson::Bool(true))])
            } else {
                PyJson::obj([
                    ("value_type", PyJson::Str(value_type.to_string())),
                    ("skip_deserialize", PyJson::Bool(false)),
                    ("write_shape", PyJson::ints(write_shape)),
                ])
            };
            let entry = PyJson::obj([("key_metadata", PyJson::Arr(keys)), ("value_metadata", value)]);
            (python_tuple_repr(path), entry)
        })
        .collect();
    PyJson::obj([
        ("tree_metadata", PyJson::Obj(tree)),
        ("use_ocdbt", PyJson::Bool(true)),
        ("use_zarr3", PyJson::Bool(use_zarr3)),
        ("store_array_data_equal_to_fill_value", PyJson::Bool(true)),
        ("custom_metadata", PyJson::Value(custom.clone())),
    ])
    .render()
}

/// `_sharding`: compact JSON, keys base64url(name) sorted, values JSON strings (Python-style inside).
pub fn render_sharding(records: &[(String, PyJson)]) -> String {
    let map: serde_json::Map<String, Value> = records
        .iter()
        .map(|(n, d)| (base64::engine::general_purpose::URL_SAFE.encode(n.as_bytes()), Value::String(d.render())))
        .collect();
    serde_json::to_string(&Value::Object(map)).expect("JSON of strings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_reprs() {
        let p = |v: &[&str]| v.iter().map(|s| PathKey::Key(s.to_string())).collect::<Vec<_>>();
        assert_eq!(python_tuple_repr(&p(&["step"])), "('step',)");
        assert_eq!(python_tuple_repr(&p(&["params", "dense", "bias"])), "('params', 'dense', 'bias')");
        assert_eq!(python_tuple_repr(&p(&["it's"])), "(\"it's\",)");
        assert_eq!(
            PyJson::obj([("a", PyJson::ints(&[2, 3])), ("b", PyJson::Str("é".into()))]).render(),
            "{\"a\": [2, 3], \"b\": \"\\u00e9\"}"
        );
    }

    #[test]
    fn sharding_matches_orbax_bytes() {
        let desc = PyJson::obj([
            ("sharding_type", PyJson::Str("SingleDeviceSharding".into())),
            ("device_str", PyJson::Str("cpu:0".into())),
        ]);
        let s = render_sharding(&[("counts".into(), desc.clone()), ("bf3d".into(), desc.clone())]);
        assert_eq!(
            s,
            r#"{"Y291bnRz":"{\"sharding_type\": \"SingleDeviceSharding\", \"device_str\": \"cpu:0\"}","YmYzZA==":"{\"sharding_type\": \"SingleDeviceSharding\", \"device_str\": \"cpu:0\"}"}"#
        );
    }
}
