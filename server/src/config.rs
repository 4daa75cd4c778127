//! The configuration: a YAML file (optional), then environment variables, then defaults.
//!
//! The original design's keys (`console.*` and `CONSOLE_*`) work unchanged; everything else has a
//! `TOKENBOARD_*` variable (see [`ENV_KEYS`]). Every key is documented in
//! `docs/config.example.yaml`. Unknown keys and bad values fail at start with the key named.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized};
use serde::{Deserialize, Serialize};
use tokenboard_engine::{Durability, EngineOptions, Retention};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub console: Console,
    pub server: Server,
    pub storage: Storage,
    pub ingest: Ingest,
    pub sources: Sources,
}

/// The original design's section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Console {
    /// Serve the web console (the API is always served).
    pub enabled: bool,
    pub port: u16,
    /// Where the console page lives.
    pub path: String,
    /// Retention by event count; 0 = unlimited.
    pub max_logs: u64,
    /// How many managed keys may exist.
    pub max_keys: usize,
    /// Retention by age, in days; 0 = keep forever.
    pub log_retention_days: u32,
    /// Hours between retention passes.
    pub cleanup_interval: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address to bind; the port is `console.port`.
    pub bind: String,
    /// IANA zone for reads that name none.
    pub timezone: String,
    /// Seconds to wait for requests in flight at shutdown.
    pub shutdown_timeout_secs: u64,
    /// Serve `/metrics` without a token (for scrapers on a private network).
    pub metrics_public: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub data_dir: PathBuf,
    /// `always`, `interval` or `never`.
    pub durability: String,
    /// For `interval`: milliseconds between fsyncs.
    pub sync_interval_ms: u64,
    pub segment_max_mb: u64,
    pub segment_max_age_hours: u32,
    /// Retention by total size of the segments, in MiB; 0 = unlimited.
    pub max_total_mb: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ingest {
    /// Largest request body, as sent (compressed or not).
    pub max_body_bytes: usize,
    /// Largest body after gzip decompression.
    pub max_decoded_bytes: usize,
    /// Ingest requests handled at once; more get 503 with Retry-After.
    pub max_inflight: usize,
    /// Events in one request.
    pub max_events_per_request: usize,
}

/// Collectors that pull events from gateways.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sources {
    /// CLIProxyAPI proxies (see `docs/integrations/cliproxyapi.md`).
    pub cliproxyapi: Vec<crate::collector::SourceConfig>,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            enabled: true,
            port: 8317,
            path: "/console".into(),
            max_logs: 0,
            max_keys: 1000,
            log_retention_days: 30,
            cleanup_interval: 1,
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Server { bind: "0.0.0.0".into(), timezone: "UTC".into(), shutdown_timeout_secs: 10, metrics_public: false }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            data_dir: PathBuf::from("./data"),
            durability: "interval".into(),
            sync_interval_ms: 200,
            segment_max_mb: 64,
            segment_max_age_hours: 24,
            max_total_mb: 0,
        }
    }
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest { max_body_bytes: 8 << 20, max_decoded_bytes: 64 << 20, max_inflight: 128, max_events_per_request: 100_000 }
    }
}

