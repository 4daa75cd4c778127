//! The engine's errors. Corruption found while opening is not an error: it is reported in the
//! [`crate::RecoveryReport`] and every valid record around it is served.

use std::path::PathBuf;

use crate::event::FieldError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("i/o error during {op} on {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("disk full during {op} on {path}; appends resume when space frees")]
    DiskFull { op: &'static str, path: PathBuf },
    #[error("the writer is fenced after a failed {op} on {path}; reopen the engine to continue")]
    Fenced { op: &'static str, path: PathBuf },
    #[error("the engine is closed")]
    Closed,
    #[error("event {index}: {error}")]
    InvalidEvent { index: usize, error: FieldError },
    #[error("batch of {events} events encodes to {bytes} bytes, more than the {max} a segment takes at once")]
    BatchTooLarge { events: usize, bytes: usize, max: usize },
    #[error("too many distinct strings in dimension fields (limit {max})")]
    InternerFull { max: usize },
    #[error("segment {path}: {reason}")]
    BadSegment { path: PathBuf, reason: String },
    #[error("data directory {path} is in use by another process")]
    Locked { path: PathBuf },
    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
    #[error("rollup file {path}: {reason}")]
    BadRollups { path: PathBuf, reason: String },
    #[error(transparent)]
    View(#[from] crate::views::ViewError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) || source.raw_os_error() == Some(libc::EDQUOT) {
            return Error::DiskFull { op, path };
        }
        Error::Io { op, path, source }
    }
}
