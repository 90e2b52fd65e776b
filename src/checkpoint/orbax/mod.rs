//! Orbax checkpoints, read and written natively (no Python, no tensorstore).
//!
//! The on-disk format is the one orbax-checkpoint 0.12.8 writes (byte-level spec:
//! `../shared/reference/orbax-format.md`):
//!
//! ```text
//! <root>/<step>/                      _CHECKPOINT_METADATA, commit_success.txt      (CheckpointManager step)
//!   items/                            the item directory (what `OrbaxCheckpoint::open` takes)
//!     _METADATA                       tree structure: leaf key paths and value types
//!     _sharding                       per-array sharding (base64url(name) -> JSON string)
//!     manifest.ocdbt, d/<hex>         OCDBT key-value database holding the zarr arrays ...
//!     ocdbt.process_<i>/...           ... whose values may live in per-process databases
//!     <name>/.zarray | <name>/zarr.json + chunks   ... or the same keys as plain files
//! ```
//!
//! Layers, bottom up: [`kvstore`] (plain files or [`ocdbt`]) -> [`zarr`] (zarr v2 / v3 arrays, codecs in
//! [`codec`]) -> [`metadata`] (`_METADATA` and friends) -> [`reader`] / [`writer`].
//! No crate implements OCDBT or zarr's metadata, so those are written by hand here; compression and
//! checksums come from `zstd`, `flate2`, `bzip2` and `crc32c`.

pub mod codec;
mod db_writer;
pub mod dtype;
pub mod kvstore;
pub mod metadata;
pub mod ocdbt;
mod ocdbt_write;
pub mod reader;
mod region;
pub mod writer;
pub mod zarr;
mod zarr3;

use crate::storage::{Location, StorageError};

pub use dtype::ZarrDType;
pub use metadata::{LeafKind, PathKey};
pub use reader::{list_steps, ArrayData, LeafInfo, OrbaxCheckpoint};
pub use writer::{
    named_sharding_record, parse_dotted, write_checkpoint, write_checkpoint_with, ArrayInProgress, CheckpointWriter, ShardingRecord, WriteLeaf,
    WriteOptions,
};
pub use metadata::PyJson;

/// Marker orbax puts into the name of a directory that is still being written; such a directory is never a
/// finished checkpoint.
pub const TMP_MARKER: &str = ".orbax-checkpoint-tmp";

/// Everything that can go wrong reading or writing an Orbax checkpoint. Each variant names the file or
/// the array concerned and says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OrbaxError {
    #[error("{source}")]
    Io { path: Location, source: StorageError },

    #[error("{source} (check free space and permissions; nothing was committed)")]
    Write { path: Location, source: StorageError },

    #[error("{dir} is not an Orbax item directory: {reason}")]
    NotACheckpoint { dir: Location, reason: String },

    #[error("{dir} has no _METADATA; orbax cannot restore it without a target either (only a plain zarr v2 directory can be read without _METADATA). The checkpoint is incomplete: re-save it, or restore the missing _METADATA")]
    MissingMetadata { dir: Location },

    #[error("{path} is an incomplete checkpoint ({why}: the writer did not finish); use an earlier step or save again")]
    Incomplete { path: Location, why: &'static str },

    #[error("{path} is not valid: {reason}")]
    BadMetadata { path: Location, reason: String },

    #[error("OCDBT file {path} is corrupt: {reason}; the checkpoint is damaged (copy it again or restore from another step)")]
    Ocdbt { path: Location, reason: String },

    #[error("array {array} in {dir}: {reason}")]
    Array { dir: Location, array: String, reason: String },

    #[error("array {array} in {dir}: chunk {key} is missing and _METADATA says every chunk was stored (store_array_data_equal_to_fill_value); the checkpoint is incomplete or damaged")]
    MissingChunk { dir: Location, array: String, key: String },

    #[error("array {array} in {dir} uses codec {codec}, which this reader does not support (supported: raw, zstd, gzip, zlib, bz2, crc32c, bytes, transpose, sharding_indexed); re-save it with orbax's default codecs")]
    UnsupportedCodec { dir: Location, array: String, codec: String },

    #[error("array {array} in {dir} has dtype {dtype:?}, which this reader does not support")]
    UnsupportedDType { dir: Location, array: String, dtype: String },

    #[error("{dir} has no leaf named {name:?}{hint}")]
    NoSuchLeaf { dir: Location, name: String, hint: String },

    #[error("leaf {name} in {dir} is a {kind}, not an array")]
    NotAnArray { dir: Location, name: String, kind: String },

    #[error("array {name} has dtype {dtype}, which has no host tensor type; use OrbaxCheckpoint::read_array for its raw bytes")]
    NoHostDType { name: String, dtype: ZarrDType },

    #[error(
        "checkpoint step {path} already exists; refusing to overwrite it (delete it first, or save under another step)"
    )]
    StepExists { path: Location },

    #[error("cannot save leaf {name:?}: {reason}")]
    BadLeaf { name: String, reason: String },

    #[error("saving {path} together with the other processes: {reason}; nothing was committed")]
    Processes { path: Location, reason: String },
}

pub type Result<T, E = OrbaxError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Location) -> impl FnOnce(StorageError) -> OrbaxError + '_ {
    move |source| OrbaxError::Io { path: path.clone(), source }
}

pub(crate) fn write_err(path: &Location) -> impl FnOnce(StorageError) -> OrbaxError + '_ {
    move |source| OrbaxError::Write { path: path.clone(), source }
}
