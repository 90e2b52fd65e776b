//! HF checkpoint import on the real tiny reference (`tests/fixtures/hf/qwen3-next-tiny`, written by
//! transformers 5.24): config.json -> config, every parameter in both layouts, spot values against the
//! raw safetensors (read here with the `safetensors` crate, independently of the importer), the
//! reverse mapping, sharded checkpoints and the errors a user meets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use maxtext::checkpoint::hf::{self, HfError};
use maxtext::config::{Config, DecoderBlock, ModelConfig};
use maxtext::ir::DType;
use maxtext::nn::params::ParamDecl;
use maxtext::runtime::HostTensor;
use safetensors::SafeTensors;

const FIXTURE: &str = "tests/fixtures/hf/qwen3-next-tiny";

fn fixture() -> &'static Path {
    Path::new(FIXTURE)
}

fn load_config(overrides: &[String]) -> Config {
    Config::load(Path::new("configs/base.yml"), overrides).unwrap_or_else(|e| panic!("{e}\noverrides: {overrides:?}"))
}

fn fixture_config(extra: &[&str]) -> Config {
    let mut o = hf::read_config_overrides(fixture()).unwrap();
    o.extend(extra.iter().map(|s| s.to_string()));
    load_config(&o)
}

/// The fixture's tensors as f32, straight from the file.
fn raw_tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let v = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            (name, (view.shape().to_vec(), v))
        })
        .collect()
}

/// The model's own parameter declarations (the one place each parameter is declared).
fn model_decls(cfg: &Config, scan_layers: bool, weight_dtype: DType) -> Vec<ParamDecl> {
    let mut c = cfg.clone();
    c.compute.scan_layers = scan_layers;
    c.compute.weight_dtype = weight_dtype;
    maxtext::program::param_decls(&c)
}

fn param<'a>(decls: &[ParamDecl], params: &'a [HostTensor], path: &str) -> &'a HostTensor {
    let i = decls.iter().position(|d| d.path == path).unwrap_or_else(|| panic!("no decl {path}"));
    &params[i]
}

