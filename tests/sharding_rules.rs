//! Shardings of the Qwen3-Next parameters under MaxText's rules, and host split / assemble round trips.

use std::path::{Path, PathBuf};

use maxtext::config::Config;
use maxtext::ir::{Mesh, Sharding};
use maxtext::sharding::{assemble, device_mesh, shard_dims, split, LogicalAxisRules};

fn cfg(a: &[&str]) -> Config {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml");
    let mut v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
    v.push("run_name=sh".into());
    Config::load_with_env(&PathBuf::from(base), &v, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn tiny_params_on_fsdp_tensor_expert_mesh() {
    let c = cfg(&[
        "model_name=qwen3-next-tiny",
        "cpu_device_count=8",
        "ici_fsdp_parallelism=2",
        "ici_tensor_parallelism=2",
        "ici_expert_parallelism=2",
    ]);
    let mesh = device_mesh(&c).unwrap();
    let rules = LogicalAxisRules::from_config(&c);
    let r = |axes: &[&str], shape: &[i64]| rules.resolve(axes, shape, &mesh);
    // embedding [V, E] (vocab, embed_vocab)
    assert_eq!(r(&["vocab", "embed_vocab"], &[151936, 128]), Sharding::new(&[&["tensor"], &["fsdp", "expert"]]));
    // query [E, H, 2D] (embed, q_heads, kv)
    assert_eq!(r(&["embed", "q_heads", "kv"], &[128, 4, 64]), Sharding::new(&[&["fsdp", "expert"], &["tensor"], &[]]));
    // routed wi_0 [X, E, M] (exp, embed_moe, mlp_moe)
    assert_eq!(r(&["exp", "embed_moe", "mlp_moe"], &[8, 128, 32]), Sharding::new(&[&["expert"], &["fsdp"], &["tensor"]]));
    // GDN in_proj [E, .] (embed, gdn_head)
    assert_eq!(r(&["embed", "gdn_head"], &[128, 160]), Sharding::new(&[&["fsdp", "expert"], &["tensor"]]));
    // Norm scales are replicated; conv weights have no logical names.
    assert_eq!(r(&["norm"], &[128]), Sharding::new(&[&["tensor"]]));
    assert_eq!(r(&["", ""], &[4, 128]), Sharding::replicated(2));
    // Scanned: "layers" at axis 1 -> stage (size 1).
    assert_eq!(r(&["embed", "layers", "mlp"], &[128, 1, 64]), Sharding::new(&[&["fsdp", "expert"], &[], &["tensor"]]));
    // Input batch [B, T]: batch over (fsdp, expert) when B divides, else replicated.
    let input = &c.parallelism.input_data_sharding_logical_axes;
    let input: Vec<&str> = input.iter().map(String::as_str).collect();
    assert_eq!(r(&input, &[8, 64]), Sharding::new(&[&["fsdp", "expert"], &[]]));
    assert_eq!(r(&input, &[2, 64]), Sharding::new(&[&[], &[]]));
    // kv_heads = 2 over tensor = 2 divides; over tensor = 4 it would be replicated.
    assert_eq!(r(&["embed", "kv_heads", "kv_head_dim"], &[128, 2, 32]).dims[1], vec!["tensor"]);
}

#[test]
fn split_assemble_round_trip_on_resolved_shardings() {
    let mesh = Mesh::new(&[("data", 1), ("fsdp", 2), ("tensor", 2), ("expert", 2)]);
    let rules = LogicalAxisRules::from_pairs(&[("exp", &["expert"]), ("embed", &["fsdp", "tensor"]), ("mlp", &["tensor"])]);
    let dims = [4i64, 8, 6];
    let s = rules.resolve(&["exp", "embed", "mlp"], &dims, &mesh);
    assert_eq!(s, Sharding::new(&[&["expert"], &["fsdp", "tensor"], &[]]));
    let n: i64 = dims.iter().product();
    let full: Vec<u8> = (0..n as u16).flat_map(|v| v.to_le_bytes()).collect();
    let shards = split(&full, &dims, 2, &s, &mesh);
    assert_eq!(shards.len(), 8);
    assert_eq!(shard_dims(&dims, &s, &mesh), vec![2, 2, 6]);
    // Partition 0 = (fsdp 0, tensor 0, expert 0): experts 0..2, embed rows 0..2.
    let first: Vec<u16> = shards[0].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(first[..6], [0, 1, 2, 3, 4, 5]);
    assert_eq!(first[12..18], [48, 49, 50, 51, 52, 53]);
    assert_eq!(assemble(&shards, &dims, 2, &s, &mesh), full);
}
