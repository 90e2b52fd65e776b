//! Autoregressive generation: parameters uploaded once and shared by the prefill and decode-step programs;
//! the decode state (KV, conv, recurrent caches) and the RNG state stay on the device between steps,
//! donated to each step. Only the new tokens (and, when asked, logits) come back to the host.

use super::decode_params::upload_decode_params;
use super::execute::{DeviceArray, RunError, Runtime};
use super::HostTensor;
use crate::config::Config;
use crate::pjrt::{Buffer, LoadedExecutable};
use crate::program::{decode_program, prefill_program, DecodeProgram};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Sharding(#[from] crate::sharding::ShardingError),
    #[error("prompt {index} is empty: give at least one token")]
    EmptyPrompt { index: usize },
    #[error("prompt {index} has {len} tokens but max_prefill_predict_length is {max}: raise max_prefill_predict_length (and max_target_length) or shorten the prompt")]
    PromptTooLong { index: usize, len: usize, max: usize },
    #[error("prompt {index} has {len} tokens, which leaves no room to generate within max_target_length={max}")]
    NoRoom { index: usize, len: usize, max: usize },
    #[error("{count} prompts given but the batch holds {batch} (per_device_batch_size x devices)")]
    BatchSize { count: usize, batch: usize },
    #[error("token id {token} in prompt {index} is outside the vocabulary (vocab_size={vocab})")]
    TokenOutOfRange { index: usize, token: i64, vocab: usize },
}

pub type Result<T> = std::result::Result<T, GenerateError>;

/// What a generation produced, per row.
pub struct Generation {
    pub prompts: Vec<Vec<i64>>,
    pub generated: Vec<Vec<i64>>,
    /// Per row, the logits each generated token was drawn from (when `keep_logits`).
    pub logits: Vec<Vec<Vec<f32>>>,
    /// Prefill execution (inputs to device, run), compilation excluded.
    pub prefill_time: Duration,
    /// Time from the start of prefill to the first token on the host (compilation excluded).
    pub first_token_time: Duration,
    pub decode_time: Duration,
    pub decode_steps: usize,
    /// Of `decode_time`, the time spent waiting for the device: each decode step's execution up to its
    /// token on the host. The rest is host overhead (inputs, bookkeeping, callbacks).
    pub device_time: Duration,
}

/// A model ready to generate: compiled programs and parameters on the device.
pub struct Generator<'r> {
    rt: &'r Runtime,
    cfg: Config,
    batch: usize,
    max_len: usize,
    decode: DecodeProgram,
    decode_exe: Arc<LoadedExecutable>,
    /// The parameters on the devices (shared by both programs).
    params: Vec<DeviceArray>,
}

/// Smallest power of two >= `n` (at least 1), capped at `cap`.
pub fn prefill_bucket(n: usize, cap: usize) -> usize {
    n.next_power_of_two().min(cap).max(n)
}

impl<'r> Generator<'r> {
    /// Compiles the decode step and uploads `params` (in declaration order) once.
    pub fn new(rt: &'r Runtime, cfg: &Config, params: &[HostTensor]) -> Result<Generator<'r>> {
        Self::from_uploads(rt, cfg, params.len(), |p, exe, arg, i| -> Result<Vec<Buffer>> { Ok(rt.upload_arg(p, exe, arg, &params[i])?) })
    }

    /// Compiles the decode step and uploads the parameters shard by shard: `read(i, offsets, dims)` gives
    /// the box of parameter `i` (declaration order) in its dtype; each distinct shard is read once.
    pub fn from_regions<E: From<RunError> + From<GenerateError>>(
        rt: &'r Runtime,
        cfg: &Config,
        num_params: usize,
        mut read: impl FnMut(usize, &[i64], &[i64]) -> std::result::Result<Vec<u8>, E>,
    ) -> std::result::Result<Generator<'r>, E> {
        Self::from_uploads(rt, cfg, num_params, |p, exe, arg, i| rt.upload_arg_sharded(p, exe, arg, |o: &[i64], d: &[i64]| read(i, o, d)))
    }