/// Row-major flat index.
fn at(dims: &[i64], idx: &[usize]) -> usize {
    assert_eq!(dims.len(), idx.len());
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| {
        assert!((i as i64) < d, "{idx:?} out of {dims:?}");
        acc * d as usize + i
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("maxtext_hf_import_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A writable copy of the fixture's config.json and model.safetensors.
fn copy_fixture(name: &str) -> PathBuf {
    let dir = scratch(name);
    for f in ["config.json", "model.safetensors"] {
        std::fs::write(dir.join(f), std::fs::read(fixture().join(f)).unwrap()).unwrap();
    }
    dir
}

fn fixture_hf_tensors() -> Vec<(String, HostTensor)> {
    let ckpt = hf::HfCheckpoint::open(fixture()).unwrap();
    ckpt.names().map(|n| (n.to_string(), ckpt.read(n).unwrap().unwrap())).collect()
}

#[test]
fn config_json_gives_the_fixture_model() {
    let cfg = fixture_config(&[]);
    let m = &cfg.model;
    assert_eq!(m.decoder_block, DecoderBlock::Qwen3Next);
    assert_eq!((m.emb_dim, m.num_decoder_layers, m.vocab_size), (128, 4, 1024));
    assert_eq!((m.num_query_heads, m.num_kv_heads, m.head_dim), (4, 2, 32));
    assert_eq!((m.num_experts, m.num_experts_per_tok, m.moe_mlp_dim), (8, 2, 32));
    assert_eq!((m.shared_experts, m.shared_expert_mlp_dim), (1, 64));
    assert!(m.norm_topk_prob && !m.logits_via_embedding);
    assert_eq!(m.inhomogeneous_layer_cycle_interval, 4);
    assert_eq!((m.gdn.conv_kernel_dim, m.gdn.key_head_dim, m.gdn.value_head_dim), (4, 16, 16));
    assert_eq!((m.gdn.num_key_heads, m.gdn.num_value_heads), (2, 4));
    assert_eq!((m.rope.max_timescale, m.rope.partial_rotary_factor, m.rotary_dim()), (10000.0, 0.25, 8));
    assert_eq!(m.normalization_layer_epsilon, 1e-6);
    assert_eq!((0..4).map(|l| m.is_full_attention(l)).collect::<Vec<_>>(), vec![false, false, false, true]);

    // The same model as the project's tiny yml with the fixture's vocabulary.
    let yml =
        load_config(&["model_name=qwen3-next-tiny", "override_model_config=true", "vocab_size=1024"].map(String::from));
    assert_eq!(&yml.model, m);
}

#[test]
fn scanned_decls_match_a_maxtext_written_checkpoint() {
    // The config MaxText 0.2.5 trained its checkpoint with (tests/fixtures/maxtext_qwen3next_tiny_trimmed; its
    // expected.json is orbax's listing of the whole tree, unchanged).
    let o = "model_name=qwen3-next-80b-a3b override_model_config=true base_emb_dim=128 base_num_decoder_layers=4 \
             base_num_query_heads=4 base_num_kv_heads=2 head_dim=32 base_mlp_dim=64 base_moe_mlp_dim=64 num_experts=8 \
             num_experts_per_tok=2 shared_experts=1 vocab_size=1024 gdn_key_head_dim=32 gdn_value_head_dim=32 \
             gdn_num_key_heads=2 gdn_num_value_heads=4 weight_dtype=float32";
    let cfg = load_config(&o.split_whitespace().map(String::from).collect::<Vec<_>>());
    let decls = model_decls(&cfg, true, cfg.compute.weight_dtype);
    let expected =
        std::fs::read_to_string("tests/fixtures/maxtext_qwen3next_tiny_trimmed/0/items/expected.json").unwrap();
    let expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
    let mut want: Vec<(String, Vec<i64>)> = expected["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| {
            let path: Vec<&str> = l["path"].as_array()?.iter().map(|p| p.as_str().unwrap()).collect();
            (path.len() > 2 && path[0] == "params" && path[1] == "params").then(|| {
                assert_eq!(l["dtype"], "float32");
                let dims = l["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
                (path[2..].join("/"), dims)
            })
        })
        .collect();
    let mut got: Vec<(String, Vec<i64>)> = decls.iter().map(|d| (d.path.clone(), d.dims.clone())).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    for d in &decls {
        assert_eq!(d.dtype, DType::F32, "{}", d.path);
        assert_eq!(d.layer_dims().len() + d.scan_axes, d.dims.len());
    }
}

#[test]
fn loads_every_param_in_both_layouts() {
    let cfg = fixture_config(&[]);
    let raw = raw_tensors();
    let raw_at = |name: &str, idx: &[usize]| -> f32 {
        let (shape, v) = &raw[name];
        v[at(&shape.iter().map(|&d| d as i64).collect::<Vec<_>>(), idx)]
    };

    let flat = model_decls(&cfg, false, DType::F32);
    let p = hf::load_params(fixture(), &flat, &cfg.model).unwrap();
    assert_eq!(p.len(), flat.len());
    for (d, t) in flat.iter().zip(&p) {
        assert_eq!((t.dtype, &t.dims), (d.dtype, &d.dims), "{}", d.path);
    }
    let q = param(&flat, &p, "decoder/layers_3/attention/attention/query/kernel");
    assert_eq!(q.dims, vec![128, 4, 64]);
    let qv = q.to_f32();
    for (e, h, d) in [(0, 0, 0), (5, 1, 33), (127, 3, 63), (64, 2, 7)] {
        assert_eq!(qv[at(&q.dims, &[e, h, d])], raw_at("model.layers.3.self_attn.q_proj.weight", &[h * 64 + d, e]));
    }
    let lm = param(&flat, &p, "decoder/logits_dense/kernel").to_f32();
    assert_eq!(lm[at(&[128, 1024], &[17, 900])], raw_at("lm_head.weight", &[900, 17]));
    assert_eq!(param(&flat, &p, "token_embedder/embedding").to_f32(), raw["model.embed_tokens.weight"].1);
    let wo = param(&flat, &p, "decoder/layers_1/mlp/routed_experts/wo");
    assert_eq!(wo.dims, vec![8, 32, 128]);
    assert_eq!(
        wo.to_f32()[at(&wo.dims, &[6, 31, 100])],
        raw_at("model.layers.1.mlp.experts.6.down_proj.weight", &[100, 31])
    );

    let scanned = model_decls(&cfg, true, DType::F32);
    let s = hf::load_params(fixture(), &scanned, &cfg.model).unwrap();
    // Routed experts [experts, blocks, local, E, I]: slice [e, 0, i] is HF layer i's expert e, transposed.
    let wi0 = param(&scanned, &s, "decoder/layers/local_layers/mlp/routed_experts/wi_0");
    assert_eq!(wi0.dims, vec![8, 1, 3, 128, 32]);
    let wv = wi0.to_f32();
    for (x, i) in [(5, 2), (0, 0), (7, 1)] {
        let name = format!("model.layers.{i}.mlp.experts.{x}.gate_proj.weight");
        for e in 0..128 {
            for m in 0..32 {
                assert_eq!(wv[at(&wi0.dims, &[x, 0, i, e, m])], raw_at(&name, &[m, e]), "{name} [{m}, {e}]");
            }
        }
    }
    let g_wi1 = param(&scanned, &s, "decoder/layers/global_layer/mlp/routed_experts/wi_1");
    assert_eq!(g_wi1.dims, vec![8, 1, 128, 32]);
    assert_eq!(
        g_wi1.to_f32()[at(&g_wi1.dims, &[3, 0, 9, 30])],
        raw_at("model.layers.3.mlp.experts.3.up_proj.weight", &[30, 9])
    );
    // Conv kernel [K, blocks, local, 1, C] = conv1d.weight [C, 1, K] transposed (2, 1, 0).
    let conv = param(&scanned, &s, "decoder/layers/local_layers/attention/conv1d/kernel");
    assert_eq!(conv.dims, vec![4, 1, 3, 1, 128]);
    let cv = conv.to_f32();
    for (k, i, c) in [(0, 0, 0), (3, 1, 127), (2, 2, 64)] {
        assert_eq!(
            cv[at(&conv.dims, &[k, 0, i, 0, c])],
            raw_at(&format!("model.layers.{i}.linear_attn.conv1d.weight"), &[c, 0, k])
        );
    }
    let a_log = param(&scanned, &s, "decoder/layers/local_layers/attention/A_log");
    assert_eq!(a_log.dims, vec![4, 1, 3]);
    assert_eq!(a_log.to_f32()[at(&a_log.dims, &[2, 0, 1])], raw_at("model.layers.1.linear_attn.A_log", &[2]));
    let gq = param(&scanned, &s, "decoder/layers/global_layer/attention/attention/query/kernel");
    assert_eq!(gq.dims, vec![128, 1, 4, 64]);
    assert_eq!(gq.to_f32()[at(&gq.dims, &[5, 0, 1, 33])], raw_at("model.layers.3.self_attn.q_proj.weight", &[97, 5]));
    let qkvz = param(&scanned, &s, "decoder/layers/local_layers/attention/in_proj_qkvz/kernel");
    assert_eq!(qkvz.dims, vec![128, 1, 3, 192]);
    assert_eq!(
        qkvz.to_f32()[at(&qkvz.dims, &[10, 0, 2, 150])],
        raw_at("model.layers.2.linear_attn.in_proj_qkvz.weight", &[150, 10])
    );

    // Both layouts hold the same numbers: global layer = layers_3, local slot i = layers_i.
    assert_eq!(gq.to_f32(), q.to_f32());
    let norm = param(&scanned, &s, "decoder/layers/local_layers/input_layernorm/scale").to_f32();
    for i in 0..3 {
        let flat_norm = param(&flat, &p, &format!("decoder/layers_{i}/input_layernorm/scale")).to_f32();
        assert_eq!((0..128).map(|e| norm[e * 3 + i]).collect::<Vec<_>>(), flat_norm);
    }
}

#[test]
fn bf16_weights_keep_the_f32_shared_expert_gate() {
    let cfg = fixture_config(&["weight_dtype=bfloat16"]);
    assert_eq!(cfg.compute.weight_dtype, DType::BF16);
    let decls = model_decls(&cfg, true, cfg.compute.weight_dtype);
    let p = hf::load_params(fixture(), &decls, &cfg.model).unwrap();
    let raw = raw_tensors();
    let gate = param(&decls, &p, "decoder/layers/global_layer/mlp/shared_expert_gate/kernel");
    assert_eq!((gate.dtype, &gate.dims), (DType::F32, &vec![128, 1, 1]));
    assert_eq!(gate.to_f32(), raw["model.layers.3.mlp.shared_expert_gate.weight"].1);
    let emb = param(&decls, &p, "token_embedder/embedding");
    assert_eq!(emb.dtype, DType::BF16);
    let rounded: Vec<f32> =
        raw["model.embed_tokens.weight"].1.iter().map(|v| half::bf16::from_f32(*v).to_f32()).collect();
    assert_eq!(emb.to_f32(), rounded);
}

#[test]
fn to_hf_inverts_the_import_bit_for_bit() {
    let cfg = fixture_config(&[]);
    let want: BTreeMap<String, HostTensor> = fixture_hf_tensors().into_iter().collect();
    for scan in [false, true] {
        let decls = model_decls(&cfg, scan, DType::F32);
        let params = hf::load_params(fixture(), &decls, &cfg.model).unwrap();
        let back: BTreeMap<String, HostTensor> =
            hf::hf_tensors_for(&decls, &params, &cfg.model).unwrap().into_iter().collect();
        assert_eq!(back.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "scan_layers={scan}");
        for (name, t) in &want {
            assert_eq!(&back[name], t, "{name} (scan_layers={scan})");
        }
    }
}

#[test]
fn sharded_checkpoint_loads_identically_and_names_a_missing_shard() {
    let cfg = fixture_config(&[]);
    let decls = model_decls(&cfg, true, DType::F32);
    let single = hf::load_params(fixture(), &decls, &cfg.model).unwrap();

    let dir = scratch("sharded");
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
    let tensors = fixture_hf_tensors();
    let (a, b) = tensors.split_at(tensors.len() / 2);
    let shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in shards.iter().zip([a, b]) {
        hf::write_safetensors(&dir.join(shard), part).unwrap();
        for (name, _) in part {
            weight_map.insert(name.clone(), serde_json::Value::from(*shard));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(hf::read_config_overrides(&dir).unwrap(), hf::read_config_overrides(fixture()).unwrap());
    assert_eq!(hf::load_params(&dir, &decls, &cfg.model).unwrap(), single);

    std::fs::remove_file(dir.join(shards[1])).unwrap();
    let err = hf::load_params(&dir, &decls, &cfg.model).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HfError::MissingShard { .. }), "{msg}");
    assert!(msg.contains(shards[1]) && msg.contains(&b[0].0), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_that_does_not_match_the_weights_names_tensor_and_shapes() {
    let dir = copy_fixture("hidden256");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["hidden_size"] = 256.into();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
    let cfg = load_config(&hf::read_config_overrides(&dir).unwrap());
    assert_eq!(cfg.model.emb_dim, 256);
    let decls = model_decls(&cfg, true, DType::F32);
    let err = hf::load_params(&dir, &decls, &cfg.model).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HfError::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains("model.embed_tokens.weight") && msg.contains("[1024, 128]") && msg.contains("[1024, 256]"),
        "{msg}"
    );
    assert!(msg.contains("token_embedder/embedding"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_and_unused_tensors_are_named() {
    let cfg = fixture_config(&[]);
    let decls = model_decls(&cfg, false, DType::F32);
    let tensors = fixture_hf_tensors();

    // One expert tensor missing: named with the MaxText parameter it belongs to.
    let dir = scratch("missing");
    let gone = "model.layers.2.mlp.experts.5.up_proj.weight";
    let kept: Vec<_> = tensors.iter().filter(|(n, _)| n != gone).cloned().collect();
    hf::write_safetensors(&dir.join("model.safetensors"), &kept).unwrap();
    let msg = hf::load_params(&dir, &decls, &cfg.model).unwrap_err().to_string();
    assert!(msg.contains(gone) && msg.contains("decoder/layers_2/mlp/routed_experts/wi_1"), "{msg}");

    // Extra tensors nobody maps are an error (mtp.* excepted, as in MaxText).
    let mut extra = tensors.clone();
    extra.push(("model.layers.4.input_layernorm.weight".into(), HostTensor::from_f32(&[0.0; 128], &[128])));
    extra.push(("mtp.fc.weight".into(), HostTensor::from_f32(&[0.0; 4], &[2, 2])));
    hf::write_safetensors(&dir.join("model.safetensors"), &extra).unwrap();
    let err = hf::load_params(&dir, &decls, &cfg.model).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HfError::UnusedTensors { count: 1, .. }), "{msg}");
    assert!(msg.contains("model.layers.4.input_layernorm.weight") && !msg.contains("mtp."), "{msg}");

    // mtp.* alone is fine.
    extra.remove(extra.len() - 2);
    hf::write_safetensors(&dir.join("model.safetensors"), &extra).unwrap();
    assert!(hf::load_params(&dir, &decls, &cfg.model).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn user_errors_say_what_is_wrong() {
    let full = fixture_config(&[]);
    let decls = model_decls(&full, true, DType::F32);
    let cfg: ModelConfig = full.model;
    let err = hf::load_params(Path::new("/nonexistent/qwen3-next"), &decls, &cfg).unwrap_err();
    assert!(matches!(err, HfError::DirNotFound { .. }), "{err}");

    let dir = scratch("empty");
    let msg = hf::load_params(&dir, &decls, &cfg).unwrap_err().to_string();
    assert!(msg.contains("neither model.safetensors nor model.safetensors.index.json"), "{msg}");

    std::fs::write(dir.join("model.safetensors"), b"\x10\0\0\0\0\0\0\0{not json at all").unwrap();
    let err = hf::load_params(&dir, &decls, &cfg).unwrap_err();
    assert!(matches!(err, HfError::CorruptHeader { .. }), "{err}");

    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap()).unwrap();
    json["model_type"] = "llama".into();
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let msg = hf::read_config_overrides(&dir).unwrap_err().to_string();
    assert!(msg.contains("\"llama\"") && msg.contains("qwen3_next"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn real_80b_config_json_agrees_with_maxtexts_model_yml() {
    // Qwen/Qwen3-Next-80B-A3B-Instruct's config.json (transformers 4 form; reference §1.2).
    let json = serde_json::json!({
        "architectures": ["Qwen3NextForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "full_attention_interval": 4,
        "head_dim": 256, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
        "intermediate_size": 5120, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128,
        "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_value_head_dim": 128,
        "max_position_embeddings": 262144, "mlp_only_layers": [], "model_type": "qwen3_next",
        "moe_intermediate_size": 512, "norm_topk_prob": true, "num_attention_heads": 16, "num_experts": 512,
        "num_experts_per_tok": 10, "num_hidden_layers": 48, "num_key_value_heads": 2, "output_router_logits": false,
        "partial_rotary_factor": 0.25, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 10000000,
        "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 512, "tie_word_embeddings": false,
        "torch_dtype": "bfloat16", "transformers_version": "4.57.0.dev0", "use_cache": true,
        "use_sliding_window": false, "vocab_size": 151936
    });
    let mut o = hf::config_overrides(&json).unwrap();
    let from_hf = load_config(&o).model;
    // No key differs from the model yml (which would be an error without override_model_config).
    o.push("model_name=qwen3-next-80b-a3b".into());
    assert_eq!(load_config(&o).model, from_hf);
    assert_eq!(load_config(&["model_name=qwen3-next-80b-a3b".to_string()]).model, from_hf);
    // The scanned tree has MaxText's 80B shapes (reference §3.3).
    let decls = model_decls(&load_config(&o), true, DType::BF16);
    let dims = |p: &str| decls.iter().find(|d| d.path == p).unwrap().dims.clone();
    assert_eq!(dims("decoder/layers/local_layers/attention/in_proj_qkvz/kernel"), vec![2048, 12, 3, 12288]);
    assert_eq!(dims("decoder/layers/local_layers/mlp/routed_experts/wi_0"), vec![512, 12, 3, 2048, 512]);
    assert_eq!(dims("decoder/layers/local_layers/attention/conv1d/kernel"), vec![4, 12, 3, 1, 8192]);
    assert_eq!(dims("decoder/layers/local_layers/attention/A_log"), vec![32, 12, 3]);
    assert_eq!(dims("decoder/layers/global_layer/attention/attention/query/kernel"), vec![2048, 12, 16, 512]);
    assert_eq!(dims("decoder/layers/global_layer/attention/attention/query_norm/scale"), vec![256, 12]);
    assert_eq!(dims("decoder/layers/global_layer/mlp/routed_experts/wi_0"), vec![512, 12, 2048, 512]);
    let total: i64 = decls.iter().map(|d| d.num_elements()).sum();
    assert!((79_600_000_000..79_700_000_000).contains(&total), "{total}");
}
