//! The coordination service (src/distributed) over real TCP on 127.0.0.1: processes are threads of this
//! test, each joining with its own index, as separate OS processes would.

use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use maxtext::distributed::{DistributedError, ProcessGroup};

const T: Duration = Duration::from_secs(5);

/// A port nothing listens on (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Runs `body(index)` on `count` threads, each as process `index`, and returns their results in index order.
fn processes<R: Send + 'static>(count: usize, body: impl Fn(usize) -> R + Send + Sync + 'static) -> Vec<R> {
    let body = Arc::new(body);
    let threads: Vec<_> = (0..count)
        .map(|i| {
            let body = body.clone();
            thread::spawn(move || body(i))
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("a process thread panicked")).collect()
}

#[test]
fn group_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ProcessGroup>();
}

#[test]
fn three_processes_join_gather_barrier_and_put() {
    let addr = address();
    let results = processes(3, move |i| {
        // Process 0 starts last: the others must wait for the coordinator, not fail.
        if i == 0 {
            thread::sleep(Duration::from_millis(300));
        }
        let g = ProcessGroup::join(&addr, 3, i, T).unwrap();
        assert_eq!((g.index(), g.count(), g.is_primary()), (i, 3, i == 0));
        let all = g.all_gather("step_1/ids", format!("{i}").as_bytes(), T).unwrap();
        assert_eq!(all, vec![b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
        // Empty and larger values travel as bytes.
        let big = vec![i as u8; 100_000 * (i + 1)];
        let all = g.all_gather("step_1/big", &big, T).unwrap();
        assert_eq!(all.iter().map(|v| (v.len(), v[0])).collect::<Vec<_>>(), vec![(100_000, 0), (200_000, 1), (300_000, 2)]);
        g.barrier("step_1", T).unwrap();
        g.barrier("step_2", T).unwrap();
        // A reused name is refused at once.
        let e = g.barrier("step_2", T).unwrap_err();
        assert!(matches!(e, DistributedError::KeyExists { .. }), "{e}");
        // Raw keys: one writer, everyone reads (waiting for it), a second put conflicts. Odd characters survive.
        let key = "shared/naïve key?&=#%";
        if i == 1 {
            g.put(key, b"from 1").unwrap();
        }
        assert_eq!(g.get(key, T).unwrap(), b"from 1");
        g.barrier("after_get", T).unwrap();
        let e = g.put(key, b"again").unwrap_err();
        assert!(matches!(e, DistributedError::KeyExists { ref key } if key == "shared/naïve key?&=#%"), "{e}");
        let e = g.get("never/written", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, DistributedError::KeyMissing { .. }), "{e}");
        assert!(matches!(g.put("a//b", b"").unwrap_err(), DistributedError::BadKey { .. }));
        assert!(matches!(g.put("a/../b", b"").unwrap_err(), DistributedError::BadKey { .. }));
        i
    });
    assert_eq!(results, vec![0, 1, 2]);
}

#[test]
fn same_index_twice_is_index_taken() {
    let addr = address();
    // Process 0, and two processes both started as process 1. The group stays until the duplicate has its
    // answer (one that came after the group left would find no coordinator).
    let answered = Arc::new(Barrier::new(3));
    let results = processes(3, move |t| {
        let index = t.min(1);
        let joined = ProcessGroup::join(&addr, 2, index, T);
        answered.wait();
        let g = joined?;
        g.barrier("work", T).unwrap();
        Ok::<_, DistributedError>(index)
    });
    assert!(matches!(results[0], Ok(0)));
    let (ok, taken): (Vec<_>, Vec<_>) = results[1..].iter().partition(|r| r.is_ok());
    assert_eq!(ok.len(), 1, "{results:?}");
    let e = taken[0].as_ref().unwrap_err();
    match e {
        DistributedError::IndexTaken { index: 1, holder } => {
            assert!(holder.contains(&format!("pid {}", std::process::id())), "{holder}")
        }
        other => panic!("expected IndexTaken, got {other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("process_id 1 is already taken") && msg.contains("own process_id"), "{msg}");
}

#[test]
fn second_process_zero_on_the_same_port_is_index_taken() {
    let addr = address();
    let (tx, rx) = mpsc::channel();
    let first = {
        let addr = addr.clone();
        thread::spawn(move || {
            let g = ProcessGroup::join(&addr, 1, 0, T).unwrap();
            tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(500));
            drop(g);
        })
    };
    rx.recv().unwrap();
    let e = ProcessGroup::join(&addr, 1, 0, T).unwrap_err();
    assert!(matches!(e, DistributedError::IndexTaken { index: 0, .. }), "{e}");
    first.join().unwrap();
}

#[test]
fn count_mismatch_is_reported() {
    let addr = address();
    let results = processes(2, move |i| ProcessGroup::join(&addr, 2 + i, i, T).map(|_| ()));
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(matches!(e, DistributedError::CountMismatch { .. }), "{e}");
        assert!(e.to_string().contains("same num_processes"), "{e}");
    }
}

#[test]
fn bad_arguments_fail_before_any_network() {
    let t0 = Instant::now();
    let e = ProcessGroup::join("127.0.0.1:1", 2, 2, T).unwrap_err();
    assert!(matches!(e, DistributedError::BadIndex { index: 2, count: 2 }), "{e}");
    assert!(e.to_string().contains("from 0 to 1"), "{e}");
    assert!(matches!(ProcessGroup::join("127.0.0.1:1", 0, 0, T).unwrap_err(), DistributedError::BadCount));
    for bad in ["nohostport", ":8476", "host:port", "host:0", "http://host:8476", "::1:8476"] {
        let e = ProcessGroup::join(bad, 2, 1, T).unwrap_err();
        assert!(matches!(e, DistributedError::BadAddress { .. }), "{bad}: {e}");
    }
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[test]
fn no_coordinator_is_unreachable_after_the_timeout() {
    let addr = address();
    let t0 = Instant::now();
    let e = ProcessGroup::join(&addr, 2, 1, Duration::from_secs(2)).unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(e, DistributedError::Unreachable { .. }), "{e}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(5), "{took:?}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("cannot reach the coordinator at {addr} after 2")) && msg.contains("process 0"), "{msg}");
}

