//! The CLI's front door: `maxtext devices` on a fresh clone (the CPU plugin is found or fetched), config
//! errors with the closest key, and `compile` without a TPU slice to compile for exiting non-zero with a reason.

use std::process::Command;

fn maxtext(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_maxtext")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn devices_lists_four_cpu_devices() {
    let (ok, out, err) = maxtext(&["devices", "hardware=cpu", "cpu_device_count=4"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("platform: cpu"), "{out}");
    for i in 0..4 {
        assert!(out.contains(&format!("CpuDevice(id={i})")), "device {i} missing:\n{out}");
    }
    assert!(!out.contains("CpuDevice(id=4)"), "{out}");
}

#[test]
fn unknown_key_names_the_closest_one() {
    let (ok, _, err) = maxtext(&["devices", "per_device_batchsize=2"]);
    assert!(!ok && err.contains("did you mean `per_device_batch_size`"), "{err}");
}

#[test]
fn model_yml_and_command_line_conflict() {
    let (ok, _, err) = maxtext(&["devices", "model_name=qwen3-next-80b-a3b", "base_emb_dim=128"]);
    assert!(!ok && err.contains("override_model_config"), "{err}");
    let (ok, _, err) = maxtext(&["devices", "model_name=qwen3-next-80b-a3b", "base_emb_dim=128", "override_model_config=true"]);
    assert!(ok, "{err}");
}

#[test]
fn inconsistent_mesh_is_an_error() {
    let (ok, _, err) = maxtext(&["devices", "cpu_device_count=4", "ici_fsdp_parallelism=3"]);
    assert!(!ok && err.contains("4 devices"), "{err}");
}

#[test]
fn missing_plugin_path_is_a_clear_error() {
    let (ok, _, err) = maxtext(&["devices", "pjrt_plugin_path=/nonexistent/plugin.so"]);
    assert!(!ok && err.contains("/nonexistent/plugin.so"), "{err}");
}

#[test]
fn compile_needs_a_topology() {
    let (ok, _, err) = maxtext(&["compile", "configs/base.yml", "model_name=qwen3-next-tiny", "log_config=false"]);
    assert!(!ok && err.contains("set compile_topology="), "{err}");
}
