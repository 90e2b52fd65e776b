//! What every subcommand starts with: the config (including an HF `config.json` when `hf_model_path` is
//! given without a model), the client, and parameters from wherever the config says.

use anyhow::{bail, Context, Result};
use maxtext::checkpoint::hf;
use maxtext::config::{self, Config};
use maxtext::nn::ParamDecl;
use maxtext::pjrt::{self, open_client, Client};
use maxtext::runtime::HostTensor;
use std::path::{Path, PathBuf};

/// The base yml: the first argument when it names a yml, else `configs/base.yml` here or in the source tree.
fn split_base(args: &[String]) -> Result<(PathBuf, Vec<String>)> {
    if let Some(first) = args.first().filter(|a| a.ends_with(".yml") || a.ends_with(".yaml")) {
        return Ok((PathBuf::from(first), args[1..].to_vec()));
    }
    let candidates = [PathBuf::from("configs/base.yml"), Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml")];
    let base = candidates.iter().find(|p| p.is_file()).context(
        "no base config given and configs/base.yml not found: pass the path of base.yml as the first argument",
    )?;
    Ok((base.clone(), args.to_vec()))
}

fn value_of<'a>(args: &'a [String], key: &str) -> Option<&'a str> {
    args.iter().rev().find_map(|a| a.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Loads the config. With `hf_model_path=DIR` and no `model_name`, the architecture comes from
/// `DIR/config.json` (placed before the command line, so explicit keys still win).
pub fn load_config(args: &[String]) -> Result<Config> {
    let (base, mut overrides) = split_base(args)?;
    if let Some(dir) = value_of(&overrides, "hf_model_path") {
        if value_of(&overrides, "model_name").is_none() {
            let mut from_hf = hf::read_config_overrides(Path::new(dir))
                .with_context(|| format!("reading the architecture from {dir}/config.json"))?;
            from_hf.append(&mut overrides);
            overrides = from_hf;
        }
    }
    Ok(Config::load(&base, &overrides)?)
}

pub fn plugin_hardware(h: config::Hardware) -> pjrt::Hardware {
    match h {
        config::Hardware::Cpu => pjrt::Hardware::Cpu,
        config::Hardware::Gpu => pjrt::Hardware::Gpu,
        config::Hardware::Tpu => pjrt::Hardware::Tpu,
    }
}

pub fn client(cfg: &Config) -> Result<Client> {
    let hw = plugin_hardware(cfg.run.hardware);
    let count = (hw == pjrt::Hardware::Cpu).then_some(cfg.run.cpu_device_count as i64);
    Ok(open_client(hw, cfg.run.pjrt_plugin_path.as_deref(), count)?)
}

/// Parameter values for `decls`, from `hf_model_path` (Orbax `load_parameters_path` lands with the
/// checkpoint issue).
pub fn load_params(cfg: &Config, decls: &[ParamDecl]) -> Result<Vec<HostTensor>> {
    if let Some(p) = cfg.raw().opt_string("load_parameters_path")?.filter(|s| !s.is_empty()) {
        bail!("load_parameters_path={p}: restoring Orbax checkpoints is not built yet; use hf_model_path=DIR");
    }
    let Some(dir) = cfg.tools.hf_model_path.as_ref() else {
        bail!("no weights given: set hf_model_path=DIR (a HuggingFace checkpoint directory)");
    };
    let _span = tracing::info_span!("load", from = %dir.display()).entered();
    Ok(hf::load_params(dir, decls, &cfg.model)?)
}

/// As [`load_params`], but with no weights configured, random weights from `init_weights_seed` (said on
/// stderr): what `decode` of a fresh tiny model uses.
pub fn load_params_or_init(cfg: &Config, decls: &[ParamDecl]) -> Result<Vec<HostTensor>> {
    let has_orbax = cfg.raw().opt_string("load_parameters_path")?.is_some_and(|s| !s.is_empty());
    if cfg.tools.hf_model_path.is_none() && !has_orbax {
        eprintln!("no weights given (hf_model_path / load_parameters_path): using random weights from init_weights_seed={}", cfg.train.init_weights_seed);
        return Ok(maxtext::runtime::init_params(decls, cfg.train.init_weights_seed));
    }
    load_params(cfg, decls)
}
