//! `maxtext`: the command line. MaxText style: a subcommand, a base yml, then `key=value` overrides.

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};
use commands::setup;
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
    /// OpenAI-compatible HTTP server (`--host`, `--port`, `--max-queue`), continuous batching.
    Serve(Args),
    /// Evaluate: `maxtext eval mmlu [base.yml] key=value ... [subjects=a,b] [limit=N]`.
    Eval(Args),
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
        Command::Train(a) => commands::train::run(&a.args),
        Command::Convert(a) => commands::convert::run(&a.args),
        Command::Decode(a) => commands::decode::run(&a.args),
        Command::CheckLogits(a) => commands::check_logits::run(&a.args),
        Command::Compile(a) => commands::compile::run(&a.args),
        Command::ExportHlo(a) => commands::export_hlo::run(&a.args),
        Command::Serve(a) => commands::serve::run(&a.args),
        Command::Eval(a) => commands::eval::run(&a.args),
    };
    // Local copies of gs:// inputs (hf_model_path, tokenizer_path) live until the command is done.
    maxtext::storage::remove_staged();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn devices(args: &[String]) -> Result<()> {
    let cfg = setup::load_config_any_model(args)?;
    println!("{}", setup::client(&cfg)?.describe());
    Ok(())
}
