//! Finding the PJRT plugin for a kind of hardware; fetching the CPU plugin once with pip.
//!
//! Order: an explicit path (config `pjrt_plugin_path`), then env `PJRT_PLUGIN_PATH`, then per hardware:
//! - tpu: env `TPU_LIBRARY_PATH`, then `libtpu/libtpu.so` of the `libtpu` Python package, then the one
//!   `scripts/setup_libtpu.sh` installs into the cache directory (`libtpu-<LIBTPU_VERSION>`; libtpu may
//!   not be redistributed, so it is never fetched behind the user's back);
//! - gpu: `jax_plugins/xla_cuda13/xla_cuda_plugin.so` (`jax-cuda13-pjrt`), then `xla_cuda12`;
//! - cpu: `xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so` of an installed `xla-cpu-pjrt`, then the cache
//!   directory ([`cpu_plugin_cache_dir`]), where it is fetched once with pip when absent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::error::{Error, Result};

/// The pip package and version of the CPU plugin fetched on demand.
pub const CPU_PLUGIN_PACKAGE: &str = "xla-cpu-pjrt";
pub const CPU_PLUGIN_VERSION: &str = "0.0.1";
/// The libtpu version `scripts/setup_libtpu.sh` installs by default (the one MaxText 0.2.5's figures in
/// the TPU issue were compiled with).
pub const LIBTPU_VERSION: &str = "0.0.50.1";
/// Path of the CPU plugin inside its package's install tree.
const CPU_PLUGIN_REL: &str = "xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so";

/// Which plugin to load: the config's `hardware` key.
pub use crate::config::Hardware;

/// Finds the plugin for `hardware`; `explicit` is the config key `pjrt_plugin_path`.
pub fn locate_plugin(hardware: Hardware, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return existing_file(p, "pjrt_plugin_path");
    }
    if let Some(p) = env_path("PJRT_PLUGIN_PATH") {
        return existing_file(&p, "PJRT_PLUGIN_PATH");
    }
    match hardware {
        Hardware::Tpu => locate_tpu(),
        Hardware::Gpu => locate_gpu(),
        Hardware::Cpu => locate_cpu(),
    }
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn existing_file(p: &Path, source: &str) -> Result<PathBuf> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(p.to_path_buf()),
        Ok(_) => Err(Error::PluginNotFound(format!("{source} = {} is not a file", p.display()))),
        Err(e) => Err(Error::PluginNotFound(format!("{source} = {}: {e}", p.display()))),
    }
}

/// Python's site-packages and `sys.path` directories (empty without a working `python3`).
pub fn python_site_dirs() -> &'static [PathBuf] {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let script = "import site, sys\n\
                      p = []\n\
                      try: p += site.getsitepackages()\n\
                      except Exception: pass\n\
                      try: p.append(site.getusersitepackages())\n\
                      except Exception: pass\n\
                      p += sys.path\n\
                      print('\\n'.join(x for x in p if x))\n";
        let Ok(out) = Command::new("python3").arg("-c").arg(script).output() else {
            return Vec::new();
        };
        if !out.status.success() {
            return Vec::new();
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let p = PathBuf::from(line.trim());
            if p.is_dir() && !dirs.contains(&p) {
                dirs.push(p);
            }
        }
        dirs
    })
}

fn find_in_site(rel: &str) -> Option<PathBuf> {
    python_site_dirs().iter().map(|d| d.join(rel)).find(|p| p.is_file())
}

