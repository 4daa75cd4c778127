//! The usage event: one API call a gateway served.
//!
//! Two shapes exist. [`NewEvent`] is what callers append: plain strings, validated by
//! [`NewEvent::validate`]. [`StoredEvent`] is what the engine keeps and answers with: the
//! low-cardinality strings replaced by [`Sym`]s of the engine-wide [`crate::Interner`], plus the
//! sequence number the log assigned.
//!
//! Token buckets never overlap: input = `input_uncached + cache_read + cache_write`,
//! output = `output + reasoning`; `unclassified` holds tokens a gateway could not split.

use serde::{Deserialize, Serialize};

/// An interned string: an index into the engine's [`crate::Interner`]. `Sym::EMPTY` is "".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Sym(pub u32);

impl Sym {
    pub const EMPTY: Sym = Sym(0);
}

/// Limits on the size of one event's fields, in bytes. A longer value is rejected.
pub const DIMENSION_BYTES_MAX: usize = 256;
pub const EVENT_ID_BYTES_MAX: usize = 256;
pub const REQUEST_ID_BYTES_MAX: usize = 256;
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// The non-overlapping token buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tokens {
    pub input_uncached: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
    pub unclassified: u64,
}

impl Tokens {
    pub const BUCKETS: usize = 6;

    pub fn to_array(self) -> [u64; Self::BUCKETS] {
        [
            self.input_uncached,
            self.cache_read,
            self.cache_write,
            self.output,
            self.reasoning,
            self.unclassified,
        ]
    }

    pub fn from_array(a: [u64; Self::BUCKETS]) -> Tokens {
        Tokens {
            input_uncached: a[0],
            cache_read: a[1],
            cache_write: a[2],
            output: a[3],
            reasoning: a[4],
            unclassified: a[5],
        }
    }

    pub fn input(&self) -> u64 {
        self.input_uncached + self.cache_read + self.cache_write
    }

    pub fn output_total(&self) -> u64 {
        self.output + self.reasoning
    }

    /// Every token of the call, whatever its bucket.
    pub fn total(&self) -> u64 {
        self.input() + self.output_total() + self.unclassified
    }
}

/// How trustworthy the token split of an event is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Quality {
    /// The gateway reported every bucket and they add up.
    #[default]
    Complete = 0,
    /// The gateway reported buckets that contradict its own totals.
    Inconsistent = 1,
    /// Only a total was known; it sits in `unclassified`.
    Unclassified = 2,
    /// The numbers were estimated, not reported by the upstream.
    Estimated = 3,
}

impl Quality {
    pub const ALL: [Quality; 4] = [
        Quality::Complete,
        Quality::Inconsistent,
        Quality::Unclassified,
        Quality::Estimated,
    ];

    pub fn from_u8(v: u8) -> Option<Quality> {
        Quality::ALL.get(v as usize).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Complete => "complete",
            Quality::Inconsistent => "inconsistent",
            Quality::Unclassified => "unclassified",
            Quality::Estimated => "estimated",
        }
    }
}

/// The interned dimensions of an event, in a fixed order that the views, the indexes and the
/// on-disk shape table share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Dim {
    Method = 0,
    Endpoint = 1,
    Model = 2,
    ModelAlias = 3,
    Provider = 4,
    Credential = 5,
    Key = 6,
    ErrorClass = 7,
    User = 8,
    Instance = 9,
}

impl Dim {
    pub const COUNT: usize = 10;
    pub const ALL: [Dim; Dim::COUNT] = [
        Dim::Method,
        Dim::Endpoint,
        Dim::Model,
        Dim::ModelAlias,
        Dim::Provider,
        Dim::Credential,
        Dim::Key,
        Dim::ErrorClass,
        Dim::User,
        Dim::Instance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dim::Method => "method",
            Dim::Endpoint => "endpoint",
            Dim::Model => "model",
            Dim::ModelAlias => "model_alias",
            Dim::Provider => "provider",
            Dim::Credential => "credential",
            Dim::Key => "key",
            Dim::ErrorClass => "error_class",
            Dim::User => "user",
            Dim::Instance => "instance",
        }
    }
}

/// The status class of an HTTP status: 1–5 for 1xx–5xx, 0 for anything else (no response).
pub fn status_class(status: u16) -> u8 {
    match status {
        100..=599 => (status / 100) as u8,
        _ => 0,
    }
}

/// An event as a caller hands it to [`crate::Engine::append`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewEvent {
    /// Client-supplied idempotency key; an id seen within the dedup window is not stored again.
    pub event_id: Option<String>,
    /// UTC milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Indexed by [`Dim`].
    pub dims: [String; Dim::COUNT],
    pub status: u16,
    pub success: bool,
    pub tokens: Tokens,
    pub quality: Quality,
    pub latency_ms: u32,
    pub ttft_ms: Option<u32>,
    pub stream: bool,
    pub request_id: Option<String>,
    pub error_message: Option<String>,
}

/// A field that failed validation, named as in the event contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl NewEvent {
    pub fn dim(&self, dim: Dim) -> &str {
        &self.dims[dim as usize]
    }

    pub fn set_dim(&mut self, dim: Dim, value: impl Into<String>) {
        self.dims[dim as usize] = value.into();
    }

    /// Checks every bound the log relies on.
    pub fn validate(&self) -> Result<(), FieldError> {
        fn too_long(field: &'static str, len: usize, max: usize) -> FieldError {
            FieldError { field, message: format!("is {len} bytes, at most {max} allowed") }
        }
        if self.ts_ms < 0 {
            return Err(FieldError { field: "ts", message: "is before 1970-01-01".into() });
        }
        for dim in Dim::ALL {
            let len = self.dim(dim).len();
            if len > DIMENSION_BYTES_MAX {
                return Err(too_long(dim.name(), len, DIMENSION_BYTES_MAX));
            }
        }
        let optional = [
            ("event_id", &self.event_id, EVENT_ID_BYTES_MAX),
            ("request_id", &self.request_id, REQUEST_ID_BYTES_MAX),
            ("error_message", &self.error_message, ERROR_MESSAGE_BYTES_MAX),
        ];
        for (field, value, max) in optional {
            if let Some(v) = value
                && v.len() > max {
                    return Err(too_long(field, v.len(), max));
                }
        }
        if self.event_id.as_deref() == Some("") {
            return Err(FieldError { field: "event_id", message: "is empty".into() });
        }
        Ok(())
    }
}

/// An event as the engine keeps it: interned, with its sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The log sequence number; unique, increasing in append order.
    pub seq: u64,
    pub ts_ms: i64,
    pub dims: [Sym; Dim::COUNT],
    pub status: u16,
    pub success: bool,
    pub stream: bool,
    pub quality: Quality,
    /// The timestamp was further in the future than the engine allows and was clamped.
    pub ts_clamped: bool,
    pub tokens: Tokens,
    pub latency_ms: u32,
    pub ttft_ms: Option<u32>,
    pub event_id: Option<Box<str>>,
    pub request_id: Option<Box<str>>,
    pub error_message: Option<Box<str>>,
}

impl StoredEvent {
    pub fn dim(&self, dim: Dim) -> Sym {
        self.dims[dim as usize]
    }

    pub fn status_class(&self) -> u8 {
        status_class(self.status)
    }
}
