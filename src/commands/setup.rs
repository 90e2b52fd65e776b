//! What every subcommand starts with: the config (including an HF `config.json` when `hf_model_path` is
//! given without a model), the client, and parameters from wherever the config says.

use anyhow::{bail, Context, Result};
use maxtext::checkpoint::hf;
use maxtext::checkpoint::params::ModelCheckpoint;
use maxtext::compile::DiskCache;
use maxtext::config::{value_to_inline, Config, DecoderBlock, DeviceSource, Origin};
use maxtext::nn::ParamDecl;
use maxtext::pjrt::{self, open_client, parse_xla_flags, Client};
use maxtext::pjrt::Buffer;
use maxtext::runtime::Runtime;
use maxtext::storage::Location;
use maxtext::serve::Engine;
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
/// `DIR/config.json` (placed before the command line, so explicit keys still win). With
/// `load_parameters_path` / `load_full_state_path` and no explicit `scan_layers` (command line or
/// `M_SCAN_LAYERS`), `scan_layers` is taken from the checkpoint, as MaxText does, and said on stderr.
/// Refuses a decoder this program does not build (base.yml's own default is `llama2`).
pub fn load_config(args: &[String]) -> Result<Config> {
    let cfg = load_config_any_model(args)?;
    if cfg.model.decoder_block != DecoderBlock::Qwen3Next {
        bail!(
            "decoder_block={} is not built: maxtext-rs builds the Qwen3-Next decoder (decoder_block=qwen3_next); \
             pick a model with model_name=qwen3-next-80b-a3b or qwen3-next-tiny, or set hf_model_path=DIR",
            cfg.model.decoder_block
        );
    }
    Ok(cfg)
}

/// [`load_config`] for commands that build no model (`devices`): any `decoder_block` loads.
pub fn load_config_any_model(args: &[String]) -> Result<Config> {
    let (base, overrides) = config_args(args)?;
    let cfg = Config::load(&base, &overrides)?;
    let cfg = sync_scan_layers(cfg, &base, overrides)?;
    if cfg.run.log_config {
        // MaxText's pyconfig logs every key at start (`log_config: true` is its default).
        let mut lines = String::new();
        for (key, value, _) in cfg.raw().iter() {
            lines.push_str(&format!("Config param {key}: {}\n", value_to_inline(value)));
        }
        eprint!("{lines}");
    }
    Ok(cfg)
}

/// The base yml and the overrides [`load_config`] merges (with the HF `config.json` keys in front).
pub fn config_args(args: &[String]) -> Result<(PathBuf, Vec<String>)> {
    let (base, mut overrides) = split_base(args)?;
    if let Some(dir) = value_of(&overrides, "hf_model_path") {
        if value_of(&overrides, "model_name").is_none() {
            let loc = Location::parse(dir).with_context(|| format!("hf_model_path={dir}"))?;
            let local = hf::local_checkpoint_dir(&loc)?;
            let mut from_hf = hf::read_config_overrides(&local)
                .with_context(|| format!("reading the architecture from {dir}/config.json"))?;
            from_hf.append(&mut overrides);
            overrides = from_hf;
        }
    }
    Ok((base, overrides))
}

/// Whether `key` was set by the user (command line or `M_<KEY>`), not by a yml default.
pub fn is_explicit(cfg: &Config, key: &str) -> bool {
    matches!(cfg.raw().origin(key), Some(Origin::CommandLine) | Some(Origin::Env(_)))
}

/// The checkpoint a config restores from: `load_parameters_path`, else `load_full_state_path`.
pub fn restore_path(cfg: &Config) -> Option<&Location> {
    cfg.checkpoint.load_parameters_path.as_ref().or(cfg.checkpoint.load_full_state_path.as_ref())
}

