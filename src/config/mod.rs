//! Configuration, MaxText style: a base yml, then `configs/models/<model_name>.yml`, then `key=value`
//! overrides, turned into a typed [`Config`].
//!
//! Merge order and rules (MaxText's `pyconfig._initialize_pydantic`):
//! 1. Built-in defaults (`configs/base.yml`, compiled in; its keys are the set of known keys), then the base
//!    yml given on the command line and its `base_config:` parents. Every key must be known.
//! 2. `model_name` (from the command line, else the base yml; a `-Instruct` suffix is stripped) selects
//!    `<base dir>/models/<model_name>.yml`, else `<base dir>/../models/<model_name>.yml`; `default` selects none.
//! 3. A key set by both the model yml and the command line with a different value is an error unless
//!    `override_model_config=true`, in which case the command line wins.
//! 4. `logical_axis_rules` merge rule by rule: rules of the later layer replace every earlier rule with the
//!    same logical name and are appended (`override_logical_axis_rules=true` replaces the whole list).
//! 5. Final: defaults <- base yml <- model yml <- `M_<KEY>` environment <- command line.
//! 6. Typed: enums instead of strings, derived values (`emb_dim`, `learning_rate_schedule_steps`, global
//!    batch sizes, checkpoint dirs, ...), cross-key validation. The merged map stays available as [`Config::raw`].

mod error;
pub mod keys;
mod model;
mod parallelism;
mod raw;
mod sections;
mod topology;
mod types;
mod yaml;

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

pub use error::{closest, ConfigError, Conflict, Origin};
pub use model::{individual_scales, GdnConfig, ModelConfig, RopeConfig};
pub use parallelism::{
    axis_parallelism_name, fill_unspecified, MeshError, Parallelism, ParallelismConfig, PARALLELISM_NAMES,
};
pub use raw::{value_to_inline, ConfigEnum, RawConfig};
pub use sections::{
    hf_id, AttentionKernel, CheckpointConfig, ComputeConfig, DataConfig, DecodeConfig, GroupedMatmul, MoeStrategy, RunConfig, ToolConfig,
    TrainConfig,
};
pub use topology::TpuTopology;
pub use types::*;

use yaml::{Entry, Layer};

/// The built-in defaults: `configs/base.yml` as it was when the program was built.
pub const DEFAULT_BASE_YML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/base.yml"));

/// How many devices the programs run on, and where that number came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Devices {
    /// Devices in all slices.
    pub num_devices: usize,
    pub num_slices: usize,
    pub source: DeviceSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSource {
    /// `hardware=cpu`: `cpu_device_count`.
    CpuDeviceCount,
    /// `compile_topology` (AOT): devices of the named TPU slice times the slices.
    CompileTopology,
    /// gpu / tpu before the plugin was opened: 1 assumed, like MaxText without a JAX backend. Call
    /// [`Config::with_num_devices`] once the plugin reports its devices.
    Assumed,
    /// Set by [`Config::with_num_devices`].
    Runtime,
}

/// MaxText's global batch sizes (types.py `calculate_global_batch_sizes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSizes {
    pub global_batch_size_to_load: usize,
    /// `int(num_devices * per_device_batch_size) * gradient_accumulation_steps`.
    pub global_batch_size_to_train_on: usize,
    pub micro_batch_size_to_train_on: usize,
    pub global_batch_size_to_load_eval: usize,
    pub global_batch_size_to_eval_on: usize,
    pub micro_batch_size_to_eval_on: usize,
}

/// The whole typed config. Sections mirror MaxText's key groups; [`Config::raw`] has every key.
#[derive(Clone, Debug)]
pub struct Config {
    pub run: RunConfig,
    pub model: ModelConfig,
    pub compute: ComputeConfig,
    pub parallelism: ParallelismConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
    pub checkpoint: CheckpointConfig,
    pub decode: DecodeConfig,
    pub tools: ToolConfig,
    pub devices: Devices,
    /// (mesh axis, size) in `mesh_axes` order with the -1 parallelism filled; `None` until the device count
    /// is known (gpu / tpu without compile_topology: see [`Config::with_num_devices`]).
    pub mesh_shape: Option<Vec<(String, i64)>>,
    pub batch: BatchSizes,
    /// The model yml that was merged, if any.
    pub model_yml: Option<PathBuf>,
    raw: RawConfig,
}

