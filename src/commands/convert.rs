//! `maxtext convert`: MaxText's `to_maxtext` (a HuggingFace checkpoint -> Orbax `<base_output_directory>/0/items`
//! in MaxText's layout) and, with `direction=to_hf`, back (an Orbax checkpoint -> HF safetensors + config.json).
//!
//! Both directions stream one stacked parameter at a time: the HF files are memory-mapped and released
//! tensor by tensor, each parameter is assembled, written (compressed) and dropped before the next, so the
//! peak memory is about the largest stacked parameter, not the model. Progress (tensors, bytes, MB/s) goes to
//! stderr; the result line to stdout.

use super::setup::{config_args, is_explicit, load_config, restore_path};
use anyhow::{bail, Context, Result};
use maxtext::checkpoint::hf::{self, HfCheckpoint, ParamLoader};
use super::processes::join_processes;
use maxtext::checkpoint::orbax::{parse_dotted, CheckpointWriter};
use maxtext::checkpoint::params::{leaf_name, leaf_source, write_options, ModelCheckpoint};
use maxtext::config::Config;
use maxtext::nn::ParamDecl;
use maxtext::runtime::HostTensor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Keys only `convert` takes; removed before the config is merged.
const DIRECTION: &str = "direction";

/// Smallest HF shard written by `to_hf` (parameters are grouped into shards of at least this size, or of the
/// largest parameter when that is bigger).
const MIN_SHARD_BYTES: u64 = 256 << 20;

pub fn run(args: &[String]) -> Result<()> {
    let direction = args.iter().rev().find_map(|a| a.strip_prefix(DIRECTION)?.strip_prefix('=')).map(str::to_string);
    let rest: Vec<String> = args.iter().filter(|a| !a.starts_with(&format!("{DIRECTION}="))).cloned().collect();
    match direction.as_deref().unwrap_or("to_maxtext") {
        "to_maxtext" => to_maxtext(&rest),
        "to_hf" => to_hf(&rest),
        other => bail!("direction={other}: use to_maxtext (HF -> Orbax, the default) or to_hf (Orbax -> HF)"),
    }
}

/// Throttled progress lines on stderr: parameters, bytes, rate.
struct Progress {
    start: Instant,
    last: Instant,
    total_tensors: usize,
    total_bytes: u64,
    tensors: usize,
    bytes: u64,
}

impl Progress {
    fn new(total_tensors: usize, total_bytes: u64) -> Progress {
        let now = Instant::now();
        Progress { start: now, last: now, total_tensors, total_bytes, tensors: 0, bytes: 0 }
    }

