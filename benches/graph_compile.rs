//! Trace + emit + compile time of a 2,000-op graph, next to a 200-op baseline traced, emitted and compiled
//! in the same process (the ratio shows how each phase scales with graph size).
//!
//! Run: `cargo bench --bench graph_compile`

use maxtext::emit::emit_program;
use maxtext::ir::{DType, Graph, Program, TensorType};
use maxtext::pjrt::{open_client, CompileOptions, Hardware};
use std::time::{Duration, Instant};

/// A chain of `n` ops over 64x64 f32 matrices: dot, add, tanh, multiply, transpose, maximum (the mix
/// used in reference/pjrt.md's compile-time table).
fn trace(n: usize) -> Program {
    let g = Graph::new();
    let ty = TensorType::new(DType::F32, &[64, 64]);
    let w = g.param(ty.clone());
    let mut x = g.param(ty);
    let mut count = 0;
    while count < n {
        let step = count % 6;
        x = match step {
            0 => x.matmul(&w),
            1 => &x + &w,
            2 => x.tanh(),
            3 => &x * &w,
            4 => x.transpose(&[1, 0]),
            _ => x.max(&w),
        };
        count += 1;
    }
    let s = x.sum(&[0, 1]);
    Program::new("chain", g.finish(&[x, s]))
}

struct Phases {
    trace: Duration,
    emit: Duration,
    compile: Duration,
    ops: usize,
    bytes: usize,
}

fn measure(client: &maxtext::pjrt::Client, n: usize, reps: usize) -> Phases {
    let mut best: Option<Phases> = None;
    for _ in 0..reps {
        let t0 = Instant::now();
        let p = trace(n);
        let t1 = Instant::now();
        let text = emit_program(&p);
        let t2 = Instant::now();
        let exe = client.compile_mlir(&text, &CompileOptions::single_device()).expect("compile");
        let t3 = Instant::now();
        drop(exe);
        let ph = Phases { trace: t1 - t0, emit: t2 - t1, compile: t3 - t2, ops: p.main.num_ops(), bytes: text.len() };
        let total = |p: &Phases| p.trace + p.emit + p.compile;
        if best.as_ref().map_or(true, |b| total(&ph) < total(b)) {
            best = Some(ph);
        }
    }
    best.unwrap()
}

fn main() {
    let client = open_client(Hardware::Cpu, None, Some(1)).expect("CPU PJRT client");
    let reps = 3;
    let base = measure(&client, 200, reps);
    let big = measure(&client, 2000, reps);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("graph_compile: best of {reps}, XLA CPU plugin, 1 device");
    println!("{:>8} {:>8} {:>10} {:>10} {:>12} {:>10}", "ops", "MLIR KB", "trace ms", "emit ms", "compile ms", "total ms");
    for p in [&base, &big] {
        println!(
            "{:>8} {:>8.1} {:>10.2} {:>10.2} {:>12.1} {:>10.1}",
            p.ops,
            p.bytes as f64 / 1024.0,
            ms(p.trace),
            ms(p.emit),
            ms(p.compile),
            ms(p.trace + p.emit + p.compile)
        );
    }
    let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "ratio 2000-op / 200-op: trace {:.1}x, emit {:.1}x, compile {:.1}x (ops {:.1}x)",
        r(big.trace, base.trace),
        r(big.emit, base.emit),
        r(big.compile, base.compile),
        big.ops as f64 / base.ops as f64
    );
}
