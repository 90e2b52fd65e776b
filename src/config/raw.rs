//! The merged, untyped config: an ordered `key -> YAML value` map that remembers where each value came
//! from, plus the typed getters that turn values into Rust types with errors naming key, value and origin.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_yaml_ng::Value;

use super::error::{closest, ConfigError, Origin};

/// An ordered map of config keys to YAML values, each with its origin.
#[derive(Clone, Debug, Default)]
pub struct RawConfig {
    entries: Vec<(String, Value, Origin)>,
    index: HashMap<String, usize>,
}

impl RawConfig {
    pub fn new() -> RawConfig {
        RawConfig::default()
    }

    /// Sets `key`, keeping its position if it exists (so the printed config follows base.yml's order).
    /// Mappings merge key by key (OmegaConf's rule); every other value replaces the old one.
    pub fn set(&mut self, key: &str, value: Value, origin: Origin) {
        match self.index.get(key) {
            Some(&i) => {
                let old = &mut self.entries[i];
                match (&mut old.1, value) {
                    (Value::Mapping(old_map), Value::Mapping(new_map)) => {
                        for (k, v) in new_map {
                            old_map.insert(k, v);
                        }
                    }
                    (slot, value) => *slot = value,
                }
                old.2 = origin;
            }
            None => {
                self.index.insert(key.to_string(), self.entries.len());
                self.entries.push((key.to_string(), value, origin));
            }
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.index.get(key).map(|&i| &self.entries[i].2)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _, _)| k.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value, &Origin)> {
        self.entries.iter().map(|(k, v, o)| (k.as_str(), v, o))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The config as YAML text, one `key: value` line per key in base.yml order, with a comment naming the
    /// origin of every value that is not a default.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for (k, v, o) in &self.entries {
            let _ = write!(out, "{k}: {}", value_to_inline(v));
            if *o != Origin::Default {
                let _ = write!(out, "  # {o}");
            }
            out.push('\n');
        }
        out
    }

    fn get(&self, key: &str) -> &Value {
        self.value(key)
            .unwrap_or_else(|| panic!("config key `{key}` is read by the program but missing from configs/base.yml"))
    }

    fn bad(&self, key: &str, expected: &str) -> ConfigError {
        ConfigError::BadValue {
            key: key.to_string(),
            value: value_to_inline(self.get(key)),
            expected: expected.to_string(),
            origin: self.origin(key).cloned().unwrap_or(Origin::Default),
        }
    }

    /// A string; numbers and booleans are taken as their text, null as "".
    pub fn string(&self, key: &str) -> Result<String, ConfigError> {
        match self.get(key) {
            Value::Null => Ok(String::new()),
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(self.bad(key, "a string")),
        }
    }

    /// An optional string: null, "" and "none" (MaxText's spelling of None) are `None`.
    pub fn opt_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let s = self.string(key)?;
        Ok(if s.is_empty() || s.eq_ignore_ascii_case("none") { None } else { Some(s) })
    }

    pub fn bool(&self, key: &str) -> Result<bool, ConfigError> {
        let parsed = match self.get(key) {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_i64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            Value::String(s) => parse_bool(s),
            _ => None,
        };
        parsed.ok_or_else(|| self.bad(key, "a boolean (true or false)"))
    }

    pub fn i64(&self, key: &str) -> Result<i64, ConfigError> {
        self.opt_i64(key)?.ok_or_else(|| self.bad(key, "an integer"))
    }

    /// An integer, or `None` for null / "none".
    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.get(key) {
            Value::Null => Ok(None),
            Value::String(s) if s.eq_ignore_ascii_case("none") => Ok(None),
            v => value_as_i64(v).map(Some).ok_or_else(|| self.bad(key, "an integer")),
        }
    }

    /// An integer of at least `min`.
    pub fn int_at_least(&self, key: &str, min: i64) -> Result<i64, ConfigError> {
        let v = self.i64(key)?;
        if v < min {
            return Err(self.bad(key, &format!("an integer >= {min}")));
        }
        Ok(v)
    }

    pub fn f64(&self, key: &str) -> Result<f64, ConfigError> {
        self.opt_f64(key)?.ok_or_else(|| self.bad(key, "a number"))
    }

    /// A number, or `None` for null / "none".
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            Value::Null => Ok(None),
            Value::String(s) if s.eq_ignore_ascii_case("none") => Ok(None),
            v => value_as_f64(v).map(Some).ok_or_else(|| self.bad(key, "a number")),
        }
    }

    /// One of the names of a config enum (case-insensitive); the error lists them and the closest.
    pub fn enumeration<E: ConfigEnum>(&self, key: &str) -> Result<E, ConfigError> {
        let s = self.string(key)?;
        if let Some(e) = E::parse(&s) {
            return Ok(e);
        }
        let names: Vec<&str> = E::VARIANTS.iter().map(|(n, _)| *n).collect();
        let mut expected = format!("one of {}", names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "));
        if let Some(c) = closest(&s, names.iter().copied()) {
            expected.push_str(&format!(" (did you mean `{c}`?)"));
        }
        Err(self.bad(key, &expected))
    }

    /// A list of strings. A plain string is a one-element list; "[a, b]" text is parsed as a YAML list
    /// (MaxText coerces both for list keys given on the command line).
    pub fn string_list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        let v = self.get(key);
        let v = match v {
            Value::String(s) if s.trim_start().starts_with('[') => {
                serde_yaml_ng::from_str::<Value>(s).map_err(|_| self.bad(key, "a list of strings"))?
            }
            v => v.clone(),
        };
        match v {
            Value::Null => Ok(Vec::new()),
            Value::Sequence(items) => items
                .iter()
                .map(|item| scalar_to_string(item).ok_or_else(|| self.bad(key, "a list of strings")))
                .collect(),
            other => scalar_to_string(&other).map(|s| vec![s]).ok_or_else(|| self.bad(key, "a list of strings")),
        }
    }

    /// A list of integers (a YAML list, or comma-separated text).
    pub fn i64_list(&self, key: &str) -> Result<Vec<i64>, ConfigError> {
        let expected = "a list of integers, e.g. [151643, 40, 2948]";
        match self.get(key) {
            Value::Null => Ok(Vec::new()),
            Value::Sequence(items) => {
                items.iter().map(|item| value_as_i64(item).ok_or_else(|| self.bad(key, expected))).collect()
            }
            Value::Number(_) => value_as_i64(self.get(key)).map(|v| vec![v]).ok_or_else(|| self.bad(key, expected)),
            Value::String(s) => {
                let t = s.trim().trim_start_matches('[').trim_end_matches(']');
                if t.trim().is_empty() {
                    return Ok(Vec::new());
                }
                t.split(',').map(|p| parse_int_text(p.trim()).ok_or_else(|| self.bad(key, expected))).collect()
            }
            _ => Err(self.bad(key, expected)),
        }
    }

    /// A list of lists of strings (`data_sharding`); a flat list of strings is one inner list.
    pub fn nested_string_list(&self, key: &str) -> Result<Vec<Vec<String>>, ConfigError> {
        let expected = "a list of lists of mesh axis names";
        let Value::Sequence(items) = self.get(key) else { return Err(self.bad(key, expected)) };
        if items.iter().all(|i| scalar_to_string(i).is_some()) && !items.is_empty() {
            return Ok(vec![items.iter().filter_map(scalar_to_string).collect()]);
        }
        items
            .iter()
            .map(|inner| match inner {
                Value::Sequence(xs) => {
                    xs.iter().map(|x| scalar_to_string(x).ok_or_else(|| self.bad(key, expected))).collect()
                }
                _ => Err(self.bad(key, expected)),
            })
            .collect()
    }

    /// `logical_axis_rules`: `[[logical_name, mesh_axis | [mesh_axes...]], ...]`.
    pub fn axis_rules(&self, key: &str) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        let Value::Sequence(items) = self.get(key) else {
            return Err(self.bad(key, "a list of [logical_axis, [mesh_axes...]] rules"));
        };
        items.iter().map(|rule| parse_rule(rule).ok_or_else(|| self.bad_rule(key, rule))).collect()
    }

    fn bad_rule(&self, key: &str, rule: &Value) -> ConfigError {
        ConfigError::BadValue {
            key: key.to_string(),
            value: value_to_inline(rule),
            expected: "each rule to be [logical_axis, mesh_axis] or [logical_axis, [mesh_axes...]]".to_string(),
            origin: self.origin(key).cloned().unwrap_or(Origin::Default),
        }
    }
}

