//! Errors of the PJRT runtime.

use std::fmt;
use std::path::PathBuf;

use super::sys;

/// A PJRT status code (absl numbering, as in `PJRT_Error_Code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
    /// A code this header does not know (a newer plugin).
    Other(u32),
}

impl ErrorCode {
    pub(crate) fn from_raw(code: sys::PJRT_Error_Code) -> ErrorCode {
        match code {
            sys::PJRT_Error_Code_CANCELLED => ErrorCode::Cancelled,
            sys::PJRT_Error_Code_UNKNOWN => ErrorCode::Unknown,
            sys::PJRT_Error_Code_INVALID_ARGUMENT => ErrorCode::InvalidArgument,
            sys::PJRT_Error_Code_DEADLINE_EXCEEDED => ErrorCode::DeadlineExceeded,
            sys::PJRT_Error_Code_NOT_FOUND => ErrorCode::NotFound,
            sys::PJRT_Error_Code_ALREADY_EXISTS => ErrorCode::AlreadyExists,
            sys::PJRT_Error_Code_PERMISSION_DENIED => ErrorCode::PermissionDenied,
            sys::PJRT_Error_Code_RESOURCE_EXHAUSTED => ErrorCode::ResourceExhausted,
            sys::PJRT_Error_Code_FAILED_PRECONDITION => ErrorCode::FailedPrecondition,
            sys::PJRT_Error_Code_ABORTED => ErrorCode::Aborted,
            sys::PJRT_Error_Code_OUT_OF_RANGE => ErrorCode::OutOfRange,
            sys::PJRT_Error_Code_UNIMPLEMENTED => ErrorCode::Unimplemented,
            sys::PJRT_Error_Code_INTERNAL => ErrorCode::Internal,
            sys::PJRT_Error_Code_UNAVAILABLE => ErrorCode::Unavailable,
            sys::PJRT_Error_Code_DATA_LOSS => ErrorCode::DataLoss,
            sys::PJRT_Error_Code_UNAUTHENTICATED => ErrorCode::Unauthenticated,
            other => ErrorCode::Other(other),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::OutOfRange => "OUT_OF_RANGE",
            ErrorCode::Unimplemented => "UNIMPLEMENTED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::DataLoss => "DATA_LOSS",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Other(c) => return write!(f, "code {c}"),
        };
        f.write_str(s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plugin could not be found (discovery) or does not exist at the given path.
    #[error("PJRT plugin not found: {0}")]
    PluginNotFound(String),

    /// dlopen failed, or the library is not a PJRT plugin.
    #[error("cannot load PJRT plugin {path}: {reason}")]
    Load { path: PathBuf, reason: String },

    /// The plugin's major API version differs from the header's.
    #[error(
        "PJRT plugin {path} has API version {major}.{minor}, but this build speaks {expected_major}.x \
         (header {expected_major}.{expected_minor})"
    )]
    Version { path: PathBuf, major: i32, minor: i32, expected_major: i32, expected_minor: i32 },

    /// The plugin's function table does not contain this function (older plugin), or it is null.
    #[error("PJRT plugin does not implement {0}")]
    Unimplemented(&'static str),

    /// A PJRT call returned an error; `message` is the plugin's own.
    #[error("{function} failed: {code}: {message}")]
    Pjrt { function: &'static str, code: ErrorCode, message: String },

    /// Rejected before calling into the plugin.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The plugin returned an element type this crate has no `DType` for.
    #[error("unsupported PJRT element type {0}")]
    UnsupportedType(u32),

    /// Fetching the CPU plugin with pip, or other file system work, failed.
    #[error("{context}: {source}")]
    Io { context: String, #[source] source: std::io::Error },

    /// A protobuf returned by the plugin could not be decoded.
    #[error("cannot decode {what}: {message}")]
    Decode { what: &'static str, message: String },
}

impl Error {
    /// The PJRT status code, for errors returned by the plugin.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Pjrt { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidArgument(msg.into())
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
