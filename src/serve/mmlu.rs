//! MMLU, 0-shot, as lm-eval's `mmlu` task and MaxText's eval score it: the prompt
//! "The following are multiple choice questions (with answers) about {subject}.\n\n{question}\nA. ..\nB. ..
//! \nC. ..\nD. ..\nAnswer:", and for each letter the log-likelihood of " {letter}" after it; the answer is
//! the letter with the largest sum (`acc`). Tokenization follows lm-eval: the continuation is
//! `encode(context + continuation)[len(encode(context)):]`, and a too-long input loses tokens on the left.
//! Scored through the serving engine, i.e. the same prefill program `maxtext serve` answers lm-eval with.

use super::engine::{Engine, EngineError, SeqEvent, SeqRequest};
use crate::data::Tokenizer;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One question in the cais/mmlu schema (`<mmlu dir>/test/<subject>.jsonl`, e.g. `assets/mmlu`).
#[derive(Deserialize, Debug, Clone)]
pub struct Question {
    pub question: String,
    pub subject: String,
    pub choices: Vec<String>,
    pub answer: usize,
}

pub const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

#[derive(Debug, thiserror::Error)]
pub enum MmluError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("unknown MMLU subject `{0}` (files are <data_dir>/test/<subject>.jsonl)")]
    Subject(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("tokenizing: {0}")]
    Tokenize(String),
    #[error("scoring failed: {0}")]
    Failed(String),
}

/// The subjects present under `dir/test/`, sorted.
pub fn subjects(dir: &Path) -> Result<Vec<String>, MmluError> {
    let test = dir.join("test");
    let rd = std::fs::read_dir(&test).map_err(|e| MmluError::Read { path: test.display().to_string(), reason: e.to_string() })?;
    let mut out: Vec<String> = rd.filter_map(|e| e.ok()).filter_map(|e| e.file_name().to_str()?.strip_suffix(".jsonl").map(String::from)).collect();
    out.sort();
    Ok(out)
}

/// The first `limit` questions (all when None) of `subject`.
pub fn load(dir: &Path, subject: &str, limit: Option<usize>) -> Result<Vec<Question>, MmluError> {
    let path = dir.join("test").join(format!("{subject}.jsonl"));
    if !path.is_file() {
        return Err(MmluError::Subject(subject.to_string()));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| MmluError::Read { path: path.display().to_string(), reason: e.to_string() })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let q: Question = serde_json::from_str(line).map_err(|e| MmluError::Read { path: format!("{}:{}", path.display(), n + 1), reason: e.to_string() })?;
        if q.choices.len() != 4 || q.answer >= 4 {
            return Err(MmluError::Read { path: format!("{}:{}", path.display(), n + 1), reason: "expected 4 choices and an answer in 0..4".into() });
        }
        out.push(q);
    }
    Ok(out)
}

/// lm-eval's 0-shot context (description + question), ending in "Answer:".
pub fn context(q: &Question) -> String {
    let subject = q.subject.split('_').collect::<Vec<_>>().join(" ");
    format!(
        "The following are multiple choice questions (with answers) about {subject}.\n\n{}\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
        q.question.trim(),
        q.choices[0],
        q.choices[1],
        q.choices[2],
        q.choices[3]
    )
}

/// Tokens of context + continuation, left-truncated to `max_len`, and the context length within them
/// (lm-eval's `_encode_pair` and `_loglikelihood_tokens`).
pub fn encode_pair(tok: &Tokenizer, context: &str, continuation: &str, max_len: usize) -> Result<(Vec<i64>, usize), MmluError> {
    let n_spaces = context.len() - context.trim_end().len();
    let (ctx, cont) = if n_spaces > 0 { (&context[..context.len() - n_spaces], format!("{}{continuation}", &context[context.len() - n_spaces..])) } else { (context, continuation.to_string()) };
    let enc = |s: &str| tok.encode(s, false).map_err(|e| MmluError::Tokenize(e.to_string()));
    let whole = enc(&format!("{ctx}{cont}"))?;
    let ctx_len = enc(ctx)?.len().min(whole.len());
    let cut = whole.len().saturating_sub(max_len);
    Ok((whole[cut..].to_vec(), ctx_len.saturating_sub(cut)))
}

/// Per question: the four log-likelihoods and the index of the best (first on ties, as numpy's argmax).
pub struct Scored {
    pub subject: String,
    pub loglikelihoods: [f64; 4],
    pub predicted: usize,
    pub answer: usize,
}

/// Scores `questions` through `engine` (all four choices of a batch of questions in flight at once).
pub fn score(engine: &Engine, tok: &Tokenizer, questions: &[Question], max_len: usize) -> Result<Vec<Scored>, MmluError> {
    let chunk = (engine.info.queue_capacity / 4).max(1);
    let mut out = Vec::with_capacity(questions.len());
    for qs in questions.chunks(chunk) {
        let mut pending = Vec::new();
        let mut reqs = Vec::new();
        for q in qs {
            let ctx = context(q);
            for letter in LETTERS {
                let (ids, ctx_len) = encode_pair(tok, &ctx, &format!(" {letter}"), max_len)?;
                let (mut r, rx) = SeqRequest::new(ids.clone(), 0);
                r.prompt_logprobs = true;
                reqs.push(r);
                pending.push((rx, ids.len(), ctx_len));
            }
        }
        engine.submit(reqs)?;
        let mut lls = Vec::with_capacity(pending.len());
        for (mut rx, n, ctx_len) in pending {
            let mut ll = None;
            while let Some(ev) = rx.blocking_recv() {
                match ev {
                    // Entry j is prompt position j + 1: the continuation is positions ctx_len..n.
                    SeqEvent::Prompt(p) => ll = Some(p[ctx_len.max(1) - 1..n - 1].iter().map(|t| t.logprob as f64).sum::<f64>()),
                    SeqEvent::Failed(e) => return Err(MmluError::Failed(e)),
                    _ => {}
                }
            }
            lls.push(ll.ok_or_else(|| MmluError::Failed("no prompt log-probabilities came back".into()))?);
        }
        for (q, l) in qs.iter().zip(lls.chunks(4)) {
            let lls = [l[0], l[1], l[2], l[3]];
            let mut best = 0;
            for i in 1..4 {
                if lls[i] > lls[best] {
                    best = i;
                }
            }
            out.push(Scored { subject: q.subject.clone(), loglikelihoods: lls, predicted: best, answer: q.answer });
        }
    }
    Ok(out)
}

/// (subject -> (correct, total)), in subject order.
pub fn accuracy(scored: &[Scored]) -> BTreeMap<String, (usize, usize)> {
    let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for s in scored {
        let e = m.entry(s.subject.clone()).or_default();
        e.0 += (s.predicted == s.answer) as usize;
        e.1 += 1;
    }
    m
}
