//! The storage layer (src/storage) against the real GCS emulator behind a fault-injecting proxy
//! (tests/common/gcs_faults.rs): a 403 becomes a clear `Denied`, 503 / 429 / dropped connections are retried
//! until the operation succeeds with the right bytes in the bucket, a server that never answers gives a
//! clear error in bounded time, and an upload that does not finish leaves no object behind.
//!
//! `STORAGE_EMULATOR_HOST` and `MAXTEXT_GCS_RETRIES` are process-wide, so every test holds [`ENV`] while it
//! points them at its own proxy (a new port, hence a fresh operator in the storage layer's cache).

mod common;

use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::gcs::{shared_emulator, Emulator};
use common::gcs_faults::{Fault, FaultProxy};
use maxtext::storage::{Location, StorageError};

static ENV: Mutex<()> = Mutex::new(());

/// The emulator (with `bucket` created) and a proxy in front of it with `fault`; the storage layer talks to
/// the proxy, with `retries` retries, while the returned guard is held.
fn setup(bucket: &str, fault: Fault, retries: usize) -> (MutexGuard<'static, ()>, &'static Emulator, FaultProxy) {
    let guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let emu = shared_emulator();
    let exists = reqwest::blocking::get(format!("{}/storage/v1/b/{bucket}", emu.endpoint())).unwrap().status().is_success();
    if !exists {
        emu.create_bucket(bucket);
    }
    let proxy = FaultProxy::start(emu, fault);
    std::env::set_var("STORAGE_EMULATOR_HOST", proxy.host());
    std::env::set_var("MAXTEXT_GCS_RETRIES", retries.to_string());
    (guard, emu, proxy)
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (a hang is a bug too).
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

/// Deterministic bytes that differ at every offset of a part, so a misplaced or repeated chunk shows.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8).collect()
}

/// A streamed upload of `data` through `create()` / `finish()`, in odd-sized writes.
fn upload(loc: &Location, data: &[u8]) -> Result<(), String> {
    let mut w = loc.create().map_err(|e| e.to_string())?;
    for c in data.chunks(5_000_011) {
        w.write_all(c).map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())
}

const MIB: usize = 1 << 20;