#[test]
fn missing_process_times_out_the_join() {
    let addr = address();
    let t0 = Instant::now();
    let e = ProcessGroup::join(&addr, 3, 0, Duration::from_secs(1)).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(4));
    match &e {
        DistributedError::Timeout { name, missing, .. } => assert_eq!((name.as_str(), missing.as_slice()), ("join", &[1, 2][..])),
        other => panic!("expected Timeout, got {other}"),
    }
}

#[test]
fn barrier_a_process_never_reaches_times_out_naming_it() {
    let addr = address();
    let arrived = Arc::new(Barrier::new(3));
    let results = processes(3, move |i| {
        let g = ProcessGroup::join(&addr, 3, i, T).unwrap();
        let r = if i == 2 { Ok(()) } else { g.barrier("step_7", Duration::from_secs(1)) };
        // Process 2 stays in the group until the others gave up, then all leave together.
        arrived.wait();
        r
    });
    assert!(results[2].is_ok());
    for r in &results[..2] {
        let e = r.as_ref().unwrap_err();
        match e {
            DistributedError::Timeout { name, missing, waited } => {
                assert_eq!((name.as_str(), missing.as_slice(), *waited), ("step_7", &[2][..], Duration::from_secs(1)))
            }
            other => panic!("expected Timeout, got {other}"),
        }
        let msg = e.to_string();
        assert!(msg.starts_with("processes [2] did not reach barrier 'step_7' within 1 s: check that every process"), "{msg}");
    }
}

#[test]
fn single_process_group_works_alone() {
    let g = ProcessGroup::single();
    assert_eq!((g.index(), g.count(), g.is_primary()), (0, 1, true));
    g.barrier("x", T).unwrap();
    g.barrier("x", T).unwrap();
    assert_eq!(g.all_gather("v", b"mine", T).unwrap(), vec![b"mine".to_vec()]);
    g.put("k", b"v").unwrap();
    assert!(matches!(g.put("k", b"w").unwrap_err(), DistributedError::KeyExists { .. }));
    assert_eq!(g.get("k", Duration::ZERO).unwrap(), b"v");
    assert!(matches!(g.get("absent", Duration::from_millis(10)).unwrap_err(), DistributedError::KeyMissing { .. }));
}

#[test]
fn one_process_group_through_a_coordinator() {
    let g = ProcessGroup::join(&address(), 1, 0, T).unwrap();
    g.barrier("only", T).unwrap();
    assert_eq!(g.all_gather("v", b"x", T).unwrap(), vec![b"x".to_vec()]);
    let t0 = Instant::now();
    drop(g);
    assert!(t0.elapsed() < Duration::from_secs(1), "leaving took {:?}", t0.elapsed());
}

#[test]
fn leaving_is_quick_and_frees_the_port() {
    let addr = address();
    let t0 = Instant::now();
    processes(2, {
        let addr = addr.clone();
        move |i| drop(ProcessGroup::join(&addr, 2, i, T).unwrap())
    });
    assert!(t0.elapsed() < Duration::from_secs(2), "join and leave took {:?}", t0.elapsed());
    // The coordinator stopped: the same address serves a new group.
    processes(2, move |i| drop(ProcessGroup::join(&addr, 2, i, T).unwrap()));
}

/// What `two_os_processes` passes its children: "address,index".
const CHILD_ENV: &str = "MAXTEXT_DISTRIBUTED_KV_CHILD";

/// Two real OS processes (this test binary, run again for `os_process_child`) join and gather their pids.
#[test]
fn two_os_processes() {
    let addr = address();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|i| {
            std::process::Command::new(&exe)
                .args(["--exact", "os_process_child", "--nocapture", "--test-threads", "1"])
                .env(CHILD_ENV, format!("{addr},{i}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let gathered: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
            stdout
                .lines()
                .find_map(|l| l.split_once("GATHERED ").map(|(_, r)| r.trim()))
                .unwrap_or_else(|| panic!("no result in:\n{stdout}"))
                .to_string()
        })
        .collect();
    assert_eq!(gathered[0], gathered[1]);
    let pids: Vec<&str> = gathered[0].split(',').collect();
    assert_eq!(pids.len(), 2);
    assert_ne!(pids[0], pids[1]);
}

/// One process of `two_os_processes`; does nothing when run as a test of its own.
#[test]
fn os_process_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (addr, index) = spec.rsplit_once(',').unwrap();
    let index: usize = index.parse().unwrap();
    let g = ProcessGroup::join(addr, 2, index, T).unwrap();
    let pid = std::process::id().to_string();
    let all = g.all_gather("pids", pid.as_bytes(), T).unwrap();
    assert_eq!(all[index], pid.as_bytes());
    g.barrier("done", T).unwrap();
    let all: Vec<String> = all.into_iter().map(|v| String::from_utf8(v).unwrap()).collect();
    println!("GATHERED {}", all.join(","));
}