fn sync_scan_layers(cfg: Config, base: &Path, mut overrides: Vec<String>) -> Result<Config> {
    let Some(path) = restore_path(&cfg) else { return Ok(cfg) };
    if is_explicit(&cfg, "scan_layers") {
        // A mismatch is reported, with the fix, when the parameters are restored.
        return Ok(cfg);
    }
    let ckpt = ModelCheckpoint::open(path).with_context(|| format!("opening checkpoint {path}"))?;
    match ckpt.scan_layers() {
        Some(scan) if scan != cfg.compute.scan_layers => {
            eprintln!(
                "checkpoint {} was written with scan_layers={scan}; using scan_layers={scan} (not given, so it follows the checkpoint, as in MaxText)",
                ckpt.dir()
            );
            overrides.push(format!("scan_layers={scan}"));
            Ok(Config::load(base, &overrides)?)
        }
        _ => Ok(cfg),
    }
}


/// Opens the plugin and fits the config to its devices: the mesh (`ici_*`/`dcn_*` with -1 filled) and
/// the global batch follow the devices the client has, as MaxText's follow `jax.devices()`.
pub fn open_runtime(cfg: Config) -> Result<(Runtime, Config)> {
    let client = client(&cfg)?;
    let n = client.addressable_devices().len();
    let all = client.devices().len();
    if all > n && super::processes::configured_count(&cfg)? <= 1 {
        // One host of a multi-host slice run as if alone would train on its own chips with the wrong data.
        bail!(
            "this host is one of a multi-host slice (the plugin sees {all} devices, {n} of them here): run the same command \
             on every host with num_processes, process_id and coordinator_address (tpu/launch.sh sets them)"
        );
    }
    let cfg = if cfg.devices.num_devices != n || cfg.devices.source == DeviceSource::Assumed {
        cfg.with_num_devices(n).context("fitting the mesh to the plugin's devices")?
    } else {
        cfg
    };
    let disk = cfg.run.jax_cache_dir.as_ref().map(DiskCache::new);
    let xla_flags = parse_xla_flags(&cfg.run.compile_xla_flags)?;
    Ok((Runtime::with_compile_settings(client, disk, xla_flags), cfg))
}

/// `devices=8 mesh fsdp=2 tensor=2 expert=2` (size-1 axes left out) for the commands' summaries.
pub fn describe_mesh(cfg: &Config) -> String {
    let axes: Vec<String> = cfg.mesh_shape.iter().flatten().filter(|(_, s)| *s > 1).map(|(a, s)| format!("{a}={s}")).collect();
    format!("{} mesh {}", cfg.devices.num_devices, if axes.is_empty() { "1".to_string() } else { axes.join(" ") })
}

pub fn client(cfg: &Config) -> Result<Client> {
    let hw = cfg.run.hardware;
    let count = (hw == pjrt::Hardware::Cpu).then_some(cfg.run.cpu_device_count as i64);
    Ok(open_client(hw, cfg.run.pjrt_plugin_path.as_deref(), count)?)
}

/// A reader of parameter boxes: `read(decl index, offsets, dims)` gives that box of the parameter in its
/// decl's dtype, row-major.
pub type ParamRegions<'a> = dyn FnMut(usize, &[i64], &[i64]) -> Result<Vec<u8>> + 'a;

