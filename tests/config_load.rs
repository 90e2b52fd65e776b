//! Loading configs/base.yml + model ymls + overrides into a typed Config.

use std::path::{Path, PathBuf};

use maxtext::config::*;
use maxtext::ir::DType;

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml")
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn load(a: &[&str]) -> Config {
    Config::load_with_env(&base(), &args(a), &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("maxtext-config-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn base_alone_has_maxtext_defaults() {
    let cfg = load(&["run_name=t"]);
    assert_eq!(cfg.run.model_name, "default");
    assert!(cfg.model_yml.is_none());
    assert_eq!(cfg.data.per_device_batch_size, 12.0);
    assert_eq!(cfg.data.max_target_length, 2048);
    assert_eq!(cfg.data.max_prefill_predict_length, 64);
    assert_eq!(cfg.compute.dtype, DType::BF16);
    assert_eq!(cfg.compute.weight_dtype, DType::F32);
    assert_eq!(cfg.compute.attention, AttentionKind::Autoselected);
    assert_eq!(cfg.compute.remat_policy, RematPolicy::Full);
    assert!(cfg.compute.megablox && cfg.compute.sparse_matmul && cfg.compute.scan_layers);
    assert_eq!(cfg.compute.capacity_factor, -1.0);
    assert_eq!(cfg.data.dataset_type, DatasetType::Tfds);
    assert_eq!(cfg.data.tokenizer_type, TokenizerType::SentencePiece);
    assert_eq!(cfg.train.steps, 150_001);
    assert_eq!(cfg.train.learning_rate, 3e-5);
    assert_eq!(cfg.train.lr_schedule_type, LrSchedule::Cosine);
    assert_eq!((cfg.train.adam_b1, cfg.train.adam_b2, cfg.train.adam_eps), (0.9, 0.95, 1e-8));
    assert_eq!(cfg.train.adam_weight_decay, 0.1);
    assert_eq!(cfg.train.gradient_clipping_threshold, 1.0);
    assert_eq!(cfg.checkpoint.checkpoint_period, 10_000);
    assert!(cfg.checkpoint.enable_checkpointing && cfg.checkpoint.async_checkpointing);
    assert_eq!(cfg.decode.prompt, "I love to");
    assert_eq!(cfg.decode.sampling_strategy, SamplingStrategy::Greedy);
    assert_eq!(cfg.run.hardware, Hardware::Cpu);
    assert_eq!(cfg.devices.num_devices, 1);
    assert_eq!(cfg.batch.global_batch_size_to_train_on, 12);
    assert_eq!(cfg.parallelism.ici.get("fsdp"), -1);
    assert_eq!(cfg.parallelism.dcn.get("data"), -1);
    assert_eq!(cfg.model.normalization_layer_epsilon, 1e-5);
}

#[test]
fn tiny_model_matches_the_hf_fixture_dims() {
    let cfg = load(&["model_name=qwen3-next-tiny", "run_name=t"]);
    let m = &cfg.model;
    assert_eq!(m.decoder_block, DecoderBlock::Qwen3Next);
    assert_eq!((m.emb_dim, m.num_decoder_layers), (128, 4));
    assert_eq!((m.num_query_heads, m.num_kv_heads, m.head_dim), (4, 2, 32));
    assert_eq!((m.gdn.num_key_heads, m.gdn.num_value_heads), (2, 4));
    assert_eq!((m.gdn.key_head_dim, m.gdn.value_head_dim, m.gdn.conv_kernel_dim, m.gdn.chunk_size), (16, 16, 4, 64));
    assert_eq!(m.gdn.conv_dim(), 2 * 32 + 64);
    assert_eq!((m.num_experts, m.num_experts_per_tok, m.moe_mlp_dim, m.shared_expert_mlp_dim), (8, 2, 32, 64));
    assert_eq!(m.vocab_size, 151936);
    assert_eq!(m.rope.max_timescale, 1e4);
    assert_eq!(m.rotary_dim(), 8);
    assert_eq!(m.normalization_layer_epsilon, 1e-6);
    assert!(m.norm_topk_prob && !m.enable_dropout);
    let full: Vec<bool> = (0..4).map(|l| m.is_full_attention(l)).collect();
    assert_eq!(full, vec![false, false, false, true]);
    assert_eq!(m.num_scan_blocks(), 1);
    let yml = cfg.model_yml.as_ref().unwrap();
    assert!(yml.ends_with("models/qwen3-next-tiny.yml"), "{}", yml.display());
    // Where a value came from is kept, with the line of the key in the model yml.
    match cfg.raw().origin("base_emb_dim").unwrap() {
        Origin::File { path, line: Some(line) } => {
            assert!(path.ends_with("qwen3-next-tiny.yml"));
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.lines().nth(line - 1).unwrap().starts_with("base_emb_dim:"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn real_model_matches_maxtext_yml() {
    let cfg = load(&["model_name=qwen3-next-80b-a3b", "run_name=t"]);
    let m = &cfg.model;
    assert_eq!((m.emb_dim, m.num_decoder_layers, m.num_query_heads, m.num_kv_heads, m.head_dim), (2048, 48, 16, 2, 256));
    assert_eq!((m.num_experts, m.num_experts_per_tok, m.moe_mlp_dim, m.shared_expert_mlp_dim), (512, 10, 512, 512));
    assert_eq!((m.mlp_dim, m.shared_experts, m.vocab_size), (512, 1, 151936));
    assert_eq!((m.gdn.num_key_heads, m.gdn.num_value_heads, m.gdn.key_head_dim, m.gdn.value_head_dim), (16, 32, 128, 128));
    assert_eq!(m.rope.max_timescale, 1e7);
    assert_eq!(m.rotary_dim(), 64);
    assert_eq!(m.num_full_attention_layers(), 12);
    assert!(m.is_full_attention(47) && !m.is_full_attention(46));
    assert_eq!(cfg.data.tokenizer_path.as_deref(), Some("Qwen/Qwen3-Next-80B-A3B-Instruct"));
    // "-Instruct" names the same architecture.
    let inst = load(&["model_name=qwen3-next-80b-a3b-Instruct", "run_name=t"]);
    assert_eq!(inst.model, cfg.model);
}

#[test]
fn documented_pretrain_command_parses() {
    // tests/end_to_end/tpu/qwen/next/run_qwen3_next.md, with compile_topology instead of a real v5p-64.
    let a = args(&[
        base().to_str().unwrap(),
        "base_output_directory=/tmp/out",
        "run_name=q3_next_pre_training",
        "per_device_batch_size=1",
        "enable_checkpointing=false",
        "model_name=qwen3-next-80b-a3b",
        "ici_fsdp_parallelism=-1",
        "steps=5",
        "max_target_length=1024",
        "async_checkpointing=false",
        "tokenizer_type=huggingface",
        "tokenizer_path=src/maxtext/assets/tokenizers/qwen3-tokenizer",
        "attention=flash",
        "dtype=bfloat16",
        "weight_dtype=bfloat16",
        "megablox=False",
        "sparse_matmul=False",
        "dataset_type=synthetic",
        "hardware=tpu",
        "compile_topology=v5p-64",
    ]);
    let cfg = Config::from_args(&a).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.devices.num_devices, 32);
    assert_eq!(cfg.devices.source, DeviceSource::CompileTopology);
    assert_eq!(cfg.batch.global_batch_size_to_train_on, 32);
    assert_eq!(cfg.train.steps, 5);
    assert_eq!(cfg.train.learning_rate_schedule_steps, 5);
    assert_eq!(cfg.compute.weight_dtype, DType::BF16);
    assert_eq!(cfg.train.mu_dtype, DType::BF16);
    assert!(!cfg.compute.megablox && !cfg.compute.sparse_matmul);
    assert_eq!(cfg.compute.attention, AttentionKind::Flash);
    assert_eq!(cfg.data.dataset_type, DatasetType::Synthetic);
    assert_eq!(cfg.data.tokenizer_type, TokenizerType::HuggingFace);
    assert_eq!(cfg.checkpoint.checkpoint_dir.to_string(), "/tmp/out/q3_next_pre_training/checkpoints");
    let mesh = maxtext::sharding::device_mesh(&cfg).unwrap();
    assert_eq!(mesh.axis_size("fsdp"), Some(32));
    assert_eq!(mesh.num_devices(), 32);
}

#[test]
fn overrides_are_typed_and_strings_stay_strings() {
    let cfg = load(&[
        "model_name=qwen3-next-tiny",
        "run_name=007",
        "steps=10_000",
        "learning_rate=1e-3",
        "scan_layers=false",
        "prompt=An attention function: maps a query",
        "prompt_token_ids=[151643, 40, 2948]",
        "train_data_columns=messages",
        "--max_kl_div=2e-4",
        "golden_logits_path=/tmp/golden.jsonl",
        "decode_sampling_strategy=TopK",
        "cpu_device_count=4",
        "per_device_batch_size=0.5",
        "matmul_precision=highest",
        "activations_in_float32=true",
        "dtype=float32",
    ]);
    assert_eq!(cfg.run.run_name, "007");
    assert_eq!(cfg.train.steps, 10_000);
    assert_eq!(cfg.train.learning_rate, 1e-3);
    assert!(!cfg.compute.scan_layers);
    assert_eq!(cfg.decode.prompt, "An attention function: maps a query");
    assert_eq!(cfg.decode.prompt_token_ids, vec![151643, 40, 2948]);
    assert_eq!(cfg.data.train_data_columns, vec!["messages"]);
    assert_eq!(cfg.tools.max_kl_div, Some(2e-4));
    assert_eq!(cfg.decode.sampling_strategy, SamplingStrategy::TopK);
    assert_eq!(cfg.devices.num_devices, 4);
    // MaxText: per_device_batch_size < 1 loads num_devices rows but trains on int(4 * 0.5) = 2.
    assert_eq!(cfg.batch.global_batch_size_to_load, 4);
    assert_eq!(cfg.batch.global_batch_size_to_train_on, 2);
    assert_eq!(cfg.compute.matmul_precision, MatmulPrecision::Highest);
    assert_eq!(cfg.raw().origin("steps"), Some(&Origin::CommandLine));
    // The printed config marks non-default values with their origin.
    let dump = cfg.raw().to_yaml();
    assert!(dump.contains("steps: 10_000  # command line"), "{}", &dump[..400]);
    assert!(dump.contains("base_emb_dim: 128  # "));
}

#[test]
fn override_model_config_lets_the_command_line_win() {
    let cfg = load(&[
        "model_name=qwen3-next-80b-a3b",
        "override_model_config=true",
        "base_emb_dim=128",
        "base_num_decoder_layers=4",
        "base_num_query_heads=4",
        "base_num_kv_heads=2",
        "head_dim=32",
        "base_mlp_dim=64",
        "base_moe_mlp_dim=64",
        "num_experts=8",
        "num_experts_per_tok=2",
        "vocab_size=1024",
        "gdn_key_head_dim=32",
        "gdn_value_head_dim=32",
        "gdn_num_key_heads=2",
        "gdn_num_value_heads=4",
        "run_name=t",
    ]);
    assert_eq!((cfg.model.emb_dim, cfg.model.num_decoder_layers, cfg.model.vocab_size), (128, 4, 1024));
    // Model keys not on the command line still apply.
    assert_eq!(cfg.model.rope.max_timescale, 1e7);
    assert_eq!(cfg.model.decoder_block, DecoderBlock::Qwen3Next);
    // The same value as the model yml needs no override.
    let same = load(&["model_name=qwen3-next-tiny", "vocab_size=151936", "decoder_block=qwen3_next", "run_name=t"]);
    assert_eq!(same.model.vocab_size, 151936);
}

#[test]
fn logical_axis_rules_merge_rule_by_rule() {
    let cfg = load(&["logical_axis_rules=[['embed', ['expert']], ['new_axis', ['tensor']]]", "run_name=t"]);
    let rules = &cfg.parallelism.logical_axis_rules;
    let embed: Vec<_> = rules.iter().filter(|(n, _)| n == "embed").collect();
    assert_eq!(embed.len(), 1, "both base `embed` rules are replaced");
    assert_eq!(embed[0].1, vec!["expert"]);
    assert!(rules.iter().any(|(n, _)| n == "mlp"));
    assert_eq!(rules.last().unwrap().0, "new_axis");
    let replaced = load(&["override_logical_axis_rules=true", "logical_axis_rules=[['embed', ['fsdp']]]", "run_name=t"]);
    assert_eq!(replaced.parallelism.logical_axis_rules.len(), 1);
}

#[test]
fn base_config_chains_and_env_overrides() {
    let dir = temp_dir("chain");
    let child = dir.join("child.yml");
    std::fs::write(&child, format!("base_config: {}\nsteps: 7\nrun_name: chained\n", base().display())).unwrap();
    let cfg = Config::load_with_env(&child, &[], &|_| None).unwrap();
    assert_eq!(cfg.train.steps, 7);
    assert_eq!(cfg.run.run_name, "chained");
    assert_eq!(cfg.data.max_target_length, 2048);

    let env = |k: &str| (k == "M_MAX_TARGET_LENGTH").then(|| "256".to_string());
    let cfg = Config::load_with_env(&child, &[], &env).unwrap();
    assert_eq!(cfg.data.max_target_length, 256);
    assert_eq!(cfg.raw().origin("max_target_length"), Some(&Origin::Env("M_MAX_TARGET_LENGTH".into())));
    let err = Config::load_with_env(&child, &args(&["max_target_length=128"]), &env).unwrap_err();
    assert!(matches!(err, ConfigError::EnvConflict { .. }), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn derived_paths_and_defaults() {
    let cfg = load(&["run_name=r1", "base_output_directory=/data/out", "mu_dtype=bfloat16", "learning_rate_schedule_steps=20", "steps=5"]);
    assert_eq!(cfg.checkpoint.checkpoint_dir.to_string(), "/data/out/r1/checkpoints");
    assert_eq!(cfg.checkpoint.tensorboard_dir.to_string(), "/data/out/r1/tensorboard");
    let in_bucket = load(&["run_name=r1", "base_output_directory=gs://bk/out/"]);
    assert_eq!(in_bucket.checkpoint.checkpoint_dir.to_string(), "gs://bk/out/r1/checkpoints");
    let e = maxtext::config::Config::load(Path::new("configs/base.yml"), &["base_output_directory=s3://bk/out".to_string()]).unwrap_err().to_string();
    assert!(e.contains("s3:// is not supported"), "{e}");
    assert_eq!(cfg.train.mu_dtype, DType::BF16);
    assert_eq!((cfg.train.steps, cfg.train.learning_rate_schedule_steps), (5, 20));
    let cfg = load(&["model_name=qwen3-next-tiny"]);
    assert!(cfg.run.run_name.starts_with("qwen3-next-tiny_"), "{}", cfg.run.run_name);
    assert!(cfg.run.base_output_directory.as_local().unwrap().is_absolute());
    assert!(cfg.data.tokenizer_path.is_none());
    let gpu = load(&["hardware=gpu", "run_name=t"]);
    assert_eq!(gpu.devices.source, DeviceSource::Assumed);
    let gpu = gpu.with_num_devices(8).unwrap();
    assert_eq!(gpu.batch.global_batch_size_to_train_on, 96);
    assert_eq!(gpu.mesh_shape.as_ref().unwrap()[3], ("fsdp".to_string(), 8));
}
