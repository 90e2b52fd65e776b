//! The `tpu/` slice scripts (create, delete, set up workers, launch on every worker) with `DRY_RUN=1`:
//! `tpu/check_scripts.sh` checks the gcloud commands each prints (no GCP here), argument quoting through
//! ssh, worker counts per slice type, the multislice MegaScale environment and the error paths.

#[test]
fn tpu_scripts_print_the_expected_gcloud_commands() {
    let root = env!("CARGO_MANIFEST_DIR");
    let o = std::process::Command::new("bash").arg(format!("{root}/tpu/check_scripts.sh")).current_dir(root).output().unwrap();
    assert!(o.status.success(), "tpu/check_scripts.sh failed:\n{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}
