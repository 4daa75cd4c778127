//! Tokenboard's storage engine: a durable, segmented, memory-mapped append-only log of usage
//! events, with in-memory materialised views and per-segment indexes rebuilt from the log at open.
//!
//! The engine knows nothing about HTTP, JSON or async runtimes; the server crate adapts it.
//! Start at [`Engine::open`]; `docs/architecture.md` has the map and `docs/format.md` the bytes.

mod cpu;
#[doc(hidden)]
pub mod counting;
mod engine;
mod error;
pub(crate) mod fold;
pub mod event;
pub mod format;
pub mod index;
pub mod interner;
pub mod rollup;
mod saved;
mod table;
pub mod segment;
pub mod verify;
pub mod views;

pub use engine::{
    AppendOutcome, Clock, Durability, Engine, EngineOptions, EngineStatus, HeapBreakdown, IoFaults, LogPage, RecoveryIssue,
    Slice,
    RecoveryIssueKind, RecoveryReport, Retention, RetentionReport, TopBy, system_clock_ms,
};
pub use error::{Error, Result};
pub use event::{Dim, FieldError, NewEvent, Quality, StoredEvent, Sym, Tokens};
pub use index::{LogFilter, StatusFilter};
pub use interner::Interner;
pub use segment::ScanIssue;
pub use views::{Agg, Granularity, Group, Histogram, Summary, TimeRange, TrendBucket, Views};
pub use verify::{SegmentCheck, VerifyReport, verify};
