//! The real orbax-checkpoint 0.12.8 (in the venv `scripts/setup_orbax_venv.sh` builds under `.cache/`), for
//! the tests that check orbax restores what we write.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, built once per test binary; `None` (after printing SKIP) without python3.
pub fn orbax_python() -> Option<&'static PathBuf> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    PY.get_or_init(|| {
        if Command::new("python3").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
            eprintln!("SKIP: python3 is not installed, so the real orbax-checkpoint cannot be run");
            return None;
        }
        let t = std::time::Instant::now();
        let out = Command::new("bash").arg(repo().join("scripts/setup_orbax_venv.sh")).output().expect("run bash");
        assert!(
            out.status.success(),
            "scripts/setup_orbax_venv.sh failed (it needs PyPI to install orbax-checkpoint 0.12.8 once):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let py = PathBuf::from(stdout.lines().last().expect("the script prints the venv python").trim());
        eprintln!("orbax venv ready in {:.1} s: {}", t.elapsed().as_secs_f64(), py.display());
        Some(py)
    })
    .as_ref()
}

/// orbax's targetless restore of item directory `items` on `devices` host devices: every leaf's raw bytes
/// (`<out>/<name>.bin`) and `restored.json` (name, dtype, shape, spec, devices) go to `out`.
pub fn orbax_dump(py: &Path, items: &Path, out: &Path, devices: usize) {
    std::fs::create_dir_all(out).unwrap();
    let t = std::time::Instant::now();
    let o = Command::new(py)
        .arg(repo().join("scripts/orbax_interop.py"))
        .args(["dump", items.to_str().unwrap(), out.to_str().unwrap()])
        .env("XLA_FLAGS", format!("--xla_force_host_platform_device_count={devices}"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "orbax_interop.py dump {} failed:\n{stdout}\n{stderr}", items.display());
    eprintln!("orbax_interop.py dump ({:.1} s): {stdout}", t.elapsed().as_secs_f64());
}
