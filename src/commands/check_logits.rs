//! `maxtext check-logits`: MaxText's `forward_pass_logit_checker` in golden-file mode. For every prompt of
//! a golden JSONL (`{"tokens": [...], "logits": [[...], ...]}` per line), run the forward pass on the
//! tokens and compare every position: KL(P_golden || Q_ours) over the vocabulary, max |Δlogit|, top-1.

use super::processes::one_process_only;
use super::setup::{describe_mesh, load_config, open_runtime, with_param_regions};
use anyhow::{bail, Context, Result};
use maxtext::program::{forward_program, ForwardProgram};
use maxtext::runtime::{DeviceArray, HostTensor};
use std::io::BufRead;
use std::path::Path;

struct Golden {
    description: String,
    tokens: Vec<i64>,
    logits: Vec<Vec<f64>>,
}

fn read_golden(path: &Path, vocab: usize) -> Result<Vec<Golden>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening golden_logits_path {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}:{}: not a JSON line", path.display(), n + 1))?;
        let tokens: Vec<i64> = serde_json::from_value(v["tokens"].clone())
            .with_context(|| format!("{}:{}: `tokens` must be a list of token ids", path.display(), n + 1))?;
        let logits: Vec<Vec<f64>> = serde_json::from_value(v["logits"].clone())
            .with_context(|| format!("{}:{}: `logits` must be a [positions][vocab] list", path.display(), n + 1))?;
        if tokens.is_empty() || logits.len() != tokens.len() {
            bail!("{}:{}: {} tokens but {} rows of logits", path.display(), n + 1, tokens.len(), logits.len());
        }
        if let Some(bad) = tokens.iter().find(|&&t| t < 0 || t as usize >= vocab) {
            bail!("{}:{}: token id {bad} is outside the model's vocabulary (vocab_size={vocab})", path.display(), n + 1);
        }
        if let Some(row) = logits.iter().find(|r| r.len() != vocab) {
            bail!("{}:{}: golden logits have {} entries per position but vocab_size is {vocab}", path.display(), n + 1, row.len());
        }
        let description = v["description"].as_str().or(v["prompt"].as_str()).unwrap_or("").to_string();
        out.push(Golden { description, tokens, logits });
    }
    if out.is_empty() {
        bail!("{} holds no prompts", path.display());
    }
    Ok(out)
}

/// log softmax(x) on the host, in f64 (also `decode`'s `return_log_prob`).
pub(crate) fn log_softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

fn argmax(x: &[f64]) -> usize {
    x.iter().enumerate().fold(0, |b, (i, v)| if *v > x[b] { i } else { b })
}

/// Per-position comparison figures.
#[derive(Default)]
pub struct Figures {
    pub max_kl: f64,
    pub sum_kl: f64,
    pub positions: usize,
    pub max_abs: f64,
    pub top1_agree: usize,
    /// Logits outside `atol + rtol·|golden|` (MaxText's `jnp.allclose` check), when atol is set.
    pub not_close: usize,
}

impl Figures {
    fn add(&mut self, golden: &[f64], ours: &[f64], tolerance: Option<(f64, f64)>) {
        if let Some((atol, rtol)) = tolerance {
            self.not_close += golden.iter().zip(ours).filter(|(g, o)| !((*o - *g).abs() <= atol + rtol * g.abs())).count();
        }
        let (lp, lq) = (log_softmax(golden), log_softmax(ours));
        let kl: f64 = lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum();
        self.max_kl = self.max_kl.max(kl);
        self.sum_kl += kl;
        self.positions += 1;
        self.max_abs = golden.iter().zip(ours).fold(self.max_abs, |m, (a, b)| m.max((a - b).abs()));
        self.top1_agree += usize::from(argmax(golden) == argmax(ours));
    }

    /// Adds another set of positions' figures.
    fn merge(&mut self, o: &Figures) {
        self.max_kl = self.max_kl.max(o.max_kl);
        self.sum_kl += o.sum_kl;
        self.positions += o.positions;
        self.max_abs = self.max_abs.max(o.max_abs);
        self.top1_agree += o.top1_agree;
        self.not_close += o.not_close;
    }

