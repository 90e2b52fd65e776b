//! Per-parameter gradient norms of the loss at a checkpoint's parameters on the config's first batch (a
//! debugging aid: compare with MaxText's per-leaf raw grads). Usage: grad_norms CKPT key=value...
//! (`GRAD_NORMS_F64=1`: parameters and activations in float64.)
use maxtext::autodiff::value_and_grad;
use maxtext::checkpoint::params::ModelCheckpoint;
use maxtext::config::Config;
use maxtext::data::DataIterator;
use maxtext::ir::Program;
use maxtext::pjrt::{open_client, Hardware};
use maxtext::program::{loss_function, BATCH_KEYS, LOSS_OUTPUTS};
use maxtext::runtime::Runtime;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = Config::load(std::path::Path::new("configs/base.yml"), &args[1..]).unwrap();
    if std::env::var("GRAD_NORMS_F64").is_ok() {
        // Parameters and activations in float64 (norms, softmax, the delta-rule state and the logits stay
        // float32 by design): a more exact gradient than either float32 program's, to see which is closer.
        cfg.compute.dtype = maxtext::ir::DType::F64;
        cfg.compute.weight_dtype = maxtext::ir::DType::F64;
    }
    let (b, s) = (cfg.batch.global_batch_size_to_train_on as i64, cfg.data.max_target_length as i64);
    let (f, decls) = loss_function(&cfg, b, s);
    let g = value_and_grad(&f, &(5..5 + decls.len()).collect::<Vec<_>>());
    let params = ModelCheckpoint::open(std::path::PathBuf::from(&args[0])).unwrap().restore_params(&decls, &cfg.model).unwrap();
    let batch = DataIterator::new(&cfg, 0, 1).unwrap().next_batch().unwrap();
    let mut inputs: Vec<_> = BATCH_KEYS.iter().map(|k| batch.host_tensor(k).unwrap()).collect();
    inputs.extend(params);
    let rt = Runtime::new(open_client(Hardware::Cpu, None, Some(1)).unwrap());
    let out = rt.run(&Program::new("grads", g), &inputs).unwrap();
    let w = out[1].to_f64()[0];
    println!("loss {}", out[0].to_f64()[0] / w);
    let mut total = 0f64;
    for (d, t) in decls.iter().zip(&out[LOSS_OUTPUTS..]) {
        let n: f64 = t.to_f64().iter().map(|v| (v / w) * (v / w)).sum();
        total += n;
        println!("GRAD {} {}", d.path, n.sqrt());
        // Per layer of a stacked parameter (the `local_layers` scan axis, when there is one).
        if let Some(ax) = d.axes.iter().position(|a| *a == "local_layers") {
            let (dims, vals) = (&t.dims, t.to_f64());
            let inner: i64 = dims[ax + 1..].iter().product();
            let mut per = vec![0f64; dims[ax] as usize];
            for (i, v) in vals.iter().enumerate() {
                per[(i as i64 / inner % dims[ax]) as usize] += (v / w) * (v / w);
            }
            println!("LAYERS {} {:?}", d.path, per.iter().map(|x| x.sqrt()).collect::<Vec<_>>());
        }
    }
    println!("total {}", total.sqrt());
}