fn site_list() -> String {
    let dirs = python_site_dirs();
    if dirs.is_empty() {
        "no python3 site-packages found".to_string()
    } else {
        format!("searched {}", dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "))
    }
}

fn locate_tpu() -> Result<PathBuf> {
    if let Some(p) = env_path("TPU_LIBRARY_PATH") {
        return existing_file(&p, "TPU_LIBRARY_PATH");
    }
    if let Some(p) = find_in_site("libtpu/libtpu.so") {
        return Ok(p);
    }
    let cached = cache_root().map(|r| r.join(format!("libtpu-{LIBTPU_VERSION}")).join("libtpu/libtpu.so"));
    if let Ok(p) = &cached {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    Err(Error::PluginNotFound(format!(
        "no TPU plugin (libtpu): run scripts/setup_libtpu.sh (pip installs libtpu=={LIBTPU_VERSION} into {}), or \
         `pip install libtpu`, or set the config key pjrt_plugin_path (or env PJRT_PLUGIN_PATH or \
         TPU_LIBRARY_PATH) to libtpu.so ({})",
        cached.map(|p| p.display().to_string()).unwrap_or_else(|_| "the cache directory".into()),
        site_list()
    )))
}

fn locate_gpu() -> Result<PathBuf> {
    for pkg in ["xla_cuda13", "xla_cuda12"] {
        if let Some(p) = find_in_site(&format!("jax_plugins/{pkg}/xla_cuda_plugin.so")) {
            return Ok(p);
        }
    }
    Err(Error::PluginNotFound(format!(
        "no GPU plugin: install it with `pip install jax-cuda13-pjrt` (CUDA 13) or \
         `pip install jax-cuda12-pjrt` (CUDA 12), or set the config key pjrt_plugin_path (or env \
         PJRT_PLUGIN_PATH) to xla_cuda_plugin.so ({})",
        site_list()
    )))
}

fn locate_cpu() -> Result<PathBuf> {
    if let Some(p) = find_in_site(CPU_PLUGIN_REL) {
        return Ok(p);
    }
    let dir = cpu_plugin_cache_dir()?;
    let so = dir.join(CPU_PLUGIN_REL);
    if so.is_file() {
        return Ok(so);
    }
    fetch_cpu_plugin(&dir)?;
    Ok(so)
}

/// The directory the CPU plugin is fetched into: `$MAXTEXT_CACHE_DIR/xla-cpu-pjrt-0.0.1`, else
/// `$XDG_CACHE_HOME/maxtext-rs/xla-cpu-pjrt-0.0.1`, else `~/.cache/maxtext-rs/xla-cpu-pjrt-0.0.1`.
pub fn cpu_plugin_cache_dir() -> Result<PathBuf> {
    Ok(cache_root()?.join(format!("{CPU_PLUGIN_PACKAGE}-{CPU_PLUGIN_VERSION}")))
}

/// `$MAXTEXT_CACHE_DIR`, else `$XDG_CACHE_HOME/maxtext-rs`, else `~/.cache/maxtext-rs`.
fn cache_root() -> Result<PathBuf> {
    let root = if let Some(d) = env_path("MAXTEXT_CACHE_DIR") {
        d
    } else if let Some(d) = env_path("XDG_CACHE_HOME") {
        d.join("maxtext-rs")
    } else if let Some(h) = env_path("HOME") {
        h.join(".cache").join("maxtext-rs")
    } else {
        return Err(Error::PluginNotFound(
            "no cache directory for the PJRT plugins: set MAXTEXT_CACHE_DIR, XDG_CACHE_HOME or HOME".into(),
        ));
    };
    Ok(root)
}

/// Installs the CPU plugin into `dir` with pip, once: concurrent processes serialise on a lock file,
/// pip installs into a private temporary directory that is renamed into place when complete.
fn fetch_cpu_plugin(dir: &Path) -> Result<()> {
    let parent = dir.parent().ok_or_else(|| Error::invalid(format!("bad cache dir {}", dir.display())))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("xla-cpu-pjrt").to_string();
    std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    let lock_path = parent.join(format!("{name}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
    lock.lock().map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    // Another process may have finished the fetch while we waited for the lock.
    if dir.join(CPU_PLUGIN_REL).is_file() {
        return Ok(());
    }
    // Leftovers of interrupted fetches (we hold the lock, so none is in progress).
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&format!("{name}.tmp-")) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let tmp = parent.join(format!("{name}.tmp-{}", std::process::id()));
    let spec = format!("{CPU_PLUGIN_PACKAGE}=={CPU_PLUGIN_VERSION}");
    eprintln!(
        "maxtext: XLA CPU PJRT plugin not found; fetching it once with \
         `python3 -m pip install --no-deps --target <tmp> {spec}` into {}",
        dir.display()
    );
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--quiet", "--target"])
        .arg(&tmp)
        .arg(&spec)
        .output()
        .map_err(|e| {
            Error::PluginNotFound(format!(
                "the CPU plugin is not installed and cannot be fetched: running python3 failed ({e}); \
                 install it with `pip install {spec}` or set pjrt_plugin_path / PJRT_PLUGIN_PATH"
            ))
        })?;
    if !out.status.success() || !tmp.join(CPU_PLUGIN_REL).is_file() {
        let _ = std::fs::remove_dir_all(&tmp);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(Error::PluginNotFound(format!(
            "fetching the CPU plugin with `pip install {spec}` failed ({}): {}; install it yourself or set \
             pjrt_plugin_path / PJRT_PLUGIN_PATH",
            out.status,
            tail.join(" | ")
        )));
    }
    if dir.exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(format!("moving {} to {}", tmp.display(), dir.display()), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_parses() {
        assert_eq!("CPU".parse::<Hardware>().unwrap(), Hardware::Cpu);
        assert_eq!("cuda".parse::<Hardware>().unwrap(), Hardware::Gpu);
        assert_eq!("tpu".parse::<Hardware>().unwrap(), Hardware::Tpu);
        assert!("npu".parse::<Hardware>().is_err());
        assert_eq!(Hardware::Gpu.to_string(), "gpu");
    }

    #[test]
    fn missing_gpu_and_tpu_plugins_say_what_to_install() {
        // Only meaningful where neither plugin is installed nor PJRT_PLUGIN_PATH is set.
        if std::env::var_os("PJRT_PLUGIN_PATH").is_some() {
            return;
        }
        if let Err(e) = locate_plugin(Hardware::Gpu, None) {
            let m = e.to_string();
            assert!(m.contains("pip install jax-cuda12-pjrt") && m.contains("pjrt_plugin_path"), "{m}");
        }
        if std::env::var_os("TPU_LIBRARY_PATH").is_none() {
            if let Err(e) = locate_plugin(Hardware::Tpu, None) {
                let m = e.to_string();
                assert!(m.contains("pip install libtpu") && m.contains("TPU_LIBRARY_PATH"), "{m}");
            }
        }
    }

    #[test]
    fn explicit_missing_path_is_a_clear_error() {
        let err = locate_plugin(Hardware::Cpu, Some(Path::new("/nonexistent/plugin.so"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("pjrt_plugin_path") && msg.contains("/nonexistent/plugin.so"), "{msg}");
        let err = locate_plugin(Hardware::Cpu, Some(Path::new("/tmp"))).unwrap_err();
        assert!(err.to_string().contains("is not a file"), "{err}");
    }
}
