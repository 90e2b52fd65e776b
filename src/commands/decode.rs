//! `maxtext decode` (MaxText's `decode`): tokenize `prompt` (or take `prompt_token_ids`), prefill, then
//! generate until EOS or `max_target_length`, streaming text; prints prefill time, time to first token and
//! decode tokens/s; `decode_output_path=FILE` writes one JSON line per sequence.

use super::check_logits::log_softmax;
use super::processes::one_process_only;
use super::setup::{has_weights, init_on_device, load_config, open_runtime, take_init, with_param_regions};
use anyhow::{bail, Context, Result};
use maxtext::config::Config;
use maxtext::data::{local_tokenizer_path, require_huggingface, TextStream, Tokenizer};
use maxtext::runtime::Generator;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The shipped Qwen3 tokenizer (MaxText's `assets/tokenizers/...` convention).
const SHIPPED_QWEN3: &str = "assets/tokenizers/qwen3-tokenizer";

/// `tokenizer_path` when it is a local path (or a `gs://` one, copied locally first); else the shipped Qwen3 tokenizer for Qwen3-Next models (the
/// default path is a hub id, and there is no network to fetch it).
pub(crate) fn tokenizer(cfg: &Config) -> Result<Option<Tokenizer>> {
    require_huggingface(cfg.data.tokenizer_type)?;
    let given = cfg.data.tokenizer_path.clone().unwrap_or_default();
    if let Some(staged) = local_tokenizer_path(&given)? {
        return Ok(Some(Tokenizer::load(&staged)?));
    }
    let local = PathBuf::from(&given);
    let path = if !given.is_empty() && local.exists() {
        local
    } else {
        let shipped = [PathBuf::from(SHIPPED_QWEN3), Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_QWEN3)];
        match shipped.into_iter().find(|p| p.is_dir()) {
            Some(p) => {
                if !given.is_empty() {
                    eprintln!("tokenizer_path={given} is not a local path; using the shipped Qwen3 tokenizer {}", p.display());
                }
                p
            }
            None if given.is_empty() => return Ok(None),
            None => bail!("tokenizer_path={given} does not exist (give a directory with tokenizer.json)"),
        }
    };
    Ok(Some(Tokenizer::load(&path)?))
}