/// One `[name, mesh]` logical axis rule.
pub(crate) fn parse_rule(rule: &Value) -> Option<(String, Vec<String>)> {
    let Value::Sequence(pair) = rule else { return None };
    if pair.len() != 2 {
        return None;
    }
    let name = scalar_to_string(&pair[0])?;
    let mesh = match &pair[1] {
        Value::Null => Vec::new(),
        Value::Sequence(axes) => axes.iter().map(scalar_to_string).collect::<Option<Vec<_>>>()?,
        v => vec![scalar_to_string(v)?],
    };
    Some((name, mesh))
}

/// Types whose config values are a fixed set of names (MaxText's string enums).
pub trait ConfigEnum: Sized + Copy + 'static {
    /// (name as written in the config, variant); the first name of a variant is its canonical one.
    const VARIANTS: &'static [(&'static str, Self)];

    fn parse(s: &str) -> Option<Self> {
        Self::VARIANTS.iter().find(|(n, _)| n.eq_ignore_ascii_case(s.trim())).map(|(_, v)| *v)
    }
}

pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "y" | "t" => Some(true),
        "false" | "no" | "off" | "0" | "n" | "f" => Some(false),
        _ => None,
    }
}

fn parse_int_text(s: &str) -> Option<i64> {
    let t = s.replace('_', "");
    if let Ok(v) = t.parse::<i64>() {
        return Some(v);
    }
    let f = t.parse::<f64>().ok()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn parse_float_text(s: &str) -> Option<f64> {
    s.trim().replace('_', "").parse::<f64>().ok()
}

/// An integer from a YAML number (integral floats allowed) or numeric text (`10_000`, `1e3`).
pub(crate) fn value_as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
        }),
        Value::String(s) => parse_int_text(s.trim()),
        _ => None,
    }
}

