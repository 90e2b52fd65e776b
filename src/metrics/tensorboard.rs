//! TensorBoard event files: a writer of scalar summaries and a reader of them.
//!
//! A file `events.out.tfevents.<unix secs>.<host>.<pid>.<n>` is a TFRecord file ([`super::tfrecord`]) of
//! serialized `Event` protos (`proto/tensorboard.proto`, upstream field numbers). The first record is
//! `Event{wall_time, file_version: "brain.Event:2"}`; each scalar is one
//! `Event{wall_time, step, summary: Summary{value: [Value{tag, simple_value}]}}`, as tensorboardX's
//! `add_scalar` writes it (MaxText's writer).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use prost::Message;

use super::output::OutputFile;
use super::tfrecord::{frame_record, parse_records};
use super::MetricsError;
use crate::storage::Location;

/// Messages generated from `proto/tensorboard.proto` by build.rs.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/tensorboard.rs"));
}

pub use proto::{event, summary, Event, Summary};

/// The `file_version` of the first record.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Distinguishes files created by one process within one second.
static FILE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Seconds since the Unix epoch, as Event.wall_time.
pub fn wall_time_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().replace(['/', ' '], "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Appends scalar events to one event file. Every call writes whole records with one `write`, unbuffered,
/// so a process killed between calls leaves a file of complete records. In a bucket the file is an object
/// uploaded whole, periodically and at the end ([`OutputFile`]).
#[derive(Debug)]
pub struct EventWriter {
    file: OutputFile,
}

impl EventWriter {
    /// Creates `dir` (and parents) and a new event file in it, starting with the file-version record.
    pub fn create(dir: &Location) -> Result<EventWriter, MetricsError> {
        let wall_time = wall_time_now();
        let name = format!(
            "events.out.tfevents.{:010}.{}.{}.{}",
            wall_time as u64,
            hostname(),
            std::process::id(),
            FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut w = EventWriter { file: OutputFile::create_new(&dir.join(name))? };
        let first = Event { wall_time, step: 0, what: Some(event::What::FileVersion(FILE_VERSION.into())) };
        w.write_events(&[first])?;
        Ok(w)
    }

    /// The event file.
    pub fn location(&self) -> &Location {
        self.file.location()
    }

    /// Writes one scalar event per `(tag, value)`, all at `step` and `wall_time`, in one `write`.
    pub fn write_scalars(&mut self, step: i64, wall_time: f64, scalars: &[(&str, f64)]) -> Result<(), MetricsError> {
        let events: Vec<Event> = scalars
            .iter()
            .map(|&(tag, value)| Event {
                wall_time,
                step,
                what: Some(event::What::Summary(Summary {
                    value: vec![summary::Value {
                        node_name: String::new(),
                        tag: tag.to_string(),
                        value: Some(summary::value::Value::SimpleValue(value as f32)),
                    }],
                })),
            })
            .collect();
        self.write_events(&events)
    }

    /// Frames and writes `events` with a single `write_all`.
    pub fn write_events(&mut self, events: &[Event]) -> Result<(), MetricsError> {
        let mut buf = Vec::new();
        for e in events {
            frame_record(&e.encode_to_vec(), &mut buf);
        }
        self.file.write_all(&buf)
    }

    /// Flushes the file to disk (`fsync`; local records already survive the process without it), or
    /// uploads the whole object.
    pub fn sync(&mut self) -> Result<(), MetricsError> {
        self.file.flush()
    }
}

/// One scalar read back from an event file.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalarEvent {
    pub wall_time: f64,
    pub step: i64,
    pub tag: String,
    /// `simple_value`, an f32 on disk.
    pub value: f32,
}

/// Every event of an event file, checksums verified.
pub fn read_events(path: &Path) -> Result<Vec<Event>, MetricsError> {
    let bytes = std::fs::read(path).map_err(|e| MetricsError::io(path, e))?;
    decode_events(&bytes, path)
}

/// The events of an event file's bytes (`path` only names it in errors).
pub fn decode_events(bytes: &[u8], path: &Path) -> Result<Vec<Event>, MetricsError> {
    parse_records(bytes, path)?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Event::decode(r.as_slice()).map_err(|e| MetricsError::Decode {
                path: path.to_path_buf(),
                record: i,
                source: e,
            })
        })
        .collect()
}

/// The scalar summaries of an event file, in file order (values of other kinds are skipped).
pub fn read_scalars(path: &Path) -> Result<Vec<ScalarEvent>, MetricsError> {
    let mut out = Vec::new();
    for e in read_events(path)? {
        let Some(event::What::Summary(s)) = e.what else { continue };
        for v in s.value {
            if let Some(summary::value::Value::SimpleValue(value)) = v.value {
                out.push(ScalarEvent { wall_time: e.wall_time, step: e.step, tag: v.tag, value });
            }
        }
    }
    Ok(out)
}

/// The `events.out.tfevents.*` files under `dir` (recursively), sorted by path.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>, MetricsError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| MetricsError::io(&d, e))? {
            let p = entry.map_err(|e| MetricsError::io(&d, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("events.out.tfevents.")) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