/// Runs `f` with a box reader over the parameters from wherever the config says (`load_parameters_path`
/// / `load_full_state_path`, else `hf_model_path`):
/// an Orbax checkpoint (every shape checked first; only the chunks a box needs are read), HF safetensors
/// (only the rows a box needs); with neither it is an error (see [`init_on_device`] for random weights).
pub fn with_param_regions<T>(cfg: &Config, decls: &[ParamDecl], f: impl FnOnce(&mut ParamRegions) -> Result<T>) -> Result<T> {
    if let Some(path) = restore_path(cfg) {
        let _span = tracing::info_span!("load", from = %path).entered();
        let ckpt = ModelCheckpoint::open(path).with_context(|| format!("opening checkpoint {path}"))?;
        eprintln!("restoring parameters from {}", ckpt.dir());
        let sources = ckpt.plan(decls, &cfg.model)?;
        return f(&mut |i, o, d| Ok(ckpt.read_param_region(&decls[i], &sources[i], o, d)?));
    }
    if let Some(dir) = cfg.tools.hf_model_path.as_ref() {
        let _span = tracing::info_span!("load", from = %dir).entered();
        let ckpt = hf::HfCheckpoint::open(&hf::local_checkpoint_dir(dir)?)?;
        let loader = hf::ParamLoader::new(&ckpt, decls, &cfg.model)?;
        return f(&mut |i, o, d| Ok(loader.load_region(i, o, d)?));
    }
    bail!("no weights given: set load_parameters_path=DIR (an Orbax checkpoint) or hf_model_path=DIR (a HuggingFace checkpoint directory)")
}

/// Whether the config names weights to load (`load_parameters_path`, `load_full_state_path`,
/// `hf_model_path`).
pub fn has_weights(cfg: &Config) -> bool {
    restore_path(cfg).is_some() || cfg.tools.hf_model_path.is_some()
}

/// The ids of the devices (partition order) and, per parameter, its per-device buffers (taken out once).
pub type InitBuffers = (Vec<i32>, Vec<Vec<Option<Buffer>>>);

/// Random parameters computed on the devices by the `init_params` program (each device computes its own
/// shard, laid out as the parameters are): `[param][device]`, taken out by the caller, and the ids of the
/// devices in partition order.
pub fn init_on_device(rt: &Runtime, cfg: &Config, decls: &[ParamDecl]) -> Result<InitBuffers> {
    let seed = cfg.train.init_weights_seed;
    eprintln!("no weights given (hf_model_path / load_parameters_path): random weights from init_weights_seed={seed}, computed on the devices");
    let program = maxtext::program::init_program(cfg, decls, seed)?;
    let (exe, outs) = rt.run_on_device(&program)?;
    let ids = exe.addressable_devices().iter().map(|d| d.id()).collect();
    let mut per_param: Vec<Vec<Option<Buffer>>> = (0..decls.len()).map(|_| Vec::new()).collect();
    for device in outs {
        for (i, b) in device.into_iter().enumerate() {
            per_param[i].push(Some(b));
        }
    }
    Ok((ids, per_param))
}

/// Takes parameter `i`'s buffers out of an [`init_on_device`] result for an executable on `devices`.
pub fn take_init(init: &mut InitBuffers, i: usize, devices: &[maxtext::pjrt::Device]) -> Result<Vec<Buffer>> {
    let ids: Vec<i32> = devices.iter().map(|d| d.id()).collect();
    if ids != init.0 {
        bail!("the init program ran on devices {:?} but the step runs on {ids:?}", init.0);
    }
    init.1[i].iter_mut().map(|b| b.take().context("parameter buffer taken twice")).collect()
}

/// Opens the runtime and starts the serving engine with the parameters from wherever the config says
/// (shard by shard from a checkpoint, or random on the devices), queueing at most `queue_capacity`.
pub fn start_engine(cfg: Config, queue_capacity: usize) -> Result<(Engine, Config)> {
    let (rt, cfg) = open_runtime(cfg)?;
    eprintln!("devices: {}", describe_mesh(&cfg));
    let decls = maxtext::program::param_decls(&cfg);
    let engine = if has_weights(&cfg) {
        with_param_regions(&cfg, &decls, |read| {
            Ok(Engine::start(rt, &cfg, queue_capacity, |rt, p, exe, arg, i| rt.upload_arg_sharded(p, exe, arg, |o: &[i64], d: &[i64]| read(i, o, d)))?)
        })?
    } else {
        let mut init = init_on_device(&rt, &cfg, &decls)?;
        Engine::start(rt, &cfg, queue_capacity, |_, _, exe, _, i| take_init(&mut init, i, exe.addressable_devices()))?
    };
    Ok((engine, cfg))
}
