//! Config errors say what is wrong and where, so a user can fix the command line or the file.

use std::path::{Path, PathBuf};

use maxtext::config::{Config, ConfigError, Origin};

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml")
}

fn load_err(a: &[&str]) -> ConfigError {
    let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
    match Config::load_with_env(&base(), &a, &|_| None) {
        Ok(_) => panic!("expected an error for {a:?}"),
        Err(e) => e,
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("maxtext-config-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(d.join("models")).unwrap();
    d
}

#[test]
fn unknown_key_suggests_the_closest() {
    let err = load_err(&["per_device_batchsize=2"]);
    match &err {
        ConfigError::UnknownKey { key, origin, suggestion } => {
            assert_eq!(key, "per_device_batchsize");
            assert_eq!(origin, &Origin::CommandLine);
            assert_eq!(suggestion.as_deref(), Some("per_device_batch_size"));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("did you mean `per_device_batch_size`?"), "{err}");
    assert!(load_err(&["ici_fsdp_paralelism=4"]).to_string().contains("`ici_fsdp_parallelism`"));
    // Nothing close: point at base.yml instead.
    assert!(load_err(&["zzzzqqq=1"]).to_string().contains("configs/base.yml"));
}

#[test]
fn model_and_command_line_conflict_needs_override_model_config() {
    let err = load_err(&["model_name=qwen3-next-tiny", "base_emb_dim=256", "head_dim=64"]);
    match &err {
        ConfigError::ModelOverride { conflicts, model_file } => {
            let keys: Vec<&str> = conflicts.iter().map(|c| c.key.as_str()).collect();
            assert_eq!(keys, vec!["base_emb_dim", "head_dim"]);
            assert_eq!(conflicts[0].model_value, "128");
            assert_eq!(conflicts[0].cli_value, "256");
            assert!(model_file.ends_with("qwen3-next-tiny.yml"));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("override_model_config=true"), "{err}");
    let a: Vec<String> = ["model_name=qwen3-next-tiny", "base_emb_dim=256", "head_dim=64", "override_model_config=true"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let cfg = Config::load_with_env(&base(), &a, &|_| None).unwrap();
    assert_eq!((cfg.model.emb_dim, cfg.model.head_dim), (256, 64));
}

#[test]
fn malformed_yml_names_file_and_line() {
    let dir = temp_dir("malformed");
    let bad = dir.join("bad.yml");
    std::fs::write(&bad, "run_name: x\nsteps: 5\nmesh_axes: [data, fsdp\nlearning_rate: 1.0\n").unwrap();
    let err = Config::load_with_env(&bad, &[], &|_| None).unwrap_err();
    match &err {
        ConfigError::Yaml { path, line, .. } => {
            assert_eq!(path, &bad);
            assert!((3..=4).contains(line), "{err}");
        }
        other => panic!("{other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("bad.yml") && msg.contains("line"), "{msg}");

    // An unknown key in a model yml names the file and the line.
    let base_copy = dir.join("base.yml");
    std::fs::write(&base_copy, format!("base_config: {}\n", base().display())).unwrap();
    std::fs::write(dir.join("models/mine.yml"), "decoder_block: qwen3_next\nbase_emb_dimm: 64\n").unwrap();
    let err = Config::load_with_env(&base_copy, &["model_name=mine".into()], &|_| None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("mine.yml:2") && msg.contains("`base_emb_dim`"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn wrong_value_types_name_key_value_and_expectation() {
    let msg = load_err(&["per_device_batch_size=abc"]).to_string();
    assert!(msg.contains("per_device_batch_size") && msg.contains("abc") && msg.contains("a number"), "{msg}");
    assert!(msg.contains("command line"), "{msg}");
    let msg = load_err(&["steps=2.5"]).to_string();
    assert!(msg.contains("`steps`") && msg.contains("an integer"), "{msg}");
    let msg = load_err(&["scan_layers=maybe"]).to_string();
    assert!(msg.contains("scan_layers") && msg.contains("boolean"), "{msg}");
    let msg = load_err(&["attention=flsh"]).to_string();
    assert!(msg.contains("did you mean `flash`"), "{msg}");
    let msg = load_err(&["dtype=float8"]).to_string();
    assert!(msg.contains("bfloat16"), "{msg}");
    let msg = load_err(&["hardware=fpga"]).to_string();
    assert!(msg.contains("`cpu`, `gpu`"), "{msg}");
    let msg = load_err(&["ici_tensor_parallelism=0"]).to_string();
    assert!(msg.contains("-1 (fill"), "{msg}");
    let msg = load_err(&["cpu_device_count=0"]).to_string();
    assert!(msg.contains("cpu_device_count") && msg.contains(">= 1"), "{msg}");
}

#[test]
fn malformed_arguments() {
    let err = load_err(&["steps"]);
    assert!(matches!(err, ConfigError::NotKeyValue { .. }), "{err}");
    assert!(err.to_string().contains("key=value"));
    let err = Config::from_args(&["steps=5".to_string()]).unwrap_err();
    assert!(matches!(err, ConfigError::MissingBaseConfig { .. }), "{err}");
    let err = Config::from_args(&["/nonexistent/base.yml".to_string()]).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/base.yml"), "{err}");
}

#[test]
fn unknown_model_lists_available() {
    let msg = load_err(&["model_name=qwen3-next-tinny"]).to_string();
    assert!(msg.contains("did you mean `qwen3-next-tiny`"), "{msg}");
    assert!(msg.contains("qwen3-next-80b-a3b"), "{msg}");
}

#[test]
fn cross_key_validation() {
    let msg = load_err(&["model_name=qwen3-next-tiny", "override_model_config=true", "gdn_num_value_heads=3"]).to_string();
    assert!(msg.contains("gdn_num_value_heads=3") && msg.contains("gdn_num_key_heads=2"), "{msg}");
    let msg = load_err(&["model_name=qwen3-next-tiny", "override_model_config=true", "partial_rotary_factor=0.1"]).to_string();
    assert!(msg.contains("rotary"), "{msg}");
    let msg = load_err(&["load_parameters_path=/a", "load_full_state_path=/b"]).to_string();
    assert!(msg.contains("mutually exclusive"), "{msg}");
    let msg = load_err(&["model_name=qwen3-next-tiny", "override_model_config=true", "base_num_decoder_layers=6"]).to_string();
    assert!(msg.contains("inhomogeneous_layer_cycle_interval=4") && msg.contains("scan_layers=false"), "{msg}");
    let msg = load_err(&["dcn_fsdp_parallelism=2"]).to_string();
    assert!(msg.contains("dcn_fsdp_parallelism=2") && msg.contains("one slice"), "{msg}");
    let msg = load_err(&["hardware=tpu", "compile_topology=v9-8"]).to_string();
    assert!(msg.contains("v9-8"), "{msg}");
}