    fn rate(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    fn done(&mut self, name: &str, bytes: u64) {
        self.tensors += 1;
        self.bytes += bytes;
        let last = self.tensors == self.total_tensors;
        if last || self.last.elapsed() >= Duration::from_millis(500) || self.tensors == 1 {
            self.last = Instant::now();
            eprintln!(
                "convert: {}/{} tensors, {:.1}/{:.1} MB, {:.1} MB/s  ({name})",
                self.tensors,
                self.total_tensors,
                self.bytes as f64 / 1e6,
                self.total_bytes as f64 / 1e6,
                self.rate()
            );
        }
    }
}

/// Process `index`'s share of an array of `dims` among `count` processes: the shard shape (the first
/// dimension that `count` divides, cut `count` ways; the whole array when none does) and, if this process
/// writes a shard, its offsets (process 0 writes an array that is not cut).
fn process_share(dims: &[i64], index: usize, count: usize) -> (Vec<i64>, Option<Vec<i64>>) {
    let mut shard = dims.to_vec();
    let mut offsets = vec![0; dims.len()];
    match dims.iter().position(|d| *d >= count as i64 && d % count as i64 == 0) {
        Some(axis) => {
            shard[axis] /= count as i64;
            offsets[axis] = shard[axis] * index as i64;
            (shard, Some(offsets))
        }
        None => (shard, (index == 0).then_some(offsets)),
    }
}

fn decl_bytes(d: &ParamDecl) -> u64 {
    d.num_elements() as u64 * d.dtype.size_bytes() as u64
}

/// HF -> Orbax (`<base_output_directory>/0/items`), in `weight_dtype` (bfloat16 unless given, as MaxText's
/// `to_maxtext`) and the configured `scan_layers` layout.
fn to_maxtext(args: &[String]) -> Result<()> {
    let (base, mut overrides) = config_args(args)?;
    let mut cfg = Config::load(&base, &overrides)?;
    let Some(hf_dir) = cfg.tools.hf_model_path.clone() else {
        bail!("set hf_model_path=DIR (a HuggingFace checkpoint directory with config.json and safetensors)");
    };
    if !is_explicit(&cfg, "weight_dtype") {
        eprintln!("weight_dtype not given: converting to bfloat16 (MaxText's to_maxtext default; pass weight_dtype=float32 to keep float32)");
        overrides.push("weight_dtype=bfloat16".into());
        cfg = Config::load(&base, &overrides)?;
    }
    let root = cfg.run.base_output_directory.clone();
    if !is_explicit(&cfg, "base_output_directory") {
        eprintln!("base_output_directory not given: writing under {root}");
    }
    let step_dir = root.join("0");
    if step_dir.is_dir()? || step_dir.is_file()? {
        bail!("{step_dir} already exists; refusing to overwrite a checkpoint (remove it, or set another base_output_directory)");
    }
    let scan_layers = cfg.compute.scan_layers;
    let decls = maxtext::program::param_decls(&cfg);
    let ckpt = HfCheckpoint::open(&maxtext::checkpoint::hf::local_checkpoint_dir(&hf_dir)?)?;
    let loader = ParamLoader::new(&ckpt, &decls, &cfg.model)?;
    let total: u64 = decls.iter().map(decl_bytes).sum();
    let largest = decls.iter().max_by_key(|d| decl_bytes(d)).context("the model declares no parameters")?;
    eprintln!(
        "convert: {} -> {} ({} parameters, {:.1} MB as {}, scan_layers={scan_layers}; largest {} {:?} = {:.1} MB)",
        hf_dir,
        step_dir.join("items"),
        decls.len(),
        total as f64 / 1e6,
        cfg.compute.weight_dtype,
        largest.path,
        largest.dims,
        decl_bytes(largest) as f64 / 1e6
    );
    let group = join_processes(&cfg)?;
    let mut progress = Progress::new(decls.len(), total);
    let dir = if group.count() == 1 {
        let mut writer = CheckpointWriter::create(&root, 0, write_options(scan_layers))?;
        for (i, decl) in decls.iter().enumerate() {
            let t = loader.load(i)?;
            writer.add(&leaf_name(&decl.path), &t)?;
            progress.done(&decl.path, t.data.len() as u64);
        }
        writer.finish()?
    } else {
        // Each process reads and writes its share of every parameter; process 0 merges and commits.
        let (index, count) = (group.index(), group.count());
        let mut writer = CheckpointWriter::create_shared(&root, 0, write_options(scan_layers), group)?;
        for (i, decl) in decls.iter().enumerate() {
            let (shard_dims, mine) = process_share(&decl.dims, index, count);
            let array = writer.begin_array(parse_dotted(&leaf_name(&decl.path))?, decl.dtype, &decl.dims, &shard_dims, None)?;
            let mut bytes = 0;
            if let Some(offsets) = mine {
                let data = loader.load_region(i, &offsets, &shard_dims)?;
                bytes = data.len() as u64;
                writer.put_shard(&array, &offsets, &data)?;
            }
            writer.end_array(array)?;
            progress.done(&decl.path, bytes);
        }
        writer.finish()?
    };
    println!(
        "wrote {}: {} arrays, {:.1} MB ({}, scan_layers={scan_layers}) in {:.1} s, {:.1} MB/s{}",
        dir.join("items"),
        decls.len(),
        total as f64 / 1e6,
        cfg.compute.weight_dtype,
        progress.start.elapsed().as_secs_f64(),
        progress.rate(),
        peak_rss_mb().map_or(String::new(), |mb| format!(", peak RSS {mb:.0} MB"))
    );
    Ok(())
}

/// Orbax -> HF: `load_parameters_path` (or `load_full_state_path`) -> `out_dir` (else
/// `base_output_directory`): safetensors (one file, or shards + `model.safetensors.index.json`) and
/// `config.json`. Each tensor keeps the checkpoint's dtype unless `weight_dtype` is given.
fn to_hf(args: &[String]) -> Result<()> {
    let cfg = load_config(args)?;
    let Some(src) = restore_path(&cfg).cloned() else {
        bail!("direction=to_hf needs load_parameters_path=DIR (the Orbax checkpoint to export)");
    };
    let out = match (&cfg.run.out_dir, &cfg.run.base_output_directory) {
        (Some(d), _) => d.clone(),
        (None, base) => base.as_local().map(Path::to_path_buf).with_context(|| {
            format!("direction=to_hf writes a local HF directory; base_output_directory={base} is not local: set out_dir=DIR (then copy it with `gcloud storage cp -r`)")
        })?,
    };
    for f in ["config.json", "model.safetensors", "model.safetensors.index.json"] {
        if out.join(f).exists() {
            bail!("{} already exists; refusing to overwrite an HF checkpoint (remove it, or set another out_dir)", out.join(f).display());
        }
    }
    let ckpt = ModelCheckpoint::open(&src)?;
    let mut decls = maxtext::program::param_decls(&cfg);
    if !is_explicit(&cfg, "weight_dtype") {
        // Lossless: every tensor in the dtype it is stored in.
        for d in &mut decls {
            let src = leaf_source(d, ckpt.layout(), cfg.model.inhomogeneous_layer_cycle_interval);
            if let Some(h) = src.leaves().first().and_then(|l| ckpt.orbax().leaf(l)).and_then(|l| l.dtype?.to_host()) {
                d.dtype = h;
            }
        }
    }
    let shards = plan_shards(&decls);
    let tmp = temp_sibling(&out);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = write_hf(&cfg, &ckpt, &decls, &shards, &tmp).and_then(|()| move_into(&tmp, &out));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    println!("wrote {} ({} shard file(s) + config.json) from {}", out.display(), shards.iter().max().map_or(0, |s| s + 1), ckpt.dir());
    Ok(())
}

/// The shard of each decl: consecutive decls grouped up to max(largest decl, MIN_SHARD_BYTES) bytes.
fn plan_shards(decls: &[ParamDecl]) -> Vec<usize> {
    let limit = decls.iter().map(decl_bytes).max().unwrap_or(0).max(MIN_SHARD_BYTES);
    let (mut shard, mut filled) = (0, 0u64);
    decls
        .iter()
        .map(|d| {
            if filled > 0 && filled + decl_bytes(d) > limit {
                shard += 1;
                filled = 0;
            }
            filled += decl_bytes(d);
            shard
        })
        .collect()
}

fn shard_name(shard: usize, count: usize) -> String {
    if count == 1 {
        "model.safetensors".into()
    } else {
        format!("model-{:05}-of-{:05}.safetensors", shard + 1, count)
    }
}

fn write_hf(cfg: &Config, ckpt: &ModelCheckpoint, decls: &[ParamDecl], shards: &[usize], dir: &Path) -> Result<()> {
    let count = shards.iter().max().map_or(0, |s| s + 1);
    let total: u64 = decls.iter().map(decl_bytes).sum();
    let mut progress = Progress::new(decls.len(), total);
    let mut pending: Vec<(String, HostTensor)> = Vec::new();
    let mut weight_map = serde_json::Map::new();
    let mut write_shard = |pending: &mut Vec<(String, HostTensor)>, shard: usize| -> Result<()> {
        let name = shard_name(shard, count);
        for (t, _) in pending.iter() {
            weight_map.insert(t.clone(), serde_json::Value::String(name.clone()));
        }
        hf::write_safetensors(&dir.join(&name), pending)?;
        pending.clear();
        Ok(())
    };
    ckpt.restore_params_each(decls, &cfg.model, |i, t| -> Result<()> {
        let bytes = t.data.len() as u64;
        pending.extend(hf::hf_tensors_for(&decls[i..=i], &[t], &cfg.model)?);
        progress.done(&decls[i].path, bytes);
        if i + 1 == decls.len() || shards[i + 1] != shards[i] {
            write_shard(&mut pending, shards[i])?;
        }
        Ok(())
    })?;
    if count > 1 {
        let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index)?)?;
    }
    let dtype = decls.iter().find(|d| d.path == "token_embedder/embedding").map_or(cfg.compute.weight_dtype, |d| d.dtype);
    let config = hf::config_json(&cfg.model, dtype);
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    Ok(())
}

/// `<parent>/.<name>.maxtext-convert-tmp-<pid>`: files are written here, then moved into `out`.
fn temp_sibling(out: &Path) -> PathBuf {
    let name = out.file_name().map_or("out".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".{name}.maxtext-convert-tmp-{}", std::process::id()))
}

fn move_into(tmp: &Path, out: &Path) -> Result<()> {
    if !out.exists() {
        std::fs::rename(tmp, out).with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        return Ok(());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(tmp)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    // config.json last: a directory with config.json has all its weights.
    files.sort_by_key(|p| p.file_name().is_some_and(|n| n == "config.json"));
    for f in files {
        let dest = out.join(f.file_name().unwrap());
        std::fs::rename(&f, &dest).with_context(|| format!("moving {} to {}", f.display(), dest.display()))?;
    }
    std::fs::remove_dir(tmp)?;
    Ok(())
}

/// This process's peak resident set (Linux `VmHWM`), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1e3)
}
