//! [`OutputFile`]: a metrics output (the metrics file, an event file) that grows by appends, local or on
//! `gs://`.
//!
//! Locally every append is one unbuffered `write`, so a killed run keeps every completed step. A GCS
//! object cannot be appended to: the bytes are kept in memory and the whole object is uploaded again on
//! [`OutputFile::flush`] (what TensorFlow's GCS filesystem does for TensorBoard's event files), at most
//! every [`UPLOAD_EVERY`] while the run goes on, and always on [`OutputFile::close`] and on drop, so a
//! run that ends, normally or with an error, loses nothing; a killed one loses at most the last interval.
//! Each upload replaces the object whole: a reader never sees a torn record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::MetricsError;
use crate::storage::Location;

/// The longest a remote output lags behind the run (between uploads of the whole object).
pub const UPLOAD_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct OutputFile {
    loc: Location,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Local(File),
    Remote { bytes: Vec<u8>, uploaded: Option<Instant>, dirty: bool },
}

impl OutputFile {
    /// Opens `loc` for appending, creating it (and local parent directories); a remote object's current
    /// bytes are read first, so appends follow them as they would a local file's.
    pub fn append(loc: &Location) -> Result<OutputFile, MetricsError> {
        OutputFile::open(loc, false)
    }

    /// Creates `loc`, which must not exist locally (event file names are unique per process and second).
    pub fn create_new(loc: &Location) -> Result<OutputFile, MetricsError> {
        OutputFile::open(loc, true)
    }

    fn open(loc: &Location, new: bool) -> Result<OutputFile, MetricsError> {
        let kind = match loc {
            Location::Local(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| MetricsError::io(dir, e))?;
                }
                let f = OpenOptions::new().create(!new).create_new(new).append(true).open(p);
                Kind::Local(f.map_err(|e| MetricsError::io(p, e))?)
            }
            Location::Gcs { .. } if new => Kind::Remote { bytes: vec![], uploaded: None, dirty: true },
            Location::Gcs { .. } => {
                let bytes = loc.read_if_exists().map_err(|e| err(loc, e))?.unwrap_or_default();
                Kind::Remote { bytes, uploaded: None, dirty: false }
            }
        };
        Ok(OutputFile { loc: loc.clone(), kind })
    }

    pub fn location(&self) -> &Location {
        &self.loc
    }

    /// Appends `data` (one `write` locally); a remote file is uploaded when [`UPLOAD_EVERY`] has passed
    /// since its last upload (or it was never uploaded).
    pub fn write_all(&mut self, data: &[u8]) -> Result<(), MetricsError> {
        match &mut self.kind {
            Kind::Local(f) => f.write_all(data).map_err(|e| MetricsError::io(&path_of(&self.loc), e)),
            Kind::Remote { bytes, uploaded, dirty } => {
                bytes.extend_from_slice(data);
                *dirty = true;
                if uploaded.is_none_or(|t| t.elapsed() >= UPLOAD_EVERY) {
                    self.flush()?;
                }
                Ok(())
            }
        }
    }

    /// Empties the file (MaxText's metrics file restarts at step 0).
    pub fn truncate(&mut self) -> Result<(), MetricsError> {
        match &mut self.kind {
            Kind::Local(f) => f.set_len(0).map_err(|e| MetricsError::io(&path_of(&self.loc), e)),
            Kind::Remote { bytes, dirty, .. } => {
                bytes.clear();
                *dirty = true;
                Ok(())
            }
        }
    }

    /// Local: `fsync`. Remote: uploads the whole object if anything changed since the last upload.
    pub fn flush(&mut self) -> Result<(), MetricsError> {
        match &mut self.kind {
            Kind::Local(f) => f.sync_data().map_err(|e| MetricsError::io(&path_of(&self.loc), e)),
            Kind::Remote { bytes, uploaded, dirty } => {
                if *dirty {
                    self.loc.write(bytes).map_err(|e| err(&self.loc, e))?;
                    *dirty = false;
                    *uploaded = Some(Instant::now());
                }
                Ok(())
            }
        }
    }

    /// [`OutputFile::flush`], reporting its error; after it, dropping uploads nothing more.
    pub fn close(mut self) -> Result<(), MetricsError> {
        self.flush()
    }
}

impl Drop for OutputFile {
    /// A remote file not yet closed (an error unwound the run) is uploaded one last time.
    fn drop(&mut self) {
        if let Kind::Remote { dirty: true, .. } = self.kind {
            if let Err(e) = self.flush() {
                eprintln!("warning: the last metrics of {} were not uploaded: {e}", self.loc);
            }
        }
    }
}

/// The location as the path errors carry.
fn path_of(loc: &Location) -> PathBuf {
    PathBuf::from(loc.to_string())
}

fn err(loc: &Location, e: crate::storage::StorageError) -> MetricsError {
    MetricsError::Io { path: path_of(loc), source: e.into() }
}