impl Config {
    /// Loads `base_yml`, the model yml and the `key=value` overrides (and `M_<KEY>` environment overrides).
    pub fn load(base_yml: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
        Config::load_with_env(base_yml, overrides, &|k| std::env::var(k).ok())
    }

    /// `args[0]` is the base yml, the rest are `key=value` overrides (the CLI after the subcommand).
    pub fn from_args(args: &[String]) -> Result<Config, ConfigError> {
        let Some(first) = args.first() else {
            return Err(ConfigError::MissingBaseConfig { arg: String::new() });
        };
        if !(first.ends_with(".yml") || first.ends_with(".yaml")) {
            return Err(ConfigError::MissingBaseConfig { arg: first.clone() });
        }
        Config::load(Path::new(first), &args[1..])
    }

    /// [`Config::load`] with an explicit environment lookup (for tests).
    pub fn load_with_env(
        base_yml: &Path,
        overrides: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (raw, model_yml) = merge(base_yml, overrides, env)?;
        let mut cfg = Config::from_raw(raw)?;
        cfg.model_yml = model_yml;
        Ok(cfg)
    }

    /// The built-in defaults alone (no files, no model): for tests and tools.
    pub fn defaults() -> RawConfig {
        builtin_defaults().clone()
    }

    /// Types a merged map: enums, derived values and validation.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        keys::check_supported(&raw, builtin_defaults())?;
        let run = RunConfig::from_raw(&raw)?;
        let compute = ComputeConfig::from_raw(&raw)?;
        let model = ModelConfig::from_raw(&raw)?;
        let train = TrainConfig::from_raw(&raw, compute.weight_dtype)?;
        let checkpoint = CheckpointConfig::from_raw(&raw, &run)?;
        let data = DataConfig::from_raw(&raw)?;
        let devices = initial_devices(&run, raw.i64("num_slices")?)?;
        let batch = batch_sizes(&data, &train, devices.num_devices);
        let mut cfg = Config {
            parallelism: ParallelismConfig::from_raw(&raw)?,
            mesh_shape: None,
            decode: DecodeConfig::from_raw(&raw)?,
            tools: ToolConfig::from_raw(&raw)?,
            run,
            model,
            compute,
            data,
            train,
            checkpoint,
            devices,
            batch,
            model_yml: None,
            raw,
        };
        cfg.validate()?;
        if cfg.devices.source != DeviceSource::Assumed {
            cfg.mesh_shape = Some(cfg.parallelism.mesh_shape(cfg.devices_per_slice(), cfg.devices.num_slices)?);
        }
        Ok(cfg)
    }

    /// Sets the device count the runtime found (gpu / tpu), recomputing the batch sizes and the mesh shape.
    pub fn with_num_devices(mut self, num_devices: usize) -> Result<Config, ConfigError> {
        self.devices.num_devices = num_devices.max(1);
        self.devices.source = DeviceSource::Runtime;
        self.batch = batch_sizes(&self.data, &self.train, self.devices.num_devices);
        self.mesh_shape = Some(self.parallelism.mesh_shape(self.devices_per_slice(), self.devices.num_slices)?);
        Ok(self)
    }

    /// Every key with its merged value and origin, in base.yml order.
    pub fn raw(&self) -> &RawConfig {
        &self.raw
    }

    /// A key's merged value (for keys without a typed field yet).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.raw.value(key)
    }

    /// The parsed `compile_topology`, if set.
    pub fn compile_topology(&self) -> Result<Option<TpuTopology>, ConfigError> {
        self.run.compile_topology.as_deref().map(TpuTopology::parse).transpose()
    }

    /// Devices per slice (the target of the `ici_*` product).
    pub fn devices_per_slice(&self) -> usize {
        (self.devices.num_devices / self.devices.num_slices.max(1)).max(1)
    }

    /// Cross-section checks that need more than one section.
    fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.model;
        if m.is_hybrid_linear_attention()
            && self.compute.scan_layers
            && m.num_decoder_layers % m.inhomogeneous_layer_cycle_interval != 0
        {
            return Err(ConfigError::Invalid(format!(
                "with scan_layers=true, base_num_decoder_layers={} must be a multiple of \
                 inhomogeneous_layer_cycle_interval={} (layers are scanned in blocks of that many); \
                 or set scan_layers=false",
                m.num_decoder_layers, m.inhomogeneous_layer_cycle_interval
            )));
        }
        if self.data.max_prefill_predict_length > self.data.max_target_length {
            return Err(ConfigError::Invalid(format!(
                "max_prefill_predict_length={} exceeds max_target_length={}",
                self.data.max_prefill_predict_length, self.data.max_target_length
            )));
        }
        let dcn_product: i64 = self.parallelism.dcn.values.iter().map(|(_, v)| *v).product();
        if dcn_product.abs() > 1 && self.devices.num_slices <= 1 {
            return Err(ConfigError::Invalid(format!(
                "DCN parallelism requested ({}) but there is only one slice; use the ici_* keys \
                 (or set compile_topology_num_slices / num_slices)",
                self.parallelism
                    .dcn
                    .values
                    .iter()
                    .filter(|(_, v)| *v > 1)
                    .map(|(n, v)| format!("dcn_{n}_parallelism={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }
}

fn initial_devices(run: &RunConfig, num_slices_key: i64) -> Result<Devices, ConfigError> {
    if let Some(name) = &run.compile_topology {
        let topo = TpuTopology::parse(name)?;
        let slices = if run.compile_topology_num_slices > 0 { run.compile_topology_num_slices as usize } else { 1 };
        return Ok(Devices {
            num_devices: topo.devices_per_slice * slices,
            num_slices: slices,
            source: DeviceSource::CompileTopology,
        });
    }
    let num_slices = if num_slices_key > 0 { num_slices_key as usize } else { 1 };
    Ok(match run.hardware {
        Hardware::Cpu => Devices {
            num_devices: run.cpu_device_count * num_slices,
            num_slices,
            source: DeviceSource::CpuDeviceCount,
        },
        Hardware::Gpu | Hardware::Tpu => Devices { num_devices: num_slices, num_slices, source: DeviceSource::Assumed },
    })
}

/// MaxText's `calculate_global_batch_sizes` for training and eval.
fn batch_sizes(data: &DataConfig, train: &TrainConfig, num_devices: usize) -> BatchSizes {
    let calc = |per_device: f64, accum: usize| {
        let n = num_devices as f64;
        let expansion = if data.expansion_factor_real_data > 0.0 { data.expansion_factor_real_data } else { 1.0 };
        let micro_load = if per_device < 1.0 { n * expansion } else { (n * per_device * expansion).trunc() };
        let micro_train = (n * per_device).trunc() as usize;
        ((micro_load as usize) * accum, micro_train * accum, micro_train)
    };
    let (load, train_on, micro) = calc(data.per_device_batch_size, train.gradient_accumulation_steps);
    let (load_e, eval_on, micro_e) = calc(data.eval_per_device_batch_size, 1);
    BatchSizes {
        global_batch_size_to_load: load,
        global_batch_size_to_train_on: train_on,
        micro_batch_size_to_train_on: micro,
        global_batch_size_to_load_eval: load_e,
        global_batch_size_to_eval_on: eval_on,
        micro_batch_size_to_eval_on: micro_e,
    }
}

/// The built-in defaults, parsed once per process (every config load reads them twice: to merge and to
/// check the key table).
fn builtin_defaults() -> &'static RawConfig {
    static DEFAULTS: std::sync::OnceLock<RawConfig> = std::sync::OnceLock::new();
    DEFAULTS.get_or_init(parse_defaults)
}

fn parse_defaults() -> RawConfig {
    let layer = yaml::parse_yaml_text(DEFAULT_BASE_YML, Path::new("configs/base.yml (built in)"))
        .expect("the built-in configs/base.yml must parse");
    let mut raw = RawConfig::new();
    for e in layer {
        raw.set(&e.key, e.value, Origin::Default);
    }
    raw
}

fn apply(raw: &mut RawConfig, layer: &Layer) {
    for e in layer {
        raw.set(&e.key, e.value.clone(), e.origin.clone());
    }
}

/// Like [`apply`], but a base-yml value equal to the built-in default keeps `Origin::Default`, so the
/// printed config only annotates what differs from configs/base.yml.
fn apply_base(raw: &mut RawConfig, layer: &Layer) {
    for e in layer {
        if raw.value(&e.key) != Some(&e.value) {
            raw.set(&e.key, e.value.clone(), e.origin.clone());
        }
    }
}

fn find<'a>(layer: &'a Layer, key: &str) -> Option<&'a Entry> {
    layer.iter().rev().find(|e| e.key == key)
}

fn layer_bool(layer: &Layer, key: &str) -> bool {
    find(layer, key).is_some_and(|e| match &e.value {
        Value::Bool(b) => *b,
        Value::String(s) => raw::parse_bool(s) == Some(true),
        _ => false,
    })
}

/// The rules a layer sets, parsed (a malformed rule list is reported when the merged map is typed).
fn layer_rules(layer: &Layer) -> Option<(Vec<Value>, Origin)> {
    let e = find(layer, "logical_axis_rules")?;
    match &e.value {
        Value::Sequence(rules) => Some((rules.clone(), e.origin.clone())),
        _ => None,
    }
}

fn rule_name(rule: &Value) -> Option<String> {
    raw::parse_rule(rule).map(|(n, _)| n)
}

/// MaxText's `_merge_logical_axis_rules`: new rules replace every old rule with the same name, appended.
fn merge_rules(base: Vec<Value>, new: Vec<Value>, replace_all: bool) -> Vec<Value> {
    if replace_all {
        return new;
    }
    if new.is_empty() {
        return base;
    }
    let names: Vec<Option<String>> = new.iter().map(rule_name).collect();
    let mut merged: Vec<Value> = base.into_iter().filter(|r| !names.contains(&rule_name(r))).collect();
    merged.extend(new);
    merged
}

/// Steps 1-5 of the module docs: the merged raw map and the model yml used.
fn merge(
    base_yml: &Path,
    overrides: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(RawConfig, Option<PathBuf>), ConfigError> {
    let defaults = builtin_defaults();
    let base_layer = yaml::load_chain(base_yml)?;
    for e in &base_layer {
        yaml::check_known(&e.key, defaults, e.origin.clone())?;
    }
    let cli = yaml::parse_overrides(overrides, defaults)?;

    let mut temp = defaults.clone();
    apply_base(&mut temp, &base_layer);
    apply(&mut temp, &cli);
    let model_name = temp.string("model_name")?;
    let override_model = temp.bool("override_model_config")?;

    let (mut model_layer, model_yml) = if model_name == "default" || model_name.is_empty() {
        (Vec::new(), None)
    } else {
        let path = yaml::find_model_yml(base_yml, &model_name)?;
        let layer = yaml::read_yaml_file(&path)?;
        for e in &layer {
            yaml::check_known(&e.key, defaults, e.origin.clone())?;
        }
        (layer, Some(path))
    };
    if override_model {
        model_layer.retain(|e| find(&cli, &e.key).is_none());
    } else if let Some(path) = &model_yml {
        let conflicts: Vec<Conflict> = model_layer
            .iter()
            .filter_map(|m| {
                let c = find(&cli, &m.key)?;
                (!raw::values_equal(&m.value, &c.value)).then(|| Conflict {
                    key: m.key.clone(),
                    model_value: value_to_inline(&m.value),
                    cli_value: value_to_inline(&c.value),
                })
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(ConfigError::ModelOverride { conflicts, model_file: path.clone() });
        }
    }

    // Logical axis rules: base (defaults <- base chain) <- model <- command line, rule by rule.
    let mut base_only = defaults.clone();
    apply_base(&mut base_only, &base_layer);
    let base_rules = match base_only.value("logical_axis_rules") {
        Some(Value::Sequence(r)) => r.clone(),
        _ => Vec::new(),
    };
    let mut rules = base_rules;
    let mut rules_origin = base_only.origin("logical_axis_rules").cloned().unwrap_or(Origin::Default);
    for layer in [&model_layer, &cli] {
        if let Some((new, origin)) = layer_rules(layer) {
            rules = merge_rules(rules, new, layer_bool(layer, "override_logical_axis_rules"));
            rules_origin = origin;
        }
    }

    let mut merged = defaults.clone();
    apply_base(&mut merged, &base_layer);
    apply(&mut merged, &model_layer);
    apply_env(&mut merged, &cli, &model_layer, model_yml.as_deref(), override_model, env)?;
    apply(&mut merged, &cli);
    merged.set("logical_axis_rules", Value::Sequence(rules), rules_origin);
    Ok((merged, model_yml))
}

/// MaxText's `M_<KEY>` environment overrides: parsed with the type of the current value; an error when the
/// same key is on the command line, or in the model yml without override_model_config.
fn apply_env(
    merged: &mut RawConfig,
    cli: &Layer,
    model_layer: &Layer,
    model_yml: Option<&Path>,
    override_model: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let keys: Vec<String> = merged.keys().map(str::to_string).collect();
    for key in keys {
        let var = yaml::env_key(&key);
        let Some(text) = env(&var) else { continue };
        if find(cli, &key).is_some() {
            return Err(ConfigError::EnvConflict { key, env: var });
        }
        if !override_model && find(model_layer, &key).is_some() {
            return Err(ConfigError::EnvModelConflict {
                key,
                env: var,
                model_file: model_yml.map(Path::to_path_buf).unwrap_or_default(),
            });
        }
        let origin = Origin::Env(var);
        let value = yaml::parse_value_text(&text, merged.value(&key), &key, origin.clone())?;
        merged.set(&key, value, origin);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_type_check() {
        let cfg = Config::from_raw(parse_defaults()).expect("built-in defaults must be a valid config");
        assert_eq!(cfg.data.per_device_batch_size, 12.0);
        assert_eq!(cfg.train.learning_rate_schedule_steps, 150_001);
        assert_eq!(cfg.compute.weight_dtype, crate::ir::DType::F32);
        assert_eq!(cfg.train.mu_dtype, crate::ir::DType::F32);
        assert_eq!(cfg.parallelism.mesh_axes.len(), 12);
        assert_eq!(cfg.parallelism.ici.get("fsdp"), -1);
        assert_eq!(cfg.batch.global_batch_size_to_train_on, 12);
    }

    #[test]
    fn rule_merge_replaces_by_name() {
        let v = |s: &str| serde_yaml_ng::from_str::<Value>(s).unwrap();
        let base = vec![v("[embed, [fsdp]]"), v("[mlp, [tensor]]"), v("[embed, [data]]")];
        let merged = merge_rules(base.clone(), vec![v("[embed, [expert]]")], false);
        assert_eq!(merged, vec![v("[mlp, [tensor]]"), v("[embed, [expert]]")]);
        assert_eq!(merge_rules(base.clone(), vec![], false), base);
        assert_eq!(merge_rules(base, vec![v("[x, []]")], true), vec![v("[x, []]")]);
    }

    #[test]
    fn batch_sizes_follow_maxtext() {
        let mut cfg = Config::from_raw(parse_defaults()).unwrap();
        cfg.data.per_device_batch_size = 0.5;
        cfg.train.gradient_accumulation_steps = 2;
        let b = batch_sizes(&cfg.data, &cfg.train, 4);
        assert_eq!((b.global_batch_size_to_load, b.global_batch_size_to_train_on, b.micro_batch_size_to_train_on), (8, 4, 2));
    }
}
