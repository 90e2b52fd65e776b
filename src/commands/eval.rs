//! `maxtext eval mmlu [base.yml] key=value ... [subjects=a,b] [limit=N] [mmlu_path=DIR] [mmlu_output=FILE]`:
//! 0-shot MMLU by the log-likelihood of the four answer letters (lm-eval's `mmlu` prompt and `acc`), scored by the serving
//! engine, i.e. the programs `maxtext serve` answers lm-eval with. Prints per-subject and overall accuracy
//! (overall = all questions pooled, lm-eval's `weight_by_size`); `mmlu_output` writes one JSON line per
//! question (subject, the four log-likelihoods, predicted, answer). Prompts longer than
//! `max_prefill_predict_length` lose tokens on the left, as lm-eval does with `max_length` one above it.

use super::decode::tokenizer;
use super::processes::one_process_only;
use super::setup::{load_config, start_engine};
use anyhow::{bail, Context, Result};
use maxtext::serve::mmlu;
use std::path::{Path, PathBuf};

/// Where the MMLU test split lives unless `mmlu_path` says: the full split in the project's shared
/// fixtures (`../shared/fixtures/mmlu`, from here or the source tree) when it is there, else the three
/// subjects shipped in `assets/mmlu` (said on stderr).
fn default_mmlu_dir() -> Option<PathBuf> {
    let under = |rel: &str| [PathBuf::from(rel), Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)];
    if let Some(full) = under("../shared/fixtures/mmlu").into_iter().find(|p| p.join("test").is_dir()) {
        return Some(full);
    }
    let shipped = under("assets/mmlu").into_iter().find(|p| p.join("test").is_dir())?;
    eprintln!("MMLU: the 3 subjects shipped in {} (give mmlu_path=DIR for the full test split)", shipped.display());
    Some(shipped)
}

pub fn run(args: &[String]) -> Result<()> {
    let Some((task, rest)) = args.split_first() else { bail!("usage: maxtext eval mmlu [base.yml] key=value ... [subjects=a,b] [limit=N]") };
    if task != "mmlu" {
        bail!("unknown eval task `{task}` (known: mmlu)");
    }
    let (mut subjects, mut limit, mut dir, mut out_path) = (None, None, None, None);
    let mut cfg_args = Vec::new();
    for a in rest {
        match a.split_once('=') {
            Some(("subjects", v)) => subjects = Some(v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect::<Vec<_>>()),
            Some(("limit", v)) => limit = Some(v.parse::<usize>().with_context(|| format!("limit={v}: not a count"))?),
            Some(("mmlu_path", v)) => dir = Some(PathBuf::from(v)),
            Some(("mmlu_output", v)) => out_path = Some(PathBuf::from(v)),
            _ => cfg_args.push(a.clone()),
        }
    }
    let dir = dir.or_else(default_mmlu_dir).context("MMLU data not found: give mmlu_path=DIR (with DIR/test/<subject>.jsonl)")?;
    let all = mmlu::subjects(&dir)?;
    let subjects = subjects.unwrap_or_else(|| all.clone());
    let mut questions = Vec::new();
    for s in &subjects {
        questions.extend(mmlu::load(&dir, s, limit)?);
    }
    if questions.is_empty() {
        bail!("no questions selected");
    }
    let cfg = load_config(&cfg_args)?;
    let tok = tokenizer(&cfg)?.context("eval needs a tokenizer: set tokenizer_path")?;
    one_process_only(&cfg, "eval")?;
    let (engine, _) = start_engine(cfg, 256)?;
    let max_len = engine.info.max_prefill.min(engine.info.max_len - 1);
    eprintln!("mmlu: {} questions in {} subjects from {}, 0-shot, prompts up to {max_len} tokens", questions.len(), subjects.len(), dir.display());
    let t0 = std::time::Instant::now();
    let scored = mmlu::score(&engine, &tok, &questions, max_len)?;
    let acc = mmlu::accuracy(&scored);
    if let Some(path) = &out_path {
        let mut text = String::new();
        for s in &scored {
            let line = serde_json::json!({"subject": s.subject, "loglikelihoods": s.loglikelihoods, "predicted": s.predicted, "answer": s.answer});
            text.push_str(&format!("{line}\n"));
        }
        std::fs::write(path, text).with_context(|| format!("writing mmlu_output {}", path.display()))?;
    }
    let (mut c, mut n) = (0, 0);
    for (s, (ok, total)) in &acc {
        println!("{s:<40} {:.4} ({ok}/{total})", *ok as f64 / *total as f64);
        c += ok;
        n += total;
    }
    println!("{:<40} {:.4} ({c}/{n})", "overall", c as f64 / n as f64);
    eprintln!("mmlu: {:.1} s ({:.1} questions/s)", t0.elapsed().as_secs_f64(), n as f64 / t0.elapsed().as_secs_f64());
    Ok(())
}
