//! `maxtext`: the command line. MaxText style: a subcommand, a base yml, then `key=value` overrides.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use maxtext::config::{self, Config};
use maxtext::pjrt::{self, open_client};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "maxtext", version, about = "MaxText's Qwen3-Next support, in Rust: StableHLO + PJRT")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Every subcommand takes `[base.yml] key=value ...` (MaxText's command line).
#[derive(Subcommand)]
enum Command {
    /// Pretrain or fine-tune (MaxText's `train`).
    Train(Args),
    /// Convert a HuggingFace checkpoint to Orbax, or back (`direction=to_hf`).
    Convert(Args),
    /// Prefill + autoregressive decode of a prompt.
    Decode(Args),
    /// Compare the forward pass with golden HF logits (MaxText's forward_pass_logit_checker).
    CheckLogits(Args),
    /// Compile ahead of time for a TPU topology (`compile_topology=v5p-128`), no device needed.
    Compile(Args),
    /// Write StableHLO, optimized HLO, memory stats and cost analysis of a program.
    ExportHlo(Args),
    /// List the platform, plugin and devices (like `jax.devices()`).
    Devices(Args),
}

#[derive(clap::Args)]
struct Args {
    /// `[configs/base.yml] key=value ...`
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MAXTEXT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices(a) => devices(&a.args),
        Command::Train(_) => not_built("train", "the training issue (autodiff, AdamW, data pipeline)"),
        Command::Convert(_) => not_built("convert", "the Orbax checkpoint issue"),
        Command::Decode(_) => not_built("decode", "the decode issue"),
        Command::CheckLogits(_) => not_built("check-logits", "the forward-pass issue"),
        Command::Compile(_) => not_built("compile", "the TPU AOT work"),
        Command::ExportHlo(_) => not_built("export-hlo", "the forward-pass issue"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn not_built(name: &str, lands_with: &str) -> Result<()> {
    anyhow::bail!("`maxtext {name}` is not built yet in this version; it lands with {lands_with}")
}

/// The base yml: the first argument when it names a yml, else `configs/base.yml` here or in the source tree.
fn load_config(args: &[String]) -> Result<Config> {
    if args.first().is_some_and(|a| a.ends_with(".yml") || a.ends_with(".yaml")) {
        return Ok(Config::from_args(args)?);
    }
    let candidates = [PathBuf::from("configs/base.yml"), Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml")];
    let base = candidates.iter().find(|p| p.is_file()).context(
        "no base config given and configs/base.yml not found: pass the path of base.yml as the first argument",
    )?;
    Ok(Config::load(base, args)?)
}

fn plugin_hardware(h: config::Hardware) -> pjrt::Hardware {
    match h {
        config::Hardware::Cpu => pjrt::Hardware::Cpu,
        config::Hardware::Gpu => pjrt::Hardware::Gpu,
        config::Hardware::Tpu => pjrt::Hardware::Tpu,
    }
}

fn devices(args: &[String]) -> Result<()> {
    let cfg = load_config(args)?;
    let hw = plugin_hardware(cfg.run.hardware);
    let count = (hw == pjrt::Hardware::Cpu).then_some(cfg.run.cpu_device_count as i64);
    let client = open_client(hw, cfg.run.pjrt_plugin_path.as_deref(), count)?;
    println!("{}", client.describe());
    Ok(())
}
