//! The training data pipeline: MaxText's batch layout, synthetic data, json / text / parquet files,
//! packing, shuffling, host shares and exact resume.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use maxtext::config::Config;
use maxtext::data::{Batch, DataError, DataIterator, Tokenizer};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cfg(args: &[&str]) -> Config {
    // Short test sequences: the decode prefill length must not exceed them.
    let mut a = vec!["max_prefill_predict_length=1".to_string(), "tokenizer_type=huggingface".to_string()];
    a.extend(args.iter().map(|s| s.to_string()));
    Config::load_with_env(&root().join("configs/base.yml"), &a, &|_| None).unwrap()
}

/// `dataset_type=hf` over `files` (a glob) with `rows` rows of `len`; more keys in `extra`.
fn hf(format: &str, files: &Path, rows: usize, len: usize, extra: &[&str]) -> Config {
    let mut a = vec![
        "dataset_type=hf".to_string(),
        format!("hf_path={format}"),
        format!("hf_train_files={}", files.display()),
        format!("per_device_batch_size={rows}"),
        format!("max_target_length={len}"),
        "vocab_size=151936".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    cfg(&refs)
}

fn qwen_path() -> String {
    format!("tokenizer_path={}", root().join("assets/tokenizers/qwen3-tokenizer").display())
}

/// JSON lines of `{"ids": doc}`.
fn write_ids_jsonl(path: &Path, docs: &[Vec<i64>]) {
    let text: String = docs.iter().map(|d| format!("{}\n", serde_json::json!({ "ids": d }))).collect();
    fs::write(path, text).unwrap();
}

/// Document i: ids `i*1000 + 1 ..= i*1000 + n_i` (so a token names its document, and targets are +1).
fn numbered_docs(lengths: &[usize]) -> Vec<Vec<i64>> {
    lengths.iter().enumerate().map(|(i, &n)| (1..=n as i64).map(|j| i as i64 * 1000 + j).collect()).collect()
}

fn all_batches(it: &mut DataIterator) -> Vec<Batch> {
    let mut out = Vec::new();
    loop {
        match it.next_batch() {
            Ok(b) => out.push(b),
            Err(DataError::Exhausted { .. }) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The examples of a batch: per row, per segment, the (inputs, targets) pairs.
fn segments(b: &Batch) -> Vec<(Vec<i32>, Vec<i32>)> {
    let mut out = Vec::new();
    for r in 0..b.rows {
        let (inp, tgt, seg) = (b.row("inputs", r), b.row("targets", r), b.row("inputs_segmentation", r));
        let mut t = 0;
        while t < b.len && seg[t] != 0 {
            let s = seg[t];
            let start = t;
            while t < b.len && seg[t] == s {
                t += 1;
            }
            out.push((inp[start..t].to_vec(), tgt[start..t].to_vec()));
        }
    }
    out
}

/// Layout invariants of a packed (or unpacked) batch of numbered documents.
fn check_invariants(b: &Batch, max_segments: Option<i32>) {
    for r in 0..b.rows {
        let row = |k: &str| b.row(k, r).to_vec();
        let (inp, tgt, seg, pos) = (row("inputs"), row("targets"), row("inputs_segmentation"), row("inputs_position"));
        assert_eq!(seg, row("targets_segmentation"));
        assert_eq!(pos, row("targets_position"));
        let used = seg.iter().take_while(|&&s| s != 0).count();
        for t in used..b.len {
            assert_eq!((inp[t], tgt[t], seg[t], pos[t]), (0, 0, 0, 0), "padding at row {r} cell {t}");
        }
        for t in 0..used {
            let start = t == 0 || seg[t] != seg[t - 1];
            if start {
                assert_eq!(seg[t], if t == 0 { 1 } else { seg[t - 1] + 1 }, "segments numbered from 1");
                assert_eq!(pos[t], 0, "positions restart at a segment start");
            } else {
                assert_eq!(pos[t], pos[t - 1] + 1);
                assert_eq!(inp[t], tgt[t - 1], "targets are inputs shifted by one within a segment");
            }
            // Numbered documents: the target is the next id of the same document.
            assert_eq!(tgt[t], inp[t] + 1, "row {r} cell {t}: the target crosses a document boundary");
            assert_eq!(tgt[t] / 1000, inp[t] / 1000);
        }
        if let Some(m) = max_segments {
            assert!(seg.iter().all(|&s| s <= m));
        }
    }
}

#[test]
fn synthetic_is_maxtext_fixed_random_batch() {
    let c = cfg(&["dataset_type=synthetic", "per_device_batch_size=3", "max_target_length=16", "vocab_size=100"]);
    let mut it = DataIterator::new(&c, 0, 1).unwrap();
    let b = it.next_batch().unwrap();
    assert_eq!(b.dims(), [3, 16]);
    for r in 0..3 {
        assert_eq!(&b.row("inputs", r)[1..], &b.row("targets", r)[..15], "targets = tokens[:, 1:]");
        assert_eq!(b.row("inputs_position", r), (0..16).collect::<Vec<i32>>());
        assert_eq!(b.row("targets_position", r), (1..17).collect::<Vec<i32>>());
    }
    assert!(b.inputs.iter().chain(&b.targets).all(|&t| (0..100).contains(&t)));
    assert!(b.inputs_segmentation.iter().chain(&b.targets_segmentation).all(|&s| s == 1));
    assert!(b.inputs.iter().collect::<HashSet<_>>().len() > 20, "random ids");
    assert_eq!(it.next_batch().unwrap(), b, "the same batch every step");
    assert_eq!(b.host_tensors().len(), 6);

    // packing with max_segments_per_seq >= 2: 2..=max segments per row, numbered from 1.
    let c = cfg(&["dataset_type=synthetic", "per_device_batch_size=8", "max_target_length=32", "max_segments_per_seq=3"]);
    let b = DataIterator::new(&c, 0, 1).unwrap().next_batch().unwrap();
    for r in 0..8 {
        let seg = b.row("inputs_segmentation", r);
        assert_eq!(seg[0], 1);
        assert!((2..=3).contains(&seg[31]));
        assert!(seg.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
    }
    let c = cfg(&["dataset_type=synthetic", "per_device_batch_size=8", "max_target_length=32", "max_segments_per_seq=3", "packing=false"]);
    assert!(DataIterator::new(&c, 0, 1).unwrap().next_batch().unwrap().inputs_segmentation.iter().all(|&s| s == 1));

    // Two hosts get the two halves of the global batch.
    let c = cfg(&["dataset_type=synthetic", "per_device_batch_size=4", "max_target_length=8"]);
    let whole = DataIterator::new(&c, 0, 1).unwrap().next_batch().unwrap();
    let h1 = DataIterator::new(&c, 1, 2).unwrap().next_batch().unwrap();
    assert_eq!(h1, whole.slice_rows(2, 2));
}

#[test]
fn packing_hand_checked() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.jsonl");
    write_ids_jsonl(&f, &[vec![1, 2, 3], vec![4, 5, 6, 7, 8], vec![9, 10], vec![11]]);
    let c = hf("json", &f, 2, 4, &["train_data_columns=ids", "enable_data_shuffling=false"]);
    let mut it = DataIterator::new(&c, 0, 1).unwrap();
    let b = it.next_batch().unwrap();
    // [1,2,3] -> 2 cells in row 0; [4..8] (4 cells) fits only row 1; [9,10] -> row 0 cell 2; [11] no example.
    assert_eq!(b.inputs, vec![1, 2, 9, 0, 4, 5, 6, 7]);
    assert_eq!(b.targets, vec![2, 3, 10, 0, 5, 6, 7, 8]);
    assert_eq!(b.inputs_segmentation, vec![1, 1, 2, 0, 1, 1, 1, 1]);
    assert_eq!(b.targets_segmentation, b.inputs_segmentation);
    assert_eq!(b.inputs_position, vec![0, 1, 0, 0, 0, 1, 2, 3]);
    assert_eq!(b.num_target_tokens(), 7);
    assert!(matches!(it.next_batch(), Err(DataError::Exhausted { num_epoch: 1, batches: 1 })));
    assert!(matches!(it.next_batch(), Err(DataError::Exhausted { .. })), "stays exhausted");
}

#[test]
fn no_packing_one_example_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.jsonl");
    write_ids_jsonl(&f, &[vec![1, 2, 3], vec![4, 5, 6, 7, 8, 9, 10], vec![11, 12]]);
    let c = hf("json", &f, 2, 4, &["train_data_columns=ids", "enable_data_shuffling=false", "packing=false"]);
    let bs = all_batches(&mut DataIterator::new(&c, 0, 1).unwrap());
    assert_eq!(bs.len(), 2);
    // N=3: L=2; N=7 > L+1: inputs ids[0:4], targets ids[1:5]; N=2: L=1; then a padding row.
    assert_eq!(bs[0].inputs, vec![1, 2, 0, 0, 4, 5, 6, 7]);
    assert_eq!(bs[0].targets, vec![2, 3, 0, 0, 5, 6, 7, 8]);
    assert_eq!(bs[0].inputs_segmentation, vec![1, 1, 0, 0, 1, 1, 1, 1]);
    assert_eq!(bs[0].inputs_position, vec![0, 1, 0, 0, 0, 1, 2, 3]);
    assert_eq!(bs[1].inputs, vec![11, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(bs[1].targets, vec![12, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(bs[1].targets_segmentation, vec![1, 0, 0, 0, 0, 0, 0, 0]);

    // use_truncation=false: a long document becomes consecutive examples overlapping by one id.
    let c = hf("json", &f, 1, 4, &["train_data_columns=ids", "enable_data_shuffling=false", "packing=false", "use_truncation=false"]);
    let ins: Vec<Vec<i32>> = all_batches(&mut DataIterator::new(&c, 0, 1).unwrap()).iter().map(|b| b.inputs.clone()).collect();
    assert_eq!(ins, vec![vec![1, 2, 0, 0], vec![4, 5, 6, 7], vec![8, 9, 0, 0], vec![11, 0, 0, 0]]);
}

#[test]
fn packing_invariants_on_many_documents() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.jsonl");
    let lengths: Vec<usize> = (0..120).map(|i| 1 + (i * 37 % 23)).collect();
    let docs = numbered_docs(&lengths);
    write_ids_jsonl(&f, &docs);
    for extra in [vec![], vec!["max_segments_per_seq=2"], vec!["packing=false"], vec!["use_truncation=false"]] {
        let mut args = vec!["train_data_columns=ids"];
        args.extend(extra.iter().copied());
        let c = hf("json", &f, 4, 16, &args);
        let bs = all_batches(&mut DataIterator::new(&c, 0, 1).unwrap());
        let max = match extra.first() {
            Some(&"packing=false") => Some(1),
            Some(&"max_segments_per_seq=2") => Some(2),
            _ => None,
        };
        let mut seen = BTreeSet::new();
        for b in &bs {
            assert_eq!(b.dims(), [4, 16]);
            check_invariants(b, max);
            seen.extend(segments(b).iter().map(|(i, _)| i[0] / 1000));
        }
        let trainable: BTreeSet<i32> = (0..120).filter(|&i| lengths[i as usize] >= 2).collect();
        assert_eq!(seen, trainable, "every document with >= 2 ids is trained on ({extra:?})");
    }
}

#[test]
fn jsonl_text_tokenized_with_qwen3() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.jsonl");
    let texts = ["Hello world", "To be, or not to be: that is the question.", "x"];
    let body: String = texts.iter().map(|t| format!("{}\n\n", serde_json::json!({"text": t, "id": 1}))).collect();
    fs::write(&f, body).unwrap();
    let c = hf("json", &f, 1, 64, &["enable_data_shuffling=false", &qwen_path()]);
    let b = DataIterator::new(&c, 0, 1).unwrap().next_batch().unwrap();
    let tok = Tokenizer::load(&root().join("assets/tokenizers/qwen3-tokenizer")).unwrap();
    let eos = tok.eos_ids()[0];
    let mut want_in = Vec::new();
    let mut want_seg = Vec::new();
    for (s, t) in texts.iter().enumerate() {
        let mut ids = tok.encode(t, true).unwrap(); // Qwen3 has no BOS
        ids.push(eos); // add_eos=true
        want_in.extend(ids[..ids.len() - 1].iter().map(|&i| i as i32));
        want_seg.extend(std::iter::repeat_n(s as i32 + 1, ids.len() - 1));
    }
    assert_eq!(&b.inputs[..want_in.len()], &want_in[..]);
    assert_eq!(&b.inputs_segmentation[..want_seg.len()], &want_seg[..]);
    assert!(b.inputs_segmentation[want_seg.len()..].iter().all(|&s| s == 0));
    let segs = segments(&b);
    assert_eq!(segs.len(), 3);
    assert_eq!(*segs[2].1.last().unwrap() as i64, eos);
    assert_eq!(tok.decode(&segs[1].0.iter().map(|&i| i as i64).collect::<Vec<_>>()).unwrap(), texts[1]);

    // add_eos=false: the last target is the text's last token.
    let c = hf("json", &f, 1, 64, &["enable_data_shuffling=false", "add_eos=false", &qwen_path()]);
    let no_eos = DataIterator::new(&c, 0, 1).unwrap().next_batch().unwrap();
    assert_eq!(segments(&no_eos).len(), 2, "\"x\" is one token: no example without EOS");

    // A top-level JSON array is read like JSON lines.
    let g = dir.path().join("a.json");
    fs::write(&g, serde_json::json!([{"text": texts[0]}, {"text": texts[1]}]).to_string()).unwrap();
    let c = hf("json", &g, 1, 64, &["enable_data_shuffling=false", &qwen_path()]);
    let from_array = DataIterator::new(&c, 0, 1).unwrap().next_batch().unwrap();
    assert_eq!(segments(&from_array), segs[..2].to_vec());
}

#[test]
fn shakespeare_text_lines_with_qwen3() {
    let plays = root().join("assets/text/shakespeare");
    let files = plays.join("*e*t_gut.txt"); // hamlet, tempest, twelfth_night
    let c = hf("text", &files, 4, 64, &[&qwen_path(), "data_shuffle_seed=3"]);
    let mut it = DataIterator::new(&c, 0, 1).unwrap();
    let mut lines = HashSet::new();
    for p in glob::glob(files.to_str().unwrap()).unwrap() {
        let text = fs::read_to_string(p.unwrap()).unwrap();
        lines.extend(text.lines().map(|l| l.trim_end_matches('\r').to_string()));
    }
    let (docs, _) = it.documents();
    assert!(docs > 5000, "one document per line: {docs}");
    let tok = Tokenizer::load(&root().join("assets/tokenizers/qwen3-tokenizer")).unwrap();
    let eos = tok.eos_ids()[0] as i32;
    let mut n = 0;
    for _ in 0..5 {
        let b = it.next_batch().unwrap();
        assert!(b.num_target_tokens() > 4 * 50, "rows are well packed");
        for (inp, tgt) in segments(&b) {
            assert_eq!(&inp[1..], &tgt[..tgt.len() - 1]);
            let mut ids: Vec<i64> = inp.iter().map(|&i| i as i64).collect();
            if *tgt.last().unwrap() != eos {
                ids.push(*tgt.last().unwrap() as i64); // truncated at 64 pairs
            }
            let text = tok.decode(&ids).unwrap();
            assert!(lines.contains(&text) || lines.iter().any(|l| l.starts_with(&text)), "{text:?} is a line");
            n += 1;
        }
    }
    assert!(n > 20);
}

#[test]
fn text_format_splits_lines_like_hf() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.txt");
    fs::write(&f, "one\r\ntwo\n\nthree\rfour").unwrap();
    let c = hf("text", &f, 1, 32, &[&qwen_path(), "enable_data_shuffling=false"]);
    let mut it = DataIterator::new(&c, 0, 1).unwrap();
    assert_eq!(it.documents(), (5, 5), "one, two, '', three, four");
    let tok = Tokenizer::load(&root().join("assets/tokenizers/qwen3-tokenizer")).unwrap();
    let b = it.next_batch().unwrap();
    let texts: Vec<String> = segments(&b).iter().map(|(i, _)| tok.decode(&i.iter().map(|&x| x as i64).collect::<Vec<_>>()).unwrap()).collect();
    assert_eq!(texts, ["one", "two", "three", "four"]);
}

#[test]
fn same_seed_same_batches_other_seed_other_order() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.jsonl");
    write_ids_jsonl(&f, &numbered_docs(&vec![6; 40]));
    let run = |extra: &[&str]| {
        let mut a = vec!["train_data_columns=ids", "num_epoch=2"];
        a.extend_from_slice(extra);
        all_batches(&mut DataIterator::new(&hf("json", &f, 2, 10, &a), 0, 1).unwrap())
    };
    let firsts = |bs: &[Batch]| -> Vec<i32> { bs.iter().flat_map(|b| segments(b).into_iter().map(|(i, _)| i[0] / 1000)).collect() };
    let a = run(&["data_shuffle_seed=5"]);
    assert_eq!(a, run(&["data_shuffle_seed=5"]));
    let b = run(&["data_shuffle_seed=6"]);
    assert_ne!(firsts(&a), firsts(&b));
    let order = firsts(&a);
    assert_eq!(order.len(), 80);
    assert_ne!(order[..40], order[40..], "each epoch has its own permutation");
    let mut e0 = order[..40].to_vec();
    e0.sort();
    assert_eq!(e0, (0..40).collect::<Vec<_>>());
    assert_eq!(firsts(&run(&["enable_data_shuffling=false"]))[..40], (0..40).collect::<Vec<_>>()[..]);
}

#[test]
fn two_hosts_are_disjoint_and_cover_everything() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.jsonl");
    write_ids_jsonl(&f, &numbered_docs(&(0..51).map(|i| 2 + i % 7).collect::<Vec<_>>()));
    let c = hf("json", &f, 4, 12, &["train_data_columns=ids"]);
    let docs_of = |host| -> Vec<i32> {
        let bs = all_batches(&mut DataIterator::new(&c, host, 2).unwrap());
        assert!(bs.iter().all(|b| b.rows == 2), "each host loads half the global batch");
        bs.iter().flat_map(|b| segments(b).into_iter().map(|(i, _)| i[0] / 1000)).collect()
    };
    let (h0, h1) = (docs_of(0), docs_of(1));
    assert_eq!((h0.len(), h1.len()), (26, 25));
    let (s0, s1): (BTreeSet<i32>, BTreeSet<i32>) = (h0.iter().copied().collect(), h1.iter().copied().collect());
    assert!(s0.is_disjoint(&s1));
    assert_eq!(s0.union(&s1).copied().collect::<Vec<_>>(), (0..51).collect::<Vec<_>>());
}

#[test]
fn restore_equals_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.jsonl");
    write_ids_jsonl(&f, &numbered_docs(&(0..23).map(|i| 1 + (i * 5) % 13).collect::<Vec<_>>()));
    for extra in [&["packing=true"][..], &["packing=false"], &["use_truncation=false"], &["max_segments_per_seq=2"]] {
        let mut a = vec!["train_data_columns=ids", "num_epoch=3", "data_shuffle_seed=11"];
        a.extend_from_slice(extra);
        let c = hf("json", &f, 2, 6, &a);
        let whole = all_batches(&mut DataIterator::new(&c, 0, 1).unwrap());
        assert!(whole.len() > 8, "{}", whole.len());
        let mut epochs_crossed = false;
        for cut in 0..whole.len() {
            let mut it = DataIterator::new(&c, 0, 1).unwrap();
            for b in &whole[..cut] {
                assert_eq!(&it.next_batch().unwrap(), b);
            }
            let saved = serde_json::to_string(&it.state()).unwrap();
            drop(it);
            let state: serde_json::Value = serde_json::from_str(&saved).unwrap();
            epochs_crossed |= state["epoch"].as_u64().unwrap() > 0;
            let mut resumed = DataIterator::restore(&c, 0, 1, &state).unwrap();
            assert_eq!(resumed.batches(), cut as u64);
            let rest = all_batches(&mut resumed);
            assert_eq!(rest, whole[cut..], "cut after {cut} batches ({extra:?}), state {saved}");
        }
        assert!(epochs_crossed);
    }
}

#[test]
fn restore_checks_settings_and_two_host_state() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.jsonl");
    write_ids_jsonl(&f, &numbered_docs(&[5; 30]));
    let c = hf("json", &f, 4, 8, &["train_data_columns=ids", "data_shuffle_seed=1"]);
    let mut it = DataIterator::new(&c, 1, 2).unwrap();
    it.next_batch().unwrap();
    let state = it.state();
    let next = it.next_batch().unwrap();
    assert_eq!(DataIterator::restore(&c, 1, 2, &state).unwrap().next_batch().unwrap(), next);
    let other_seed = hf("json", &f, 4, 8, &["train_data_columns=ids", "data_shuffle_seed=2"]);
    let e = DataIterator::restore(&other_seed, 1, 2, &state).err().unwrap();
    assert!(matches!(&e, DataError::StateMismatch { key, .. } if key == "data_shuffle_seed"), "{e}");
    let e = DataIterator::restore(&c, 0, 2, &state).err().unwrap();
    assert!(e.to_string().contains("process_index"), "{e}");
    let e = DataIterator::restore(&c, 1, 2, &serde_json::json!({"version": 1})).err().unwrap();
    assert!(matches!(e, DataError::BadState(_)), "{e}");

    // Synthetic state round-trips too.
    let s = cfg(&["dataset_type=synthetic", "per_device_batch_size=1", "max_target_length=4"]);
    let mut it = DataIterator::new(&s, 0, 1).unwrap();
    let b = it.next_batch().unwrap();
    let mut r = DataIterator::restore(&s, 0, 1, &it.state()).unwrap();
    assert_eq!((r.batches(), r.next_batch().unwrap()), (1, b));
}
