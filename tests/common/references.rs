//! Reference sets: the ground truth that reference implementations made (HF transformers and torch,
//! orbax, MaxText), found by name. Sets that ship in the repository live under `tests/fixtures/`; larger
//! optional ones may sit outside it. A test that needs an optional set it cannot find records the absence
//! (and says so on the terminal at once); `tests/zz_absent_references.rs`, the last test binary `cargo test`
//! runs, lists every absent set and how to get it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where reference sets are looked for, in order: shipped in the repository (`tests/fixtures`), the
/// project's shared fixtures beside the checkout (`../shared/fixtures`), `$MAXTEXT_RS_REFERENCES`.
pub fn reference_roots() -> Vec<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut roots = vec![repo.join("tests/fixtures"), repo.join("../shared/fixtures")];
    if let Some(dir) = std::env::var_os("MAXTEXT_RS_REFERENCES").filter(|d| !d.is_empty()) {
        roots.push(PathBuf::from(dir));
    }
    roots
}

/// The reference set `name`, a path under a reference root (`hf/tiny-8layers-gqa4`), from the first root
/// that has it. `None` records the absence for the end-of-run list; the caller then returns without
/// checking anything.
pub fn reference(name: &str) -> Option<PathBuf> {
    reference_holding(name, "")
}

/// As [`reference`], for the first copy of set `name` that holds `file` (a part only the whole set has,
/// where the repository ships a smaller copy under the same name).
pub fn reference_holding(name: &str, file: &str) -> Option<PathBuf> {
    let holds = |p: &PathBuf| if file.is_empty() { p.exists() } else { p.join(file).exists() };
    match reference_roots().into_iter().map(|root| root.join(name)).find(holds) {
        Some(p) => {
            forget_absence(name);
            Some(p)
        }
        None => {
            record_absence(name);
            None
        }
    }
}

/// A reference set that ships in the repository (`tests/fixtures/<name>`): its tests always run, so a
/// missing one fails the test instead of skipping it.
pub fn shipped(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    assert!(p.exists(), "{} is missing: it ships with the repository (git checkout -- tests/fixtures)", p.display());
    p
}

/// How to get the optional set `name` (printed with the absent sets).
pub fn how_to_get(name: &str) -> &'static str {
    if name.starts_with("hf/tiny-8layers-gqa4") {
        "scripts/get_optional_references.sh DIR (from this repository's history; or regenerate it with \
         scripts/make_test_references.sh DIR, needs torch), then set MAXTEXT_RS_REFERENCES=DIR"
    } else {
        "the project's shared fixtures folder (fixtures/ of the shared reference folder, see its README): put it \
         at ../shared/fixtures beside the checkout, or set MAXTEXT_RS_REFERENCES to it"
    }
}

/// Where absences are recorded: one file per (set, test binary) under the target directory.
pub fn absence_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("absent-references")
}

fn record_file_prefix(name: &str) -> String {
    name.replace('/', "__")
}

fn this_binary() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe.as_ref().and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    // Cargo names test binaries `<target>-<hash>`.
    stem.rsplit_once('-').map_or(stem.clone(), |(target, _)| target.to_string())
}

fn record_absence(name: &str) {
    static SAID: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let dir = absence_dir();
    let binary = this_binary();
    let record = format!("{name}\n{binary}\n{}\n", how_to_get(name));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{}.{binary}", record_file_prefix(name))), record);
    let mut said = SAID.get_or_init(Default::default).lock().unwrap();
    if !said.iter().any(|n| n == name) {
        said.push(name.to_string());
        // Straight to the terminal: the test harness captures eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "reference set `{name}` is absent: the checks that need it do not run (listed at the end of `cargo test`)"
        );
    }
}