/// A float from a YAML number or numeric text (PyYAML reads `1e-5` as text; pydantic still takes it).
pub(crate) fn value_as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_float_text(s),
        _ => None,
    }
}

fn scalar_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A value as one line of YAML flow text (for messages and config dumps).
pub fn value_to_inline(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && serde_yaml_ng::from_str::<Value>(s).ok().as_ref() == Some(v)
                && !s.contains(['#', '\n', ',', '[', ']', '{', '}']);
            if plain {
                s.clone()
            } else {
                format!("{s:?}")
            }
        }
        Value::Sequence(items) => {
            format!("[{}]", items.iter().map(value_to_inline).collect::<Vec<_>>().join(", "))
        }
        Value::Mapping(m) => {
            let parts: Vec<String> =
                m.iter().map(|(k, v)| format!("{}: {}", value_to_inline(k), value_to_inline(v))).collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Tagged(t) => format!("{} {}", t.tag, value_to_inline(&t.value)),
    }
}

/// MaxText's "same value" test for the model-yml / command-line conflict check: numbers compare by value
/// (512 == 512.0), everything else by YAML equality, falling back to the text form (`qwen3_next` == "qwen3_next").
pub(crate) fn values_equal(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    if let (Some(x), Some(y)) = (value_as_f64(a), value_as_f64(b)) {
        if matches!(a, Value::Number(_)) || matches!(b, Value::Number(_)) {
            return x == y;
        }
    }
    match (a, b) {
        (Value::Sequence(xs), Value::Sequence(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| values_equal(x, y))
        }
        (Value::Bool(x), Value::String(s)) | (Value::String(s), Value::Bool(x)) => parse_bool(s) == Some(*x),
        _ => match (scalar_to_string(a), scalar_to_string(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawConfig {
        let mut r = RawConfig::new();
        for (k, v) in pairs {
            r.set(k, serde_yaml_ng::from_str(v).unwrap(), Origin::CommandLine);
        }
        r
    }

    #[test]
    fn numbers_from_text_and_floats() {
        let r = raw(&[("a", "10_000"), ("b", "1e-5"), ("c", "5.0"), ("d", "3.e-5"), ("e", "none"), ("f", "5.5")]);
        assert_eq!(r.i64("a").unwrap(), 10000);
        assert_eq!(r.f64("b").unwrap(), 1e-5);
        assert_eq!(r.i64("c").unwrap(), 5);
        assert_eq!(r.f64("d").unwrap(), 3e-5);
        assert_eq!(r.opt_i64("e").unwrap(), None);
        let err = r.i64("f").unwrap_err().to_string();
        assert!(err.contains("`f`") && err.contains("5.5") && err.contains("an integer"), "{err}");
    }

    #[test]
    fn bools_and_lists() {
        let r = raw(&[("a", "False"), ("b", "yes"), ("c", "text"), ("d", "[a, b]"), ("e", "'[x, y]'"), ("f", "maybe")]);
        assert!(!r.bool("a").unwrap());
        assert!(r.bool("b").unwrap());
        assert_eq!(r.string_list("c").unwrap(), vec!["text"]);
        assert_eq!(r.string_list("d").unwrap(), vec!["a", "b"]);
        assert_eq!(r.string_list("e").unwrap(), vec!["x", "y"]);
        assert!(r.bool("f").unwrap_err().to_string().contains("a boolean"));
    }

    #[test]
    fn rules_parse_string_list_and_empty() {
        let r = raw(&[("rules", "[['exp', 'expert'], ['embed', ['fsdp', 'tensor']], ['qkv', []]]")]);
        let rules = r.axis_rules("rules").unwrap();
        assert_eq!(rules[0], ("exp".to_string(), vec!["expert".to_string()]));
        assert_eq!(rules[1].1, vec!["fsdp", "tensor"]);
        assert!(rules[2].1.is_empty());
    }

    #[test]
    fn equality_rules() {
        let v = |s: &str| serde_yaml_ng::from_str::<Value>(s).unwrap();
        assert!(values_equal(&v("512"), &v("512.0")));
        assert!(values_equal(&v("\"qwen3_next\""), &v("qwen3_next")));
        assert!(values_equal(&v("true"), &v("True")));
        assert!(!values_equal(&v("512"), &v("256")));
        assert!(!values_equal(&v("0.25"), &v("0.5")));
    }

    #[test]
    fn mappings_merge_by_key() {
        let mut r = raw(&[("m", "{a: 1, b: 2}")]);
        r.set("m", serde_yaml_ng::from_str("{b: 3}").unwrap(), Origin::CommandLine);
        assert_eq!(value_to_inline(r.value("m").unwrap()), "{a: 1, b: 3}");
    }
}
