//! Config errors: each says which key, which file or argument, and what to do about it.

use std::fmt;
use std::path::PathBuf;

/// Where a config value came from, for error messages and for printing the config.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// The built-in defaults (`configs/base.yml` compiled into the binary).
    Default,
    /// A yml file, with the line of the key when it could be found.
    File { path: PathBuf, line: Option<usize> },
    /// A `key=value` command-line argument.
    CommandLine,
    /// An `M_<KEY>` environment variable (MaxText's env overrides).
    Env(String),
    /// Computed from other keys after merging.
    Derived,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File { path, line: Some(line) } => write!(f, "{}:{}", path.display(), line),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::CommandLine => f.write_str("command line"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Derived => f.write_str("derived"),
        }
    }
}

/// One key set differently by the model yml and the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    pub key: String,
    pub model_value: String,
    pub cli_value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("malformed YAML in {}, line {line}, column {column}: {message}", path.display())]
    Yaml { path: PathBuf, line: usize, column: usize, message: String },

    #[error("{}: the top level must be a mapping of `key: value` lines, found {found}", path.display())]
    NotAMapping { path: PathBuf, found: String },

    #[error("{}", unknown_key_message(key, origin, suggestion.as_deref()))]
    UnknownKey { key: String, origin: Origin, suggestion: Option<String> },

    #[error("argument `{arg}` is not of the form key=value (e.g. per_device_batch_size=1)")]
    NotKeyValue { arg: String },

    #[error("expected the base config .yml file as the first argument (e.g. configs/base.yml), got `{arg}`")]
    MissingBaseConfig { arg: String },

    #[error("{}", conflict_message(conflicts, model_file))]
    ModelOverride { conflicts: Vec<Conflict>, model_file: PathBuf },

    #[error("key `{key}` is set both on the command line and by environment variable {env}; set it in one place only")]
    EnvConflict { key: String, env: String },

    #[error("key `{key}` is set both by the model config {} and by environment variable {env}; \
             set override_model_config=true to let the environment win", model_file.display())]
    EnvModelConflict { key: String, env: String, model_file: PathBuf },

    #[error("bad value for `{key}` ({origin}): expected {expected}, got `{value}`")]
    BadValue { key: String, value: String, expected: String, origin: Origin },

    #[error("{}", unknown_model_message(name, tried, available))]
    UnknownModel { name: String, tried: Vec<PathBuf>, available: Vec<String> },

    #[error("base_config chain loops back to {}", path.display())]
    BaseConfigCycle { path: PathBuf },

    /// The parallelism keys do not fit the device count.
    #[error(transparent)]
    Mesh(#[from] super::parallelism::MeshError),

    /// A value this program does not build (see `config::keys`).
    #[error("`{key}={value}` ({origin}) is not supported by maxtext-rs: {note}; supported: {supported} \
             (see the README's table of config keys)")]
    NotBuilt { key: &'static str, value: String, supported: String, note: &'static str, origin: Origin },

    /// A cross-key constraint failed; the message names the keys and their values.
    #[error("invalid config: {0}")]
    Invalid(String),
}

fn unknown_key_message(key: &str, origin: &Origin, suggestion: Option<&str>) -> String {
    let mut msg = format!("unknown config key `{key}` ({origin})");
    match suggestion {
        Some(s) => msg.push_str(&format!("; did you mean `{s}`?")),
        None => msg.push_str("; see configs/base.yml for the known keys"),
    }
    msg
}

fn conflict_message(conflicts: &[Conflict], model_file: &std::path::Path) -> String {
    let keys: Vec<String> = conflicts.iter().map(|c| format!("`{}`", c.key)).collect();
    let details: Vec<String> = conflicts
        .iter()
        .map(|c| format!("{}: model {} vs command line {}", c.key, c.model_value, c.cli_value))
        .collect();
    let noun = if conflicts.len() == 1 { "key" } else { "keys" };
    let verb = if conflicts.len() == 1 { "is" } else { "are" };
    format!(
        "{noun} {} {verb} set both by the model config {} and on the command line with different values ({}); \
         this is not allowed unless override_model_config=true",
        keys.join(", "),
        model_file.display(),
        details.join("; ")
    )
}

fn unknown_model_message(name: &str, tried: &[PathBuf], available: &[String]) -> String {
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    let mut msg = format!("model_name={name}: no model config found (looked for {})", tried.join(", "));
    if let Some(s) = closest(name, available.iter().map(String::as_str)) {
        msg.push_str(&format!("; did you mean `{s}`?"));
    }
    if !available.is_empty() {
        msg.push_str(&format!(" Available: {}", available.join(", ")));
    }
    msg
}

/// The candidate closest to `word` (normalized Damerau-Levenshtein), if it is plausibly a typo of it.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::normalized_damerau_levenshtein(word, c);
        if best.map_or(true, |(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.filter(|(score, _)| *score >= 0.6).map(|(_, c)| c.to_string())
}
