//! Every Orbax fixture in `tests/fixtures/orbax/` (written by orbax-checkpoint 0.12.8 and by an independent
//! hand writer) reads back with exactly the values orbax itself restores (`expected.safetensors`, compared
//! bitwise), and the fixtures orbax cannot restore fail here too. The checkpoint MaxText wrote: its trimmed
//! copy (`tests/fixtures/maxtext_qwen3next_tiny_trimmed`, every leaf it keeps against orbax's values) and,
//! when present, the whole optional reference set `orbax/maxtext_qwen3next_tiny`.

mod common;

use std::path::{Path, PathBuf};

use maxtext::checkpoint::orbax::{LeafKind, OrbaxCheckpoint, OrbaxError, PathKey, ZarrDType};
use serde_json::Value;

fn fixtures() -> PathBuf {
    common::shipped("orbax")
}

/// Every item directory (the ones holding `expected.json`), relative to the fixture root, sorted.
fn item_dirs(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        if dir.join("expected.json").is_file() {
            out.push(dir.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
        let mut subdirs: Vec<_> =
            std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        subdirs.sort();
        for d in subdirs {
            walk(root, &d, out);
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn safetensors_name(d: ZarrDType) -> &'static str {
    use ZarrDType::*;
    match d {
        Bool => "BOOL",
        I8 | Int4 => "I8",
        U8 => "U8",
        I16 => "I16",
        U16 => "U16",
        I32 => "I32",
        U32 => "U32",
        I64 => "I64",
        U64 => "U64",
        F16 => "F16",
        BF16 => "BF16",
        F32 => "F32",
        F64 => "F64",
        F8E4M3FN => "F8_E4M3",
        F8E5M2 => "F8_E5M2",
        C64 => "C64",
        C128 => "C128",
    }
}

/// Reads every leaf of one item directory and compares it with its expected files. `Ok(n)` = n leaves
/// matched; `Err` = what differed. For fixtures orbax cannot restore, `Ok` means our reader failed too.
fn check_item(root: &Path, rel: &str) -> Result<usize, String> {
    check_item_against(root, rel, "expected.safetensors")
}

/// As [`check_item`], with orbax's values from `values` (a safetensors file in the item directory); the
/// leaves that file does not hold are checked for kind and path only.
fn check_item_against(root: &Path, rel: &str, values: &str) -> Result<usize, String> {
    let dir = root.join(rel);
    let expected: Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    if expected["safetensors"].is_null() {
        let err = read_everything(&dir).err().ok_or("orbax cannot restore this checkpoint, but our reader did")?;
        eprintln!("  {rel}: fails as expected: {err}");
        return Ok(0);
    }
    let ckpt = OrbaxCheckpoint::open(&dir).map_err(|e| format!("open: {e}"))?;
    let st_bytes = std::fs::read(dir.join(values)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).map_err(|e| format!("expected.safetensors: {e:?}"))?;
    let leaves = expected["leaves"].as_array().unwrap();
    if leaves.len() != ckpt.leaves().len() {
        return Err(format!("{} leaves, expected {}", ckpt.leaves().len(), leaves.len()));
    }
    for (want, got) in leaves.iter().zip(ckpt.leaves()) {
        let name = want["name"].as_str().unwrap();
        if got.name != name {
            return Err(format!("leaf order: got {}, expected {name}", got.name));
        }
        let path: Vec<String> =
            want["path"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        let key_types: Vec<&str> = want["key_types"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
        let got_path: Vec<String> = got.path.iter().map(PathKey::as_string).collect();
        let got_types: Vec<&str> =
            got.path.iter().map(|k| if matches!(k, PathKey::Index(_)) { "index" } else { "dict" }).collect();
        // Without _METADATA the tree is one level of array names (only hand_written/z2_raw__no_METADATA).
        if want.get("metadata_value_type").is_some() && (got_path != path || got_types != key_types) {
            return Err(format!("{name}: path {got_path:?} {got_types:?}, expected {path:?} {key_types:?}"));
        }
        let kind = want["kind"].as_str().unwrap();
        match (kind, &got.kind) {
            ("array", LeafKind::Array) | ("scalar", LeafKind::Scalar) => {}
            ("string", LeafKind::String(s)) if want["value"] == *s => {}
            ("none", LeafKind::Empty(vt)) if vt == "None" => {}
            ("empty_dict", LeafKind::Empty(vt)) if vt == "Dict" => {}
            ("empty_list", LeafKind::Empty(vt)) if vt == "List" || vt == "Tuple" => {}
            _ => return Err(format!("{name}: kind {:?}, expected {kind} {}", got.kind, want["value"])),
        }
        let key = want.get("safetensors_key").and_then(Value::as_str);
        if let Some(key) = key.filter(|k| values == "expected.safetensors" || st.names().contains(k)) {
            let t = st.tensor(key).map_err(|e| format!("{name}: not in {values}: {e:?}"))?;
            let a = ckpt.read_array(name).map_err(|e| format!("read {name}: {e}"))?;
            if a.dtype.name() != want["dtype"].as_str().unwrap()
                || format!("{:?}", t.dtype()) != safetensors_name(a.dtype)
            {
                return Err(format!("{name}: dtype {}, expected {} ({:?})", a.dtype, want["dtype"], t.dtype()));
            }
            let want_shape: Vec<u64> = t.shape().iter().map(|d| *d as u64).collect();
            if a.shape != want_shape || Some(&a.shape) != got.shape.as_ref() {
                return Err(format!("{name}: shape {:?}, expected {want_shape:?}", a.shape));
            }
            if a.data != t.data() {
                let first = a.data.iter().zip(t.data()).position(|(x, y)| x != y);
                return Err(format!("{name}: values differ (first differing byte {first:?} of {})", a.data.len()));
            }
            if let Some(host) = a.dtype.to_host() {
                let ht = ckpt.read(name).map_err(|e| format!("read {name} as host tensor: {e}"))?;
                assert_eq!((ht.dtype, ht.data.as_slice()), (host, t.data()), "{rel}: {name}");
            }
        }
        if let Some(imp) = want.get("prng_key_impl").and_then(Value::as_str) {
            if got.prng_key_impl.as_deref() != Some(imp) {
                return Err(format!("{name}: prng impl {:?}, expected {imp}", got.prng_key_impl));
            }
        }
    }
    Ok(leaves.len())
}

/// Opens and reads every array leaf; the first error.
fn read_everything(dir: &Path) -> Result<(), OrbaxError> {
    let ckpt = OrbaxCheckpoint::open(dir)?;
    for l in ckpt.leaves().iter().filter(|l| l.is_array()) {
        ckpt.read_array(&l.name)?;
    }
    Ok(())
}

/// Checks every item directory `family` selects (there must be at least one).
fn check_family(family: &str) {
    let root = fixtures();
    let dirs: Vec<String> = item_dirs(&root).into_iter().filter(|d| family_of(d) == family).collect();
    assert!(!dirs.is_empty(), "no fixtures in family {family}");
    let mut failures = Vec::new();
    for rel in &dirs {
        let t = std::time::Instant::now();
        match check_item(&root, rel) {
            Ok(n) => eprintln!("  ok {rel}: {n} leaves ({:.1} ms)", t.elapsed().as_secs_f64() * 1e3),
            Err(e) => failures.push(format!("{rel}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} fixtures differ:\n{}", failures.len(), dirs.len(), failures.join("\n"));
}

const BROKEN: [&str; 3] = [
    "hand_written/z2_missing_chunk_store_eq_fill_True",
    "hand_written/z3_orbax_like__no_METADATA",
    "hand_written/ocdbt_z3_orbax_like__no_METADATA",
];

/// The layout family of a fixture directory: one test per family.
fn family_of(rel: &str) -> &'static str {
    let top = rel.split('/').next().unwrap();
    let base = rel.rsplit('/').next().unwrap();
    match top {
        _ if BROKEN.contains(&rel) => "broken",
        "a_standard_ocdbt" | "a2_pytree_ocdbt" | "b4_pytree_ocdbt_zarr2" | "c2_manager_default" => "ocdbt_zarr2",
        "b_standard_no_ocdbt" | "b2_pytree_no_ocdbt" | "b3_pytree_no_ocdbt_zarr2" => "plain_zarr2",
        "c_manager_maxtext" | "d_pytree_ocdbt_zarr3" | "k_v1_save_pytree" => "ocdbt_zarr3",
        "e_pytree_no_ocdbt_zarr3" => "plain_zarr3",
        _ if top.starts_with("f_chunked") => "chunked",
        _ if top.starts_with("g_sharded") || top.starts_with("h_multiprocess") => "sharded",
        "i_misc_types_ocdbt_zarr3" => "misc_types",
        _ if top.starts_with("j_dtypes") => "dtypes",
        "maxtext_qwen3next_tiny" => "maxtext",
        "hand_written_manager" => "hand_written_plain",
        "hand_written" if base.contains("__") => "hand_written_derived",
        "hand_written" if base.starts_with("ocdbt") || base.starts_with("tiny_ocdbt") => "hand_written_ocdbt",
        "hand_written" => "hand_written_plain",
        _ => "unknown",
    }
}

#[test]
fn every_fixture_has_a_family() {
    let root = fixtures();
    let dirs = item_dirs(&root);
    // The README's 81 item directories less MaxText's (shipped trimmed, beside this folder).
    assert_eq!(dirs.len(), 80, "the README lists 81 item directories, MaxText's is elsewhere");
    let unknown: Vec<&String> = dirs.iter().filter(|d| family_of(d) == "unknown").collect();
    assert!(unknown.is_empty(), "fixtures no test reads: {unknown:?}");
    let with_values = dirs.iter().filter(|d| root.join(d).join("expected.safetensors").is_file()).count();
    assert_eq!(with_values, 77);
}

#[test]
fn ocdbt_zarr2() {
    check_family("ocdbt_zarr2");
}

#[test]
fn plain_zarr2() {
    check_family("plain_zarr2");
}

#[test]
fn ocdbt_zarr3() {
    check_family("ocdbt_zarr3");
}

#[test]
fn plain_zarr3() {
    check_family("plain_zarr3");
}

#[test]
fn chunked_with_padded_edges() {
    check_family("chunked");
}

#[test]
fn sharded_and_multiprocess() {
    check_family("sharded");
}

#[test]
fn misc_leaf_types() {
    check_family("misc_types");
}

#[test]
fn all_dtypes() {
    check_family("dtypes");
}

#[test]
fn hand_written_plain_zarr() {
    check_family("hand_written_plain");
}

#[test]
fn hand_written_ocdbt() {
    check_family("hand_written_ocdbt");
}

#[test]
fn hand_written_derived_variants() {
    check_family("hand_written_derived");
}

#[test]
fn broken_fixtures_fail_clearly() {
    let root = fixtures();
    check_family("broken");
    let msg = |rel: &str| read_everything(&root.join(rel)).unwrap_err().to_string();
    let missing = msg(BROKEN[0]);
    assert!(missing.contains("big") && missing.contains("big/0.0") && missing.contains("missing"), "{missing}");
    for rel in &BROKEN[1..] {
        let m = msg(rel);
        assert!(m.contains("no _METADATA"), "{m}");
    }
}

/// The whole checkpoint MaxText wrote, every leaf against orbax's values (optional reference set).
#[test]
fn maxtext_qwen3next_checkpoint_whole() {
    let Some(set) = common::reference_holding("orbax/maxtext_qwen3next_tiny", "0/items/expected.safetensors") else { return };
    let root = set.parent().unwrap().to_path_buf();
    assert_eq!(check_item(&root, "maxtext_qwen3next_tiny/0/items"), Ok(130));
    check_maxtext_checkpoint(&root.join("maxtext_qwen3next_tiny"));
}

/// The trimmed copy: every leaf it keeps against orbax's values, every parameter readable, and a leaf it
/// left out fails as damaged data rather than reading as zeros.
#[test]
fn maxtext_qwen3next_checkpoint_trimmed() {
    let ckpts = common::maxtext_checkpoint();
    let n = check_item_against(ckpts.parent().unwrap(), "maxtext_qwen3next_tiny/0/items", "expected_kept.safetensors");
    assert_eq!(n, Ok(130));
    let ckpt = check_maxtext_checkpoint(&ckpts);
    let dropped = "opt_state.0.mu.params.decoder.layers.local_layers.mlp.routed_experts.wo";
    let err = ckpt.read(dropped).unwrap_err().to_string();
    assert!(err.contains(dropped), "{err}");
}

fn check_maxtext_checkpoint(dir: &Path) -> OrbaxCheckpoint {
    let ckpt = OrbaxCheckpoint::open_step(dir, 0).unwrap();
    assert_eq!(ckpt.leaves().len(), 130);
    assert_eq!(ckpt.leaves().iter().filter(|l| l.is_array()).count(), 129);
    assert!(ckpt.use_ocdbt() && ckpt.use_zarr3());
    let md = ckpt.checkpoint_metadata().unwrap();
    assert_eq!(md["custom_metadata"]["scan_layers"], Value::Bool(true));
    // The PRNG key leaves read as their uint32 key data (key shape + [4]).
    let keys: Vec<_> = ckpt.leaves().iter().filter(|l| l.prng_key_impl.is_some()).collect();
    assert!(!keys.is_empty());
    for k in keys {
        assert_eq!(k.prng_key_impl.as_deref(), Some("unsafe_rbg"));
        let t = ckpt.read(&k.name).unwrap();
        assert_eq!((t.dtype, *t.dims.last().unwrap()), (maxtext::ir::DType::U32, 4), "{}", k.name);
    }
    // Streaming the parameters only.
    let params: Vec<_> = ckpt.read_selected("params.").collect::<Result<_, _>>().unwrap();
    assert!(params.iter().all(|(n, _)| n.starts_with("params.params.")));
    let emb = params.iter().find(|(n, _)| n == "params.params.token_embedder.embedding").unwrap();
    assert_eq!(emb.1.dims, vec![1024, 128]);
    assert_eq!(params.len(), ckpt.leaves().iter().filter(|l| l.name.starts_with("params.")).count());
    // The empty optimizer state is a leaf with nothing stored.
    let err = ckpt.read("opt_state.1").unwrap_err().to_string();
    assert!(err.contains("not an array"), "{err}");
    let err = ckpt.read("params.params.token_embedder.embedidng").unwrap_err().to_string();
    assert!(err.contains("did you mean \"params.params.token_embedder.embedding\""), "{err}");
    ckpt
}

#[test]
fn unfinished_and_wrong_directories_are_refused() {
    let root = fixtures();
    let step = root.join("c_manager_maxtext/checkpoints/0");
    let err = OrbaxCheckpoint::open(&step).unwrap_err().to_string();
    assert!(err.contains("step directory") && err.contains("items"), "{err}");
    let err = OrbaxCheckpoint::open(root.join("nope")).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let unfinished = tmp.path().join("3.orbax-checkpoint-tmp-1234/items");
    std::fs::create_dir_all(&unfinished).unwrap();
    let err = OrbaxCheckpoint::open(&unfinished).unwrap_err().to_string();
    assert!(err.contains("incomplete"), "{err}");
    assert_eq!(
        maxtext::checkpoint::orbax::list_steps(&root.join("c_manager_maxtext/checkpoints")).unwrap(),
        vec![0, 10]
    );
}