    /// Compiles the decode step and takes parameter `i`'s per-device buffers from
    /// `upload(program, exe, argument, i)` (laid out as that argument; e.g. an on-device init's results).
    pub fn from_uploads<E: From<RunError> + From<GenerateError>>(
        rt: &'r Runtime,
        cfg: &Config,
        num_params: usize,
        upload: impl FnMut(&crate::ir::Program, &LoadedExecutable, usize, usize) -> std::result::Result<Vec<Buffer>, E>,
    ) -> std::result::Result<Generator<'r>, E> {
        let batch = cfg.batch.global_batch_size_to_load.max(1);
        let max_len = cfg.data.max_target_length;
        let decode = decode_program(cfg, batch as i64, max_len as i64).map_err(GenerateError::from)?;
        let decode_exe = rt.compile(&decode.program)?;
        if decode.decls.len() != num_params {
            return Err(RunError::Arity { program: "decode_step params".into(), expected: decode.decls.len(), got: num_params }.into());
        }
        let params = upload_decode_params(rt, cfg, &decode, &decode_exe, upload)?;
        Ok(Generator { rt, cfg: cfg.clone(), batch, max_len, decode, decode_exe, params })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    fn check(&self, prompts: &[Vec<i64>]) -> Result<()> {
        if prompts.len() > self.batch {
            return Err(GenerateError::BatchSize { count: prompts.len(), batch: self.batch });
        }
        let vocab = self.cfg.model.vocab_size;
        let max_prefill = self.cfg.data.max_prefill_predict_length;
        for (index, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(GenerateError::EmptyPrompt { index });
            }
            if p.len() > max_prefill {
                return Err(GenerateError::PromptTooLong { index, len: p.len(), max: max_prefill });
            }
            if p.len() >= self.max_len {
                return Err(GenerateError::NoRoom { index, len: p.len(), max: self.max_len });
            }
            if let Some(&token) = p.iter().find(|&&t| t < 0 || t as usize >= vocab) {
                return Err(GenerateError::TokenOutOfRange { index, token, vocab });
            }
        }
        Ok(())
    }

    /// Generates up to `max_new` tokens per prompt (stopping a row at a token in `eos` or at
    /// `max_target_length`). `on_step(new_tokens)` sees each step's token per row (`None` when the row is done).
    pub fn generate(&self, prompts: &[Vec<i64>], max_new: usize, eos: &[i64], keep_logits: bool, mut on_step: impl FnMut(&[Option<i64>])) -> Result<Generation> {
        self.check(prompts)?;
        let (b, rows) = (self.batch, prompts.len());
        let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(1);
        let bucket = prefill_bucket(longest, self.cfg.data.max_prefill_predict_length);
        let prefill = prefill_program(&self.cfg, b as i64, bucket as i64, self.max_len as i64)?;
        let prefill_exe = self.rt.compile(&prefill.program)?;
        let t0 = Instant::now();
        // Right-padded prompts; rows beyond the given prompts repeat the first one and are ignored.
        let mut tokens = vec![0i32; b * bucket];
        let mut seg = vec![0i32; b * bucket];
        let mut lengths = vec![0i32; b];
        for r in 0..b {
            let p = &prompts[r.min(rows - 1)];
            for (t, &tok) in p.iter().enumerate() {
                tokens[r * bucket + t] = tok as i32;
                seg[r * bucket + t] = 1;
            }
            lengths[r] = p.len() as i32;
        }
        let positions: Vec<i32> = (0..b * bucket).map(|i| (i % bucket) as i32).collect();
        let dims = [b as i64, bucket as i64];
        // The sampling key: MaxText seeds decode from its PRNG seed key as well.
        let seed = self.cfg.train.init_weights_seed;
        let host_inputs = [
            HostTensor::from_i32(&tokens, &dims),
            HostTensor::from_i32(&positions, &dims),
            HostTensor::from_i32(&seg, &dims),
            HostTensor::from_i32(&lengths, &[b as i64]),
        ];
        let pp = &prefill.program;
        let inputs = self.rt.upload_group(pp, &prefill_exe, "inputs", &host_inputs)?;
        let rng = self.rt.upload_group(pp, &prefill_exe, "rng", &[HostTensor::from_u64(&[seed, 0], &[2])])?;
        let mut outs = self.rt.execute(pp, &prefill_exe, &[("inputs", &inputs), ("rng", &rng), ("params", &self.params)])?;
        let prefill_time = t0.elapsed();

        let mut generated: Vec<Vec<i64>> = vec![Vec::new(); rows];
        let mut logits: Vec<Vec<Vec<f32>>> = vec![Vec::new(); rows];
        let mut done = vec![false; rows];
        let mut pos: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
        let mut program = pp;
        let mut first_token_time = Duration::ZERO;
        let t_decode = Instant::now();
        let mut steps = 0;
        let mut device_time = Duration::ZERO;
        let mut t_exec: Option<Instant> = None;
        loop {
            let next = self.rt.download_group(program, &outs, "token")?[0].to_i64();
            if let Some(t) = t_exec.take() {
                device_time += t.elapsed();
            }
            let step_logits = if keep_logits { Some(self.rt.download_group(program, &outs, "logits")?[0].to_f32()) } else { None };
            if first_token_time.is_zero() {
                first_token_time = t0.elapsed();
            }
            let vocab = self.cfg.model.vocab_size;
            let mut shown = vec![None; rows];
            for r in 0..rows {
                if done[r] {
                    continue;
                }
                generated[r].push(next[r]);
                shown[r] = Some(next[r]);
                if let Some(l) = &step_logits {
                    logits[r].push(l[r * vocab..(r + 1) * vocab].to_vec());
                }
                // The token just drawn goes at position pos[r]; stop when it cannot be fed back.
                if eos.contains(&next[r]) || generated[r].len() >= max_new || pos[r] + 1 > self.max_len as i64 - 1 {
                    done[r] = true;
                }
            }
            on_step(&shown);
            if done.iter().all(|d| *d) {
                break;
            }
            // Feed each row's last token at its position; done rows repeat theirs (ignored).
            let toks: Vec<i32> = (0..b).map(|r| *generated[r.min(rows - 1)].last().unwrap() as i32).collect();
            let poss: Vec<i32> = (0..b).map(|r| pos[r.min(rows - 1)] as i32).collect();
            let dp = &self.decode.program;
            let step_inputs = [HostTensor::from_i32(&toks, &[b as i64, 1]), HostTensor::from_i32(&poss, &[b as i64, 1])];
            let inputs = self.rt.upload_group(dp, &self.decode_exe, "inputs", &step_inputs)?;
            let (rng, cache) = (outs.take("rng"), outs.take("cache"));
            t_exec = Some(Instant::now());
            outs = self.rt.execute(dp, &self.decode_exe, &[("inputs", &inputs), ("rng", &rng), ("cache", &cache), ("params", &self.params)])?;
            program = dp;
            steps += 1;
            for p in pos.iter_mut() {
                *p += 1;
            }
        }
        Ok(Generation {
            prompts: prompts.to_vec(),
            generated,
            logits,
            prefill_time,
            first_token_time,
            decode_time: t_decode.elapsed(),
            decode_steps: steps,
            device_time,
        })
    }
}
