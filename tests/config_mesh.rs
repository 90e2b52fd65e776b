//! The device mesh from the parallelism keys: `-1` fill and inconsistent products.

use std::path::{Path, PathBuf};

use maxtext::config::{Config, ConfigError, MeshError};
use maxtext::sharding::device_mesh;

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/base.yml")
}

fn cfg(a: &[&str]) -> Config {
    let mut v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
    v.push("run_name=mesh".into());
    Config::load_with_env(&base(), &v, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(a: &[&str]) -> ConfigError {
    let mut v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
    v.push("run_name=mesh".into());
    Config::load_with_env(&base(), &v, &|_| None).expect_err("expected a mesh error")
}

fn sizes(c: &Config) -> Vec<(String, i64)> {
    device_mesh(c).unwrap().axes.into_iter().filter(|(_, s)| *s != 1).collect()
}

#[test]
fn fsdp_fills_the_devices_by_default() {
    let m = device_mesh(&cfg(&["cpu_device_count=4"])).unwrap();
    let names: Vec<&str> = m.axes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..4], ["diloco", "data", "stage", "fsdp"]);
    assert_eq!(m.axes.len(), 12);
    assert_eq!(m.axis_size("fsdp"), Some(4));
    assert_eq!(m.num_devices(), 4);
}

#[test]
fn minus_one_fills_what_the_others_leave() {
    let c = cfg(&["cpu_device_count=8", "ici_fsdp_parallelism=2", "ici_tensor_parallelism=2", "ici_expert_parallelism=-1"]);
    assert_eq!(sizes(&c), vec![("fsdp".into(), 2), ("tensor".into(), 2), ("expert".into(), 2)]);
    // The decode command: expert=-1 takes every device.
    let c = cfg(&["cpu_device_count=4", "ici_fsdp_parallelism=1", "ici_tensor_parallelism=1", "ici_expert_parallelism=-1"]);
    assert_eq!(sizes(&c), vec![("expert".into(), 4)]);
    // Multi-slice AOT: dcn_data_parallelism=-1 fills the slices, fsdp fills each slice.
    let c = cfg(&["hardware=tpu", "compile_topology=v5p-8", "compile_topology_num_slices=2"]);
    assert_eq!(c.devices.num_devices, 8);
    assert_eq!(sizes(&c), vec![("data".into(), 2), ("fsdp".into(), 4)]);
}

#[test]
fn inconsistent_products_fail_at_load_naming_keys_and_numbers() {
    let err = load_err(&["cpu_device_count=4", "ici_fsdp_parallelism=3"]);
    assert!(matches!(err, ConfigError::Mesh(MeshError::Mismatch { product: 3, target: 4, .. })), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("ici_fsdp_parallelism(3)") && msg.contains("= 3 but there are 4 devices"), "{msg}");

    let msg = load_err(&["cpu_device_count=4", "ici_fsdp_parallelism=2", "ici_tensor_parallelism=-1", "ici_expert_parallelism=3"])
        .to_string();
    assert!(msg.contains("cannot fill ici_tensor_parallelism=-1"), "{msg}");
    assert!(msg.contains("ici_fsdp_parallelism(2) * ici_expert_parallelism(3)"), "{msg}");

    let msg = load_err(&["cpu_device_count=4", "ici_tensor_parallelism=-1"]).to_string();
    assert!(msg.contains("ici_fsdp_parallelism, ici_tensor_parallelism"), "{msg}");

    // gpu / tpu: checked once the runtime reports its devices.
    let gpu = cfg(&["hardware=gpu", "ici_fsdp_parallelism=3"]);
    assert!(gpu.mesh_shape.is_none());
    let err = gpu.with_num_devices(4).unwrap_err().to_string();
    assert!(err.contains("= 3 but there are 4 devices"), "{err}");
}