    fn line(&self) -> String {
        format!(
            "max KL {:.3e}  mean KL {:.3e}  max |dlogit| {:.3e}  top-1 {}/{}",
            self.max_kl,
            self.sum_kl / self.positions.max(1) as f64,
            self.max_abs,
            self.top1_agree,
            self.positions
        )
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let cfg = load_config(args)?;
    one_process_only(&cfg, "check-logits")?;
    let (rt, cfg) = open_runtime(cfg)?;
    let path = cfg.tools.golden_logits_path.clone().context("set golden_logits_path=FILE (a golden JSONL)")?;
    // MaxText's checker needs max_kl_div or atol; with neither, the KL bound defaults to 2e-4 here.
    let tolerance = cfg.tools.atol.map(|atol| (atol, cfg.tools.rtol));
    let max_kl_div = match (cfg.tools.max_kl_div, tolerance) {
        (Some(m), _) => Some(m),
        (None, Some(_)) => None,
        (None, None) => Some(2e-4),
    };
    // `skip_first_token`: position 0 is left out of every comparison, as in MaxText's checker.
    let start = usize::from(cfg.tools.skip_first_token);
    let vocab = cfg.model.vocab_size;
    let goldens = read_golden(&path, vocab)?;
    // Parameters go to the devices once, shard by shard from the checkpoint, and serve every prompt's
    // forward program (they all lay the parameters out the same way and never donate them).
    let mut params: Option<Vec<DeviceArray>> = None;
    let mut total = Figures::default();
    for (i, g) in goldens.iter().enumerate() {
        let len = g.tokens.len() as i64;
        let fp: ForwardProgram = forward_program(&cfg, 1, len)?;
        let exe = rt.compile(&fp.program)?;
        if params.is_none() {
            let args: Vec<usize> = fp.program.args("params").collect();
            params = Some(with_param_regions(&cfg, &fp.decls, |read| {
                args.iter().enumerate().map(|(k, &a)| rt.upload_arg_sharded(&fp.program, &exe, a, |o: &[i64], d: &[i64]| read(k, o, d))).collect::<Result<Vec<_>>>()
            })?);
        }
        let tokens: Vec<i32> = g.tokens.iter().map(|&t| t as i32).collect();
        let positions: Vec<i32> = (0..len as i32).collect();
        let inputs = rt.upload_group(&fp.program, &exe, "inputs", &[HostTensor::from_i32(&tokens, &[1, len]), HostTensor::from_i32(&positions, &[1, len])])?;
        let out = rt.execute(&fp.program, &exe, &[("inputs", &inputs), ("params", params.as_ref().unwrap())])?;
        let logits = rt.download_group(&fp.program, &out, "logits")?[0].to_f64();
        let mut fig = Figures::default();
        for (t, row) in g.logits.iter().enumerate().skip(start) {
            fig.add(row, &logits[t * vocab..(t + 1) * vocab], tolerance);
        }
        total.merge(&fig);
        println!("prompt {i} ({} tokens{}): {}", len, if g.description.is_empty() { String::new() } else { format!(", {}", g.description) }, fig.line());
    }
    println!("all {} prompts ({} positions): {}", goldens.len(), total.positions, total.line());
    println!("dtype={} weight_dtype={} scan_layers={} devices={}", cfg.compute.dtype, cfg.compute.weight_dtype, cfg.compute.scan_layers, describe_mesh(&cfg));
    if let Some((atol, rtol)) = tolerance {
        if total.not_close > 0 {
            bail!("{} logits differ by more than atol {atol:e} + rtol {rtol:e}·|golden| (max |dlogit| {:.3e})", total.not_close, total.max_abs);
        }
        println!("PASS: every logit within atol {atol:e} + rtol {rtol:e}·|golden|");
    }
    if let Some(max_kl_div) = max_kl_div {
        if total.max_kl >= max_kl_div {
            bail!("max KL {:.3e} >= max_kl_div {max_kl_div:e}", total.max_kl);
        }
        println!("PASS: max KL {:.3e} < max_kl_div {max_kl_div:e}", total.max_kl);
    }
    eprintln!("{}", rt.cache().summary());
    Ok(())
}