/// Environment variables and the keys they set.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("CONSOLE_PORT", "console.port"),
    ("CONSOLE_PATH", "console.path"),
    ("CONSOLE_MAX_LOGS", "console.max_logs"),
    ("CONSOLE_MAX_KEYS", "console.max_keys"),
    ("TOKENBOARD_CONSOLE_ENABLED", "console.enabled"),
    ("TOKENBOARD_PORT", "console.port"),
    ("TOKENBOARD_LOG_RETENTION_DAYS", "console.log_retention_days"),
    ("TOKENBOARD_CLEANUP_INTERVAL", "console.cleanup_interval"),
    ("TOKENBOARD_BIND", "server.bind"),
    ("TOKENBOARD_TIMEZONE", "server.timezone"),
    ("TOKENBOARD_SHUTDOWN_TIMEOUT_SECS", "server.shutdown_timeout_secs"),
    ("TOKENBOARD_METRICS_PUBLIC", "server.metrics_public"),
    ("TOKENBOARD_DATA_DIR", "storage.data_dir"),
    ("TOKENBOARD_DURABILITY", "storage.durability"),
    ("TOKENBOARD_SYNC_INTERVAL_MS", "storage.sync_interval_ms"),
    ("TOKENBOARD_SEGMENT_MAX_MB", "storage.segment_max_mb"),
    ("TOKENBOARD_SEGMENT_MAX_AGE_HOURS", "storage.segment_max_age_hours"),
    ("TOKENBOARD_MAX_TOTAL_MB", "storage.max_total_mb"),
    ("TOKENBOARD_MAX_BODY_BYTES", "ingest.max_body_bytes"),
    ("TOKENBOARD_MAX_DECODED_BYTES", "ingest.max_decoded_bytes"),
    ("TOKENBOARD_MAX_INFLIGHT", "ingest.max_inflight"),
    ("TOKENBOARD_MAX_EVENTS_PER_REQUEST", "ingest.max_events_per_request"),
];

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!("config file {} does not exist", path.display())));
            }
            fig = fig.merge(serde_saphyr::figment::Yaml::file_exact(path));
        }
        let known: Vec<&str> = ENV_KEYS.iter().map(|(k, _)| *k).collect();
        // `only` keeps just the variables of ENV_KEYS, so every name passed to `map` has a key.
        let env = Env::raw().only(&known).map(|name| {
            ENV_KEYS.iter().find(|(var, _)| name == *var).map_or_else(|| name.into(), |(_, key)| (*key).into())
        });
        fig = fig.merge(env);
        let cfg: Config = fig.extract().map_err(|e| ConfigError(describe(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.console.port == 0 {
            return bad("console.port", "must be between 1 and 65535");
        }
        if !self.console.path.starts_with('/') || self.console.path.len() < 2 || self.console.path.starts_with("/api") {
            return bad("console.path", "must start with '/', name a path, and not lie under /api");
        }
        if self.console.max_keys == 0 || self.console.max_keys > 1_000_000 {
            return bad("console.max_keys", "must be between 1 and 1000000");
        }
        if self.console.cleanup_interval == 0 || self.console.cleanup_interval > 24 * 30 {
            return bad("console.cleanup_interval", "must be between 1 and 720 hours");
        }
        if self.server.bind.parse::<std::net::IpAddr>().is_err() {
            return bad("server.bind", "must be an IP address such as 0.0.0.0 or 127.0.0.1");
        }
        if self.server.timezone.parse::<chrono_tz::Tz>().is_err() {
            return bad("server.timezone", "must be an IANA time zone name such as UTC or Asia/Shanghai");
        }
        if !["always", "interval", "never"].contains(&self.storage.durability.as_str()) {
            return bad("storage.durability", "must be always, interval or never");
        }
        if !(1..=60_000).contains(&self.storage.sync_interval_ms) {
            return bad("storage.sync_interval_ms", "must be between 1 and 60000");
        }
        if !(1..=1024).contains(&self.storage.segment_max_mb) {
            return bad("storage.segment_max_mb", "must be between 1 and 1024");
        }
        if self.storage.segment_max_age_hours == 0 {
            return bad("storage.segment_max_age_hours", "must be at least 1");
        }
        if !(1024..=1 << 30).contains(&self.ingest.max_body_bytes) {
            return bad("ingest.max_body_bytes", "must be between 1 KiB and 1 GiB");
        }
        if self.ingest.max_decoded_bytes < self.ingest.max_body_bytes || self.ingest.max_decoded_bytes > 4 << 30 {
            return bad("ingest.max_decoded_bytes", "must be at least ingest.max_body_bytes and at most 4 GiB");
        }
        if !(1..=100_000).contains(&self.ingest.max_inflight) {
            return bad("ingest.max_inflight", "must be between 1 and 100000");
        }
        if !(1..=100_000).contains(&self.ingest.max_events_per_request) {
            return bad("ingest.max_events_per_request", "must be between 1 and 100000");
        }
        let mut names = std::collections::HashSet::new();
        for (i, src) in self.sources.cliproxyapi.iter().enumerate() {
            let at = format!("sources.cliproxyapi[{i}]");
            src.validate(&at).map_err(ConfigError)?;
            if !names.insert(src.name.as_str()) {
                return Err(ConfigError(format!("{at}.name: {} is used twice", src.name)));
            }
        }
        Ok(())
    }

    pub fn timezone(&self) -> chrono_tz::Tz {
        self.server.timezone.parse().unwrap_or(chrono_tz::UTC)
    }

    pub fn engine_options(&self) -> EngineOptions {
        let mut o = EngineOptions::new(&self.storage.data_dir);
        o.durability = match self.storage.durability.as_str() {
            "always" => Durability::Always,
            "never" => Durability::Never,
            _ => Durability::Interval { every_ms: self.storage.sync_interval_ms },
        };
        o.segment_bytes_max = self.storage.segment_max_mb << 20;
        o.segment_age_max_ms = i64::from(self.storage.segment_max_age_hours) * 3_600_000;
        o.batch_events_max = self.ingest.max_events_per_request;
        o.retention = Retention {
            max_age_ms: (self.console.log_retention_days > 0).then(|| i64::from(self.console.log_retention_days) * 86_400_000),
            max_bytes: (self.storage.max_total_mb > 0).then_some(self.storage.max_total_mb << 20),
            max_events: (self.console.max_logs > 0).then_some(self.console.max_logs),
        };
        o.retention_interval_ms = Some(u64::from(self.console.cleanup_interval) * 3_600_000);
        o
    }
}

/// figment's message, with the key path it names.
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let source = e.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_default();
            let mut msg = e.kind.to_string();
            if !path.is_empty() {
                msg = format!("{path}: {msg}");
            }
            if !source.is_empty() {
                msg = format!("{msg} (from {source})");
            }
            msg
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_yaml(yaml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, yaml).unwrap();
        Config::load(Some(&p))
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.example.yaml");
        assert_eq!(Config::load(Some(&p)).unwrap(), Config::default());
    }

    #[test]
    fn original_keys_load_and_errors_name_the_key() {
        let c = load_yaml("console:\n  enabled: true\n  port: 9000\n  path: /board\n  max_logs: 10\n  max_keys: 5\n  log_retention_days: 7\n  cleanup_interval: 2\n").unwrap();
        assert_eq!((c.console.port, c.console.path.as_str(), c.console.max_keys), (9000, "/board", 5));
        assert_eq!(c.engine_options().retention.max_events, Some(10));
        let e = load_yaml("console:\n  prot: 1\n").unwrap_err().to_string();
        assert!(e.contains("prot"), "{e}");
        let e = load_yaml("console:\n  port: lots\n").unwrap_err().to_string();
        assert!(e.contains("console.port"), "{e}");
        let e = load_yaml("storage:\n  durability: sometimes\n").unwrap_err().to_string();
        assert!(e.contains("storage.durability"), "{e}");
        let e = load_yaml("server:\n  timezone: Mars/Olympus\n").unwrap_err().to_string();
        assert!(e.contains("server.timezone"), "{e}");
        let c = load_yaml("sources:\n  cliproxyapi:\n    - name: cpa1\n      address: 127.0.0.1:8317\n      management_key: k\n").unwrap();
        assert_eq!(c.sources.cliproxyapi[0].mode, "subscribe");
        let e = load_yaml("sources:\n  cliproxyapi:\n    - name: cpa1\n      address: nowhere\n      management_key: k\n").unwrap_err().to_string();
        assert!(e.contains("sources.cliproxyapi[0].address"), "{e}");
        let e = load_yaml("sources:\n  cliproxyapi:\n    - name: cpa1\n      address: h:1\n").unwrap_err().to_string();
        assert!(e.contains("management_key"), "{e}");
        let e = load_yaml("sources:\n  cliproxyapi:\n    - name: c\n      address: h:1\n      management_key: k\n      tls_ca_file: /nonexistent.pem\n").unwrap_err().to_string();
        assert!(e.contains("tls_ca_file"), "{e}");
        let e = load_yaml("sources:\n  cliproxyapi:\n    - name: c\n      address: h:1\n      management_key: k\n      tls: true\n      tls_ca_file: /nonexistent.pem\n").unwrap_err().to_string();
        assert!(e.contains("/nonexistent.pem"), "{e}");
    }
}
