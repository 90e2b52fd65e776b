use maxtext::pjrt::{CompileOptions, Plugin, Topology, TopologyOption};
fn main() {
    let so = std::env::args().nth(1).unwrap();
    let text = std::fs::read_to_string(std::env::args().nth(2).unwrap()).unwrap();
    std::env::set_var("TPU_ACCELERATOR_TYPE", "v5p-8");
    std::env::set_var("TPU_SKIP_MDS_QUERY", "1");
    let plugin = Plugin::load(std::path::Path::new(&so)).unwrap();
    let opts: Vec<(&str, TopologyOption)> = vec![];
    let topology = Topology::create(&plugin, "v5:2x2x1", &opts).unwrap();
    let devices = topology.devices().unwrap();
    let mut options = CompileOptions::spmd(4);
    options.device_assignment = Some(devices.iter().map(|d| d.id).collect());
    match topology.compile_mlir(&text, &options) {
        Ok(exe) => {
            let m = exe.memory_stats().unwrap();
            println!("OK {m:?}");
            let hlo = exe.optimized_hlo_text().unwrap();
            std::fs::write("/tmp/probe.hlo.txt", hlo).unwrap();
        }
        Err(e) => println!("ERR {e}"),
    }
}