pub fn run(args: &[String]) -> Result<()> {
    let cfg = load_config(args)?;
    one_process_only(&cfg, "decode")?;
    let (rt, cfg) = open_runtime(cfg)?;
    let tok = tokenizer(&cfg)?;
    let batch = cfg.batch.global_batch_size_to_load.max(1);
    let prompts: Vec<Vec<i64>> = if !cfg.decode.prompt_token_ids.is_empty() {
        vec![cfg.decode.prompt_token_ids.clone()]
    } else {
        let tok = tok.as_ref().context("no tokenizer: set tokenizer_path, or give prompt_token_ids")?;
        // Several prompts in one batch: `prompt="first;second"` (the form of MaxText's golden generator).
        let texts: Vec<&str> = if batch > 1 { cfg.decode.prompt.split(';').collect() } else { vec![cfg.decode.prompt.as_str()] };
        texts.iter().map(|t| tok.encode(t, cfg.data.add_bos)).collect::<Result<_, _>>()?
    };
    if prompts.iter().any(|p| p.is_empty()) {
        bail!("the prompt is empty: give prompt=\"...\" or prompt_token_ids=1,2,3");
    }
    if prompts.len() > batch {
        bail!("{} prompts but the batch holds {batch}: raise per_device_batch_size", prompts.len());
    }
    // MaxText fills the batch with the prompt; rows past the given prompts repeat the last one.
    let mut rows = prompts.clone();
    while rows.len() < batch {
        rows.push(prompts.last().unwrap().clone());
    }
    let decls = maxtext::program::param_decls(&cfg);
    // Parameters go to the devices shard by shard, straight from the checkpoint.
    let gen = if has_weights(&cfg) {
        with_param_regions(&cfg, &decls, |read| Generator::from_regions(&rt, &cfg, decls.len(), read))?
    } else {
        let mut init = init_on_device(&rt, &cfg, &decls)?;
        Generator::from_uploads(&rt, &cfg, decls.len(), |_, exe, _, i| -> Result<Vec<maxtext::pjrt::Buffer>> {
            take_init(&mut init, i, exe.addressable_devices())
        })?
    };
    let eos = tok.as_ref().map(|t| t.eos_ids()).unwrap_or_default();
    // The vocabulary size is read once: asking the tokenizer per token rebuilds its whole vocabulary map.
    let tok_vocab = tok.as_ref().map(|t| t.vocab_size()).unwrap_or(0);
    let texts_ok = |ids: &[i64]| tok.as_ref().filter(|_| ids.iter().all(|&i| i >= 0 && (i as usize) < tok_vocab));
    let stream = rows.len() == 1;
    // Streaming decodes only the new tokens' window (TextStream), so a step's host cost does not grow
    // with the sequence; a token outside the tokenizer's vocabulary stops the text stream.
    let mut text_stream = TextStream::new(true);
    let mut streaming = stream && tok.is_some();
    if stream {
        if let Some(t) = texts_ok(&rows[0]) {
            print!("{}", t.decode(&rows[0])?);
        }
    }
    // `return_log_prob`: the logits of every step come back so that each token's log-probability (log-softmax
    // of the raw logits at the chosen id, as MaxText's engine reports it) can be given.
    let want_log_probs = cfg.decode.return_log_prob;
    let out = gen.generate(&rows, usize::MAX, &eos, want_log_probs, |step| {
        if !streaming {
            return;
        }
        if let (Some(id), Some(t)) = (step[0], tok.as_ref()) {
            if id < 0 || id as usize >= tok_vocab {
                streaming = false;
                return;
            }
            if let Ok(text) = text_stream.push(t, id) {
                if !text.is_empty() {
                    print!("{text}");
                    let _ = std::io::stdout().flush();
                }
            }
        }
    })?;
    if streaming {
        if let Some(t) = tok.as_ref() {
            print!("{}", text_stream.finish(t).unwrap_or_default());
        }
    }
    let log_probs: Vec<Vec<f64>> = if want_log_probs {
        let log_prob_of = |logits: &[f32], token: i64| {
            let row: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
            log_softmax(&row).get(token as usize).copied().unwrap_or(f64::NAN)
        };
        out.generated.iter().zip(&out.logits).map(|(g, ls)| g.iter().zip(ls).map(|(&t, l)| log_prob_of(l, t)).collect()).collect()
    } else {
        Vec::new()
    };
    if stream {
        println!();
    } else {
        for (r, g) in out.generated.iter().enumerate().take(prompts.len()) {
            match texts_ok(&rows[r]).zip(texts_ok(g)) {
                Some((t, _)) => println!("[{r}] {}{}", t.decode(&rows[r])?, t.decode(g)?),
                None => println!("[{r}] {:?} -> {:?}", rows[r], g),
            }
        }
    }
    for (r, lp) in log_probs.iter().enumerate().take(prompts.len()) {
        println!("[{r}] log_probs: {}", lp.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(" "));
    }
    let new_tokens: usize = out.generated.iter().map(|g| g.len()).sum();
    let decode_s = out.decode_time.as_secs_f64();
    eprintln!(
        "prefill {:.1} ms ({} rows, longest prompt {} tokens), time to first token {:.1} ms, decode {} steps: {:.1} tokens/s ({} new tokens)",
        out.prefill_time.as_secs_f64() * 1e3,
        rows.len(),
        rows.iter().map(|r| r.len()).max().unwrap_or(0),
        out.first_token_time.as_secs_f64() * 1e3,
        out.decode_steps,
        if decode_s > 0.0 { (out.decode_steps * rows.len()) as f64 / decode_s } else { 0.0 },
        new_tokens
    );
    if out.decode_steps > 0 {
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e3 / out.decode_steps as f64;
        eprintln!(
            "decode step: {:.2} ms on the device (execute to token on the host), {:.3} ms host overhead",
            per(out.device_time),
            per(out.decode_time.saturating_sub(out.device_time))
        );
    }
    if let Some(loc) = &cfg.decode.decode_output_path {
        // Built whole and written once: a gs:// object cannot be appended to, and a local file written
        // this way holds either nothing or every line.
        let mut f = Vec::new();
        for (r, g) in out.generated.iter().enumerate().take(prompts.len()) {
            let text = match texts_ok(g) {
                Some(t) => t.decode(g)?,
                None => String::new(),
            };
            let mut line = serde_json::json!({"prompt_tokens": rows[r], "generated_tokens": g, "text": text});
            if let Some(lp) = log_probs.get(r) {
                line["log_probs"] = serde_json::json!(lp);
            }
            writeln!(f, "{line}")?;
        }
        loc.write(&f).with_context(|| format!("writing decode_output_path {loc}"))?;
    }
    eprintln!("{}", rt.cache().summary());
    Ok(())
}
