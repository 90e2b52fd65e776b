//! Reading config sources: yml files (with MaxText's `base_config:` chaining), the model yml next to the
//! base yml, `key=value` command-line overrides and `M_<KEY>` environment overrides.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::error::{closest, ConfigError, Origin};
use super::raw::RawConfig;

/// One `key: value` from some source.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub value: Value,
    pub origin: Origin,
}

/// A list of entries from one layer of the merge (a file chain, the model yml, the command line).
pub type Layer = Vec<Entry>;

/// The key a yml file uses to name its parent config.
const BASE_CONFIG_KEY: &str = "base_config";

/// Parses YAML text into top-level entries. `path` is used for messages and origins.
pub fn parse_yaml_text(text: &str, path: &Path) -> Result<Layer, ConfigError> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let (mut line, mut column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = strip_location(&e.to_string());
        // libyaml reports a duplicate key at the start of its mapping; point at the second occurrence.
        if let Some(key) = message.strip_prefix("duplicate entry with key \"").and_then(|r| r.strip_suffix('"')) {
            if let Some(second) = nth_key_line(text, key, 2) {
                (line, column) = (second, 1);
            }
        }
        ConfigError::Yaml { path: path.to_path_buf(), line, column, message }
    })?;
    let mapping = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(m) => m,
        other => {
            let found = match other {
                Value::Sequence(_) => "a list",
                Value::String(_) => "a string",
                _ => "a scalar",
            };
            return Err(ConfigError::NotAMapping { path: path.to_path_buf(), found: found.to_string() });
        }
    };
    let mut layer = Vec::with_capacity(mapping.len());
    for (k, v) in mapping {
        let key = match k {
            Value::String(s) => s,
            other => {
                let line = find_key_line(text, &super::raw::value_to_inline(&other)).unwrap_or(0);
                return Err(ConfigError::Yaml {
                    path: path.to_path_buf(),
                    line,
                    column: 1,
                    message: format!("config keys must be names, found `{}`", super::raw::value_to_inline(&other)),
                });
            }
        };
        let line = find_key_line(text, &key);
        layer.push(Entry { origin: Origin::File { path: path.to_path_buf(), line }, key, value: v });
    }
    Ok(layer)
}

/// Removes libyaml's " at line N column M" (the error carries the location separately).
fn strip_location(message: &str) -> String {
    let mut out = message.to_string();
    while let Some(pos) = out.find(" at line ") {
        let rest = &out[pos + " at line ".len()..];
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let n = digits(rest);
        let Some(after) = rest[n..].strip_prefix(" column ") else { break };
        let m = digits(after);
        let end = pos + " at line ".len() + n + " column ".len() + m;
        out.replace_range(pos..end, "");
    }
    out
}

/// The 1-based line where top-level `key:` is written, if it can be found.
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    nth_key_line(text, key, 1)
}

/// The 1-based line of the `n`-th top-level `key:` (n >= 1).
fn nth_key_line(text: &str, key: &str, n: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_end();
            let rest = l.strip_prefix(key).or_else(|| {
                l.strip_prefix('"').and_then(|x| x.strip_prefix(key)).and_then(|x| x.strip_prefix('"'))
            });
            rest.is_some_and(|r| r.trim_start().starts_with(':'))
        })
        .nth(n - 1)
        .map(|(i, _)| i + 1)
}

pub fn read_yaml_file(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
    parse_yaml_text(&text, path)
}

/// Loads a yml file and, recursively, the files its `base_config:` names (relative to the file's directory),
/// parents first: a child's keys come after (and so override) its parent's.
pub fn load_chain(path: &Path) -> Result<Layer, ConfigError> {
    let mut seen = HashSet::new();
    load_chain_inner(path, &mut seen)
}

fn load_chain_inner(path: &Path, seen: &mut HashSet<PathBuf>) -> Result<Layer, ConfigError> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if !seen.insert(canonical) {
        return Err(ConfigError::BaseConfigCycle { path: path.to_path_buf() });
    }
    let layer = read_yaml_file(path)?;
    let parent = layer.iter().find(|e| e.key == BASE_CONFIG_KEY).map(|e| e.value.clone());
    let own: Layer = layer.into_iter().filter(|e| e.key != BASE_CONFIG_KEY).collect();
    let Some(parent) = parent else { return Ok(own) };
    let Value::String(parent) = parent else {
        return Err(ConfigError::BadValue {
            key: BASE_CONFIG_KEY.to_string(),
            value: super::raw::value_to_inline(&parent),
            expected: "a path to a yml file".to_string(),
            origin: Origin::File { path: path.to_path_buf(), line: None },
        });
    };
    let parent_path = {
        let p = PathBuf::from(&parent);
        if p.is_absolute() {
            p
        } else {
            path.parent().unwrap_or(Path::new(".")).join(p)
        }
    };
    let mut merged = load_chain_inner(&parent_path, seen)?;
    merged.extend(own);
    Ok(merged)
}