#[test]
fn forbidden_is_denied_naming_the_path_and_not_retried() {
    let (_g, _emu, proxy) = setup("faults-deny", Fault::Deny, 6);
    let loc = Location::parse("gs://faults-deny/run/ckpt/0/_METADATA").unwrap();
    let t = Instant::now();
    let e = loc.read().unwrap_err();
    assert!(matches!(e, StorageError::Denied { .. }), "read: {e:?}");
    let msg = e.to_string();
    eprintln!("403 on read: {msg}");
    assert!(msg.contains("access to gs://faults-deny/run/ckpt/0/_METADATA was denied"), "{msg}");
    assert!(msg.contains("GOOGLE_APPLICATION_CREDENTIALS") && msg.contains("service account"), "says what to check: {msg}");
    // The server's own reason reaches the user, on one line.
    assert!(msg.contains("does not have storage.objects.get access"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    // A 403 is final: no retries (each would back off), so one request and well under a second.
    assert_eq!(proxy.requests(), 1, "403 must not be retried:\n{}", proxy.log());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    let s = |r: Result<(), StorageError>| r.map_err(|e| e.to_string());
    for (what, r) in [
        ("read_range", s(loc.read_range(0, 10).map(|_| ()))),
        ("size", s(loc.size().map(|_| ()))),
        ("open", s(loc.open().map(|_| ()))),
        ("write", s(loc.write(b"{}"))),
        ("list", s(loc.parent().unwrap().list().map(|_| ()))),
        ("create/finish", upload(&loc, &[1u8; 100])),
    ] {
        // Only `StorageError::Denied` says "access to ... was denied".
        let msg = r.expect_err(what);
        assert!(msg.contains("access to gs://faults-deny/run/ckpt/0") && msg.contains("was denied"), "{what}: {msg}");
    }
}

/// The read, the small write and the streamed multi-part upload each meet `fault` (a fresh proxy each) and
/// must succeed with the exact bytes in the bucket, after the proxy has seen its faults.
fn survives(bucket: &str, fault: Fault, faults: usize) {
    let big = pattern(3 * 16 * MIB + 123_457, 7);
    let small = pattern(70_001, 3);
    let root = Location::parse(&format!("gs://{bucket}/ckpt")).unwrap();

    // Small write.
    let (g, emu, proxy) = setup(bucket, fault.clone(), 6);
    within(Duration::from_secs(60), "write", {
        let l = root.join("small.bin");
        let s = small.clone();
        move || l.write(&s).unwrap()
    });
    assert_eq!(proxy.faults(), faults, "write:\n{}", proxy.log());
    assert!(proxy.requests() > faults, "write:\n{}", proxy.log());
    let objs = emu.objects(bucket, "ckpt");
    assert_eq!(objs.len(), 1);
    assert!(objs[0].0 == "small.bin" && objs[0].1 == small, "write stored other bytes");
    drop((proxy, g));

    // Read (whole and ranged) of the object just written.
    let (g, _emu, proxy) = setup(bucket, fault.clone(), 6);
    let got = within(Duration::from_secs(60), "read", {
        let l = root.join("small.bin");
        move || l.read().unwrap()
    });
    assert!(got == small, "read returned other bytes");
    assert_eq!(proxy.faults(), faults, "read:\n{}", proxy.log());
    drop((proxy, g));

    // Streamed upload of several 16 MiB parts.
    let (g, emu, proxy) = setup(bucket, fault, 6);
    within(Duration::from_secs(120), "streamed upload", {
        let l = root.join("big.bin");
        let b = big.clone();
        move || upload(&l, &b).unwrap()
    });
    assert_eq!(proxy.faults(), faults, "upload:\n{}", proxy.log());
    let objs = emu.objects(bucket, "ckpt");
    assert_eq!(objs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["big.bin", "small.bin"]);
    assert!(objs[0].1.len() == big.len() && objs[0].1 == big, "upload stored other bytes ({} of {})", objs[0].1.len(), big.len());
    drop((proxy, g));
}

#[test]
fn service_unavailable_is_retried_until_success() {
    survives("faults-503", Fault::Status { status: 503, first: 3 }, 3);
    // Mid-upload: the session start succeeds, then chunk uploads are refused (requests 1, 2 and 4).
    let (_g, emu, proxy) = setup("faults-503", Fault::StatusAt { status: 503, at: vec![1, 2, 4] }, 6);
    let big = pattern(2 * 16 * MIB + 5, 11);
    let l = Location::parse("gs://faults-503/mid/big.bin").unwrap();
    within(Duration::from_secs(120), "upload", {
        let b = big.clone();
        move || upload(&l, &b).unwrap()
    });
    assert_eq!(proxy.faults(), 3, "{}", proxy.log());
    assert!(emu.objects("faults-503", "mid") == vec![("big.bin".to_string(), big.clone())], "mid-upload 503s changed the bytes");
    drop((proxy, _g));

    // A large read_range goes out as several ranged GETs in flight; one of them is refused and retried.
    let (g, _emu, proxy) = setup("faults-503", Fault::StatusAt { status: 503, at: vec![1] }, 6);
    let l = Location::parse("gs://faults-503/mid/big.bin").unwrap();
    let len = big.len() as u64 - 7;
    let got = within(Duration::from_secs(60), "read_range", move || l.read_range(7, len).unwrap());
    assert!(got == big[7..], "parallel ranged read returned other bytes");
    assert_eq!(proxy.faults(), 1, "{}", proxy.log());
    // Two 16 MiB pieces and the retry of the refused one.
    assert!(proxy.requests() >= 3, "one ranged GET, not several:\n{}", proxy.log());
    drop((proxy, g));

    // A 503 that never ends: Google's reason, the retries, one line.
    let (_g, _emu, proxy) = setup("faults-503", Fault::Status { status: 503, first: usize::MAX }, 1);
    let l = Location::parse("gs://faults-503/mid/big.bin").unwrap();
    let msg = within(Duration::from_secs(30), "read", move || l.read().unwrap_err().to_string());
    eprintln!("503 forever: {msg}");
    assert!(msg.starts_with("cannot read gs://faults-503/mid/big.bin: HTTP 503 from GetObject: We encountered an internal error"), "{msg}");
    assert!(msg.contains("gave up after 1 retries") && !msg.contains('\n'), "{msg}");
    assert_eq!(proxy.requests(), 2, "{}", proxy.log());
}

#[test]
fn rate_limiting_is_retried_until_success() {
    survives("faults-429", Fault::Status { status: 429, first: 3 }, 3);
}

#[test]
fn dropped_connections_are_retried_until_success() {
    survives("faults-drop", Fault::Drop { first: 3 }, 3);
    // Mid-upload: chunk requests whose connection dies after the server read them.
    let (_g, emu, proxy) = setup("faults-drop", Fault::DropAt { at: vec![1, 3] }, 6);
    let big = pattern(3 * 16 * MIB, 5);
    let l = Location::parse("gs://faults-drop/mid/big.bin").unwrap();
    within(Duration::from_secs(120), "upload", {
        let b = big.clone();
        move || upload(&l, &b).unwrap()
    });
    assert_eq!(proxy.faults(), 2, "{}", proxy.log());
    assert!(emu.objects("faults-drop", "mid") == vec![("big.bin".to_string(), big)], "mid-upload drops changed the bytes");
}

#[test]
fn a_server_that_never_answers_gives_up_with_a_clear_error() {
    let (_g, emu, proxy) = setup("faults-dead", Fault::Drop { first: usize::MAX }, 2);
    let loc = Location::parse("gs://faults-dead/run/x.bin").unwrap();
    let limit = Duration::from_secs(30);
    let checks: Vec<(&str, Box<dyn FnOnce() -> Result<(), String> + Send>)> = vec![
        ("read", Box::new({ let l = loc.clone(); move || l.read().map(|_| ()).map_err(|e| e.to_string()) })),
        ("write", Box::new({ let l = loc.clone(); move || l.write(b"abc").map_err(|e| e.to_string()) })),
        ("create/finish", Box::new({ let l = loc.clone(); move || upload(&l, &pattern(20 * MIB, 1)) })),
    ];
    for (what, f) in checks {
        let before = proxy.requests();
        let msg = within(limit, what, f).expect_err(what);
        eprintln!("never answered, {what}: {msg}");
        assert!(msg.contains("gs://faults-dead/run/x.bin"), "{what}: {msg}");
        assert!(msg.contains("gave up after 2 retries"), "{what}: {msg}");
        assert!(!msg.contains('\n'), "{what}: one line: {msg}");
        // The first try and 2 retries reached the server (and nothing succeeded).
        assert!(proxy.requests() - before >= 3, "{what}: {} requests:\n{}", proxy.requests() - before, proxy.log());
    }
    assert!(emu.objects("faults-dead", "").is_empty());
}

#[test]
fn an_unfinished_upload_leaves_no_object() {
    // Dropped without finish(): after several parts went out.
    let (g, emu, proxy) = setup("faults-unfinished", Fault::None, 6);
    let mut w = Location::parse("gs://faults-unfinished/ckpt/d/abandoned").unwrap().create().unwrap();
    for c in pattern(64 * MIB, 2).chunks(MIB) {
        w.write_all(c).unwrap();
    }
    // Parts go out behind the caller (opendal holds a chunk back until the next arrives): wait until a
    // chunk reached the server, or the drop below would prove nothing.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.log().contains("PUT") {
        assert!(Instant::now() < deadline, "no chunk was sent:\n{}", proxy.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(w);
    assert_eq!(emu.objects("faults-unfinished", ""), vec![], "an abandoned upload became an object");
    drop((proxy, g));

    // The server dies mid-upload: the session start and one chunk get through, then nothing answers.
    let (_g, emu, proxy) = setup("faults-unfinished", Fault::DieAfter { after: 2 }, 1);
    let l = Location::parse("gs://faults-unfinished/ckpt/d/died").unwrap();
    let msg = within(Duration::from_secs(60), "upload", move || upload(&l, &pattern(64 * MIB, 4))).expect_err("upload to a dead server");
    eprintln!("server died mid-upload: {msg}");
    assert!(msg.contains("gs://faults-unfinished/ckpt/d/died"), "{msg}");
    assert!(msg.contains("gave up after 1 retries"), "{msg}");
    assert!(proxy.faults() >= 2, "{}", proxy.log());
    assert_eq!(emu.objects("faults-unfinished", ""), vec![], "a half-written upload became an object");
}

#[test]
fn a_missing_credentials_file_is_named() {
    let _g = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let saved = std::env::var("STORAGE_EMULATOR_HOST").ok();
    std::env::remove_var("STORAGE_EMULATOR_HOST");
    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/maxtext-key.json");
    let e = Location::parse("gs://faults-creds/x.json").unwrap().read();
    std::env::remove_var("GOOGLE_APPLICATION_CREDENTIALS");
    if let Some(h) = saved {
        std::env::set_var("STORAGE_EMULATOR_HOST", h);
    }
    let e = e.unwrap_err();
    assert!(matches!(e, StorageError::Setup { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("/nonexistent/maxtext-key.json") && msg.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{msg}");
    assert!(msg.contains("gs://faults-creds"), "{msg}");
}
