//! Makes the repository's trimmed copy of the checkpoint MaxText 0.2.5 wrote
//! (`<shared fixtures>/orbax/maxtext_qwen3next_tiny`, 32 MB with orbax's expected values) without changing a
//! byte MaxText wrote:
//!
//!     cargo run --example trim_maxtext_checkpoint -- SRC DST
//!
//! Every file is copied as it is, except OCDBT data files larger than 64 KiB: those keep only the byte
//! ranges of the values the tests read (every `params.*` leaf and every value under 4 KiB: step, PRNG
//! keys, counts, norms of the optimizer state) as `<file>.kept.safetensors` (one U8 tensor per range, named
//! by its offset; `__metadata__.file_size`), and are left out when no such range is in them. The optimizer
//! moments (`opt_state.0.{mu,nu}` of the large parameters, 9.4 MB) are what is dropped. `tests/common`
//! writes the file back at its size with those ranges in place (the dropped ranges zero, so reading a
//! dropped leaf fails as a corrupt chunk). orbax's `expected.safetensors` is cut to the leaves whose every
//! chunk is kept and that are at most 64 KiB (`expected_kept.safetensors`, the same bytes).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use maxtext::checkpoint::orbax::ocdbt::{OcdbtDatabase, ValueRef};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const SMALL_VALUE: u64 = 4096;
const SMALL_FILE: u64 = 64 * 1024;
/// orbax's values of the large parameters (5.7 MB) are not kept: the parameters are checked end to end
/// against MaxText's own logits (`maxtext_forward_step0.safetensors`) instead.
const SMALL_EXPECTED: u64 = 64 * 1024;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out)
        } else {
            out.push(p)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, src, dst] = args.as_slice() else {
        eprintln!("usage: trim_maxtext_checkpoint SRC DST (SRC = .../orbax/maxtext_qwen3next_tiny)");
        std::process::exit(2);
    };
    let (src, dst) = (Path::new(src), Path::new(dst));
    let items = src.join("0/items");
    let db = OcdbtDatabase::open(&items).expect("the OCDBT database of 0/items");

    // Ranges to keep per data file (relative to items/), and the leaves whose every value is kept.
    let mut keep: BTreeMap<String, BTreeSet<(u64, u64)>> = BTreeMap::new();
    let mut dropped_leaves = BTreeSet::new();
    let keys: Vec<Vec<u8>> = db.keys().map(<[u8]>::to_vec).collect();
    for key in &keys {
        let key_s = String::from_utf8_lossy(key).into_owned();
        let leaf = key_s.split('/').next().unwrap().to_string();
        if let Some(ValueRef::Indirect { file, offset, length }) = db.location(key) {
            if leaf.starts_with("params.") || *length < SMALL_VALUE {
                keep.entry(file.clone()).or_default().insert((*offset, *length));
            } else {
                dropped_leaves.insert(leaf);
            }
        }
    }

    let mut all = Vec::new();
    files(src, &mut all);
    for path in all {
        let rel = path.strip_prefix(src).unwrap();
        let out = dst.join(rel);
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let name = rel.to_string_lossy();
        if name == "0/items/expected.safetensors" {
            let bytes = std::fs::read(&path).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let kept: Vec<(String, TensorView)> = st
                .tensors()
                .into_iter()
                .filter(|(n, t)| !dropped_leaves.contains(n) && t.data().len() as u64 <= SMALL_EXPECTED)
                .collect();
            let meta = BTreeMap::from([("note".to_string(), "orbax's expected.safetensors, the leaves kept in the trimmed copy".to_string())]);
            let n = kept.len();
            safetensors::tensor::serialize_to_file(kept, Some(meta.into_iter().collect()), &out.with_file_name("expected_kept.safetensors")).unwrap();
            eprintln!("expected_kept.safetensors: {n} of {} leaves", st.len());
            continue;
        }
        let size = std::fs::metadata(&path).unwrap().len();
        let in_db = path.strip_prefix(&items).ok().map(|r| r.to_string_lossy().into_owned());
        let ranges = in_db.as_ref().and_then(|r| keep.get(r));
        if size <= SMALL_FILE || in_db.is_none() || !(name.contains("/d/")) {
            std::fs::copy(&path, &out).unwrap();
            continue;
        }
        let Some(ranges) = ranges else {
            eprintln!("{name}: {size} bytes, nothing kept: left out");
            continue;
        };
        let bytes = std::fs::read(&path).unwrap();
        let names: Vec<String> = ranges.iter().map(|(o, _)| o.to_string()).collect();
        let views: Vec<(String, TensorView)> = ranges
            .iter()
            .zip(&names)
            .map(|((o, l), n)| {
                (n.clone(), TensorView::new(Dtype::U8, vec![*l as usize], &bytes[*o as usize..(*o + *l) as usize]).unwrap())
            })
            .collect();
        let kept: u64 = ranges.iter().map(|(_, l)| l).sum();
        if kept * 10 >= size * 9 {
            // Nearly all of it: the whole file (it may also hold B+tree nodes, which are not values).
            std::fs::copy(&path, &out).unwrap();
            continue;
        }
        let meta = BTreeMap::from([("file_size".to_string(), size.to_string())]);
        let packed = out.with_file_name(format!("{}.kept.safetensors", out.file_name().unwrap().to_string_lossy()));
        safetensors::tensor::serialize_to_file(views, Some(meta.into_iter().collect()), &packed).unwrap();
        eprintln!("{name}: {size} bytes, {} ranges kept ({kept} bytes)", ranges.len());
    }
    eprintln!("dropped leaves: {}", dropped_leaves.len());
}