fn forget_absence(name: &str) {
    let prefix = format!("{}.", record_file_prefix(name));
    for e in std::fs::read_dir(absence_dir()).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The lines of a golden file that `scripts/golden_jsonl_to_safetensors.py` converted (`<dir>/<stem>.json`
/// + `<dir>/<stem>.safetensors`), rebuilt as the JSON objects of the original JSONL: integers as integers,
/// every float the f32 the reference wrote, exactly.
pub fn golden_lines(dir: &Path, stem: &str) -> Vec<serde_json::Value> {
    use serde_json::Value;
    let meta_path = dir.join(format!("{stem}.json"));
    let meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap_or_else(|e| panic!("{}: {e}", meta_path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", meta_path.display()));
    let bytes = std::fs::read(dir.join(format!("{stem}.safetensors"))).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let lines = meta["lines"].as_array().unwrap_or_else(|| panic!("{}: no \"lines\"", meta_path.display()));
    lines
        .iter()
        .map(|rec| {
            let mut line = rec.as_object().unwrap().clone();
            let tensors = line.remove("tensors").unwrap();
            for (field, name) in tensors.as_object().unwrap() {
                let t = st.tensor(name.as_str().unwrap()).unwrap();
                let values: Vec<Value> = match t.dtype() {
                    safetensors::Dtype::I32 => t.data().chunks(4).map(|b| Value::from(i32::from_le_bytes(b.try_into().unwrap()))).collect(),
                    safetensors::Dtype::I64 => t.data().chunks(8).map(|b| Value::from(i64::from_le_bytes(b.try_into().unwrap()))).collect(),
                    safetensors::Dtype::F32 => t.data().chunks(4).map(|b| Value::from(f32::from_le_bytes(b.try_into().unwrap()) as f64)).collect(),
                    d => panic!("{stem}: tensor {name} has dtype {d:?}"),
                };
                let value = match t.shape() {
                    [_] => Value::Array(values),
                    [_, cols] => Value::Array(values.chunks(*cols).map(|r| Value::Array(r.to_vec())).collect()),
                    s => panic!("{stem}: tensor {name} has shape {s:?}"),
                };
                line.insert(field.clone(), value);
            }
            Value::Object(line)
        })
        .collect()
}

/// Writes golden lines as a JSONL file (MaxText's golden-logits format, what `golden_logits_path` takes).
pub fn write_golden_jsonl(lines: &[serde_json::Value], path: &Path) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The checkpoint MaxText 0.2.5 wrote, from its trimmed copy in `tests/fixtures/maxtext_qwen3next_tiny_trimmed`
/// (see its README): written out whole under the target directory once (every `*.kept.safetensors` back
/// to its data file, the kept byte ranges at their offsets); returns the checkpoints root (`0/items`).
pub fn maxtext_checkpoint() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = shipped("maxtext_qwen3next_tiny_trimmed");
        let dst = Path::new(env!("CARGO_TARGET_TMPDIR")).join("references/maxtext_qwen3next_tiny");
        let mut files = Vec::new();
        list_files(&src, &mut files);
        files.sort();
        let fingerprint: String = files
            .iter()
            .map(|f| format!("{} {}\n", f.strip_prefix(&src).unwrap().display(), std::fs::metadata(f).unwrap().len()))
            .collect();
        if std::fs::read_to_string(dst.join(".complete")).ok().as_deref() == Some(fingerprint.as_str()) {
            return dst;
        }
        let tmp = dst.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for f in &files {
            let rel = f.strip_prefix(&src).unwrap();
            let out = tmp.join(rel);
            std::fs::create_dir_all(out.parent().unwrap()).unwrap();
            match rel.to_string_lossy().strip_suffix(".kept.safetensors") {
                Some(data_file) => std::fs::write(tmp.join(data_file), unpack_kept_ranges(f)).unwrap(),
                None => {
                    std::fs::copy(f, &out).unwrap();
                }
            }
        }
        std::fs::write(tmp.join(".complete"), &fingerprint).unwrap();
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        if std::fs::rename(&tmp, &dst).is_err() {
            // Another test binary wrote it at the same moment: theirs is the same.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dst
    })
    .clone()
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            list_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A data file from its kept byte ranges (tensors named by offset; `__metadata__.file_size`).
fn unpack_kept_ranges(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let size: usize = meta.metadata().as_ref().and_then(|m| m.get("file_size")).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{}: no file_size", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut file = vec![0u8; size];
    for (name, t) in st.tensors() {
        let at: usize = name.parse().unwrap_or_else(|_| panic!("{}: tensor {name} is not an offset", path.display()));
        file[at..at + t.data().len()].copy_from_slice(t.data());
    }
    file
}