/// Parses `key=value` arguments. Values are YAML scalars or flow lists (`steps=5`, `megablox=False`,
/// `mesh_axes=[data,fsdp]`), except for keys whose default is a string: those keep the text as written, so
/// `prompt=I love: to` or `run_name=007` stay strings. A leading `--` is accepted (`--max_kl_div=2e-4`,
/// as MaxText's logit checker takes it). A later argument for the same key wins.
pub fn parse_overrides(args: &[String], defaults: &RawConfig) -> Result<Layer, ConfigError> {
    let mut layer = Vec::with_capacity(args.len());
    for arg in args {
        let body = arg.strip_prefix("--").unwrap_or(arg);
        let Some((key, text)) = body.split_once('=') else {
            return Err(ConfigError::NotKeyValue { arg: arg.clone() });
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ConfigError::NotKeyValue { arg: arg.clone() });
        }
        check_known(key, defaults, Origin::CommandLine)?;
        let value = parse_value_text(text, defaults.value(key), key, Origin::CommandLine)?;
        layer.push(Entry { key: key.to_string(), value, origin: Origin::CommandLine });
    }
    Ok(layer)
}

/// Turns override text into a value, using the default's type to decide whether the text is a string.
pub fn parse_value_text(text: &str, default: Option<&Value>, key: &str, origin: Origin) -> Result<Value, ConfigError> {
    if matches!(default, Some(Value::String(_))) {
        return Ok(Value::String(text.to_string()));
    }
    if text.is_empty() {
        return Ok(Value::String(String::new()));
    }
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| ConfigError::BadValue {
        key: key.to_string(),
        value: text.to_string(),
        expected: format!("a YAML value ({})", e.to_string().split(" at line").next().unwrap_or_default()),
        origin,
    })
}

/// Errors unless `key` is a known config key (a key of the built-in base.yml); names the closest one.
pub fn check_known(key: &str, defaults: &RawConfig, origin: Origin) -> Result<(), ConfigError> {
    if defaults.contains(key) {
        return Ok(());
    }
    Err(ConfigError::UnknownKey { key: key.to_string(), origin, suggestion: closest(key, defaults.keys()) })
}

/// Finds `models/<name>.yml` the way MaxText does: next to the base yml, then one directory up.
/// The `-Instruct` suffix is stripped first (same architecture).
pub fn find_model_yml(base_yml: &Path, model_name: &str) -> Result<PathBuf, ConfigError> {
    let name = model_name.replace("-Instruct", "");
    let base_dir = base_yml.parent().unwrap_or(Path::new("."));
    let base_dir = if base_dir.as_os_str().is_empty() { Path::new(".") } else { base_dir };
    let mut tried = vec![base_dir.join("models").join(format!("{name}.yml"))];
    if let Some(up) = base_dir.parent() {
        let up = if up.as_os_str().is_empty() { Path::new(".") } else { up };
        tried.push(up.join("models").join(format!("{name}.yml")));
    }
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let mut available: Vec<String> = tried
        .iter()
        .filter_map(|p| p.parent())
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".yml")).map(str::to_string))
        .collect();
    available.sort();
    available.dedup();
    Err(ConfigError::UnknownModel { name: model_name.to_string(), tried, available })
}

/// The environment variable MaxText reads to override `key` (`M_<KEY>`).
pub fn env_key(key: &str) -> String {
    format!("M_{}", key.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let text = "a: 1\nb: [1, 2\nc: 3\n";
        let err = parse_yaml_text(text, Path::new("x.yml")).unwrap_err();
        match &err {
            ConfigError::Yaml { path, line, .. } => {
                assert_eq!(path, Path::new("x.yml"));
                assert!(*line >= 2, "{err}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn duplicate_keys_point_at_the_second() {
        let err = parse_yaml_text("a: 1\nb: 2\na: 3\n", Path::new("d.yml")).unwrap_err();
        assert!(matches!(err, ConfigError::Yaml { line: 3, .. }), "{err}");
        let err = parse_yaml_text("a: [1\n", Path::new("d.yml")).unwrap_err().to_string();
        assert_eq!(err.matches("line").count(), 1, "{err}");
    }

    #[test]
    fn key_lines() {
        let text = "# c\nfoo: 1\n\"bar\": 2\n  nested: 3\n";
        assert_eq!(find_key_line(text, "foo"), Some(2));
        assert_eq!(find_key_line(text, "bar"), Some(3));
        assert_eq!(find_key_line(text, "baz"), None);
    }

    #[test]
    fn string_keys_keep_text() {
        let s = Value::String("x".into());
        assert_eq!(parse_value_text("I love: to", Some(&s), "prompt", Origin::CommandLine).unwrap(), s_val("I love: to"));
        assert_eq!(parse_value_text("007", Some(&s), "run_name", Origin::CommandLine).unwrap(), s_val("007"));
        let n = Value::Number(1.into());
        assert_eq!(parse_value_text("5", Some(&n), "steps", Origin::CommandLine).unwrap(), Value::Number(5.into()));
        assert_eq!(parse_value_text("False", Some(&Value::Bool(true)), "k", Origin::CommandLine).unwrap(), Value::Bool(false));
    }

    fn s_val(s: &str) -> Value {
        Value::String(s.to_string())
    }
}
