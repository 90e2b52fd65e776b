//! Storage: the one layer under checkpoints, data, metrics and the compile cache that reads and writes
//! either local paths or `gs://bucket/prefix` objects (Google Cloud Storage, or an emulator named by
//! `STORAGE_EMULATOR_HOST`).
//!
//! A [`Location`] is a file or a directory in either place. Directories on GCS are prefixes: they exist
//! when an object lies under them, "creating" one does nothing, and there is no rename — callers that
//! need an atomic commit (the Orbax writer) write their commit marker last instead (`storage_commit`
//! in `checkpoint::orbax::writer`). GCS goes through `opendal` (its GCS JSON API client, credentials by
//! Google's rules, retries with backoff); local paths stay on `std::fs`, unchanged.

mod gcs;
mod location;
mod stage;
mod stream;

pub use location::{Entry, Location};
pub use stage::{local_dir, remove_staged};
pub use stream::{ObjectWriter, RangeReader};

use std::path::PathBuf;

/// What can go wrong reading or writing a [`Location`]. Every variant names the location and says what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{loc} does not exist")]
    NotFound { loc: String },

    #[error("bucket gs://{bucket} does not exist (or this account cannot see it); create it (`gcloud storage buckets create gs://{bucket}`) or fix the path")]
    NoBucket { bucket: String },

    #[error("access to {loc} was denied ({detail}); check the credentials: GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login`, or the TPU VM's service account and its storage scope")]
    Denied { loc: String, detail: String },

    #[error("cannot {op} {loc}: {source}")]
    Io { op: &'static str, loc: String, source: std::io::Error },

    #[error("cannot {op} {loc}: {detail}")]
    Remote { op: &'static str, loc: String, detail: String },

    #[error("{path:?} is not a storage path this program can use: {reason}")]
    BadPath { path: String, reason: String },

    #[error("cannot set up Google Cloud Storage access for gs://{bucket}: {detail}")]
    Setup { bucket: String, detail: String },
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

/// Lets code that speaks `std::io::Error` (readers, `?` in io-shaped helpers) carry a storage error
/// with its message intact; `NotFound` stays `ErrorKind::NotFound`.
impl From<StorageError> for std::io::Error {
    fn from(e: StorageError) -> std::io::Error {
        match e {
            StorageError::Io { source, .. } if source.kind() != std::io::ErrorKind::Other => {
                std::io::Error::new(source.kind(), source.to_string())
            }
            StorageError::NotFound { .. } => std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
            StorageError::Denied { .. } => std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()),
            other => std::io::Error::other(other.to_string()),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A local path as a location (for callers that only ever have local paths).
impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Location {
        Location::Local(p)
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Location {
        Location::Local(p.clone())
    }
}

impl From<&Location> for Location {
    fn from(l: &Location) -> Location {
        l.clone()
    }
}

impl From<&std::path::Path> for Location {
    fn from(p: &std::path::Path) -> Location {
        Location::Local(p.to_path_buf())
    }
}
