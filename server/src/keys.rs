//! Managed keys: the gateway client keys an operator hands out and the tokens that open
//! Tokenboard's own API (a key with a scope). They live in a small append-only metadata log,
//! `keys.log`, that retention never touches. Only SHA-256 hashes of keys are stored.
//!
//! Each line is `<crc32 as 8 hex digits> <json record>`. A torn last line (a crash mid-write) is
//! cut at open; a damaged line elsewhere is skipped and reported.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::secrets::{self, Fingerprinter};

/// What a key may do on Tokenboard's own API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A gateway client key: usage is attributed to it, but it opens no Tokenboard route.
    #[default]
    Gateway,
    /// Read the console API.
    Read,
    /// Send events.
    Ingest,
    /// Everything.
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "gateway" => Some(Scope::Gateway),
            "read" => Some(Scope::Read),
            "ingest" => Some(Scope::Ingest),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn allows(self, need: Need) -> bool {
        match (self, need) {
            (Scope::Admin, _) => true,
            (Scope::Read, Need::Read) => true,
            (Scope::Ingest, Need::Ingest) => true,
            (_, Need::Any) => self != Scope::Gateway,
            _ => false,
        }
    }
}

/// What a route requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Read,
    Ingest,
    Admin,
    /// Any Tokenboard token.
    Any,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub scope: Scope,
    pub enabled: bool,
    pub created_at_ms: i64,
    /// SHA-256 of the key, hex.
    pub hash: String,
    /// `tb_0123…4567`.
    pub masked: String,
    /// The key's identifier in the event log (see [`Fingerprinter::client_key_id`]).
    pub client_key_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Create(KeyRecord),
    Update { id: u64, name: Option<String>, description: Option<String>, enabled: Option<bool> },
    Delete { id: u64 },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("no key with id {0}")]
    NotFound(u64),
    #[error("the limit of {0} keys (console.max_keys) is reached; delete a key first")]
    Limit(usize),
    #[error("cannot write the key log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

struct Inner {
    keys: Vec<KeyRecord>,
    by_hash: HashMap<String, usize>,
    by_client_id: HashMap<String, usize>,
    /// Last authenticated API use since start, by key id.
    used: HashMap<u64, AtomicI64>,
    next_id: u64,
    file: File,
}

#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<RwLock<Inner>>,
    path: PathBuf,
    fp: Arc<Fingerprinter>,
}

pub const NAME_CHARS_MAX: usize = 100;
pub const DESCRIPTION_CHARS_MAX: usize = 500;

impl KeyStore {
    /// Opens `dir/keys.log`, creating it if needed. Returns the store and the problems found.
    pub fn open(dir: &Path, fp: Arc<Fingerprinter>) -> std::io::Result<(KeyStore, Vec<String>)> {
        let path = dir.join("keys.log");
        let text = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut problems = Vec::new();
        let mut keys: Vec<KeyRecord> = Vec::new();
        let mut good_len = 0usize;
        let mut pos = 0usize;
        let mut line_no = 0;
        let mut max_id = 0;
        while pos < text.len() {
            line_no += 1;
            let end = text[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i);
            let Some(end) = end else {
                problems.push(format!("keys.log: torn last line {line_no} removed"));
                break;
            };
            match parse_line(&text[pos..end]) {
                Some(rec) => {
                    if let Record::Create(k) = &rec {
                        max_id = max_id.max(k.id);
                    }
                    apply(&mut keys, rec)
                }
                None => problems.push(format!("keys.log: line {line_no} is damaged and was skipped")),
            }
            pos = end + 1;
            good_len = pos;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if good_len < text.len() {
            file.set_len(good_len as u64)?;
            file.sync_all()?;
        }
        let next_id = max_id + 1;
        let mut inner = Inner { keys, by_hash: HashMap::new(), by_client_id: HashMap::new(), used: HashMap::new(), next_id, file };
        reindex(&mut inner);
        Ok((KeyStore { inner: Arc::new(RwLock::new(inner)), path, fp }, problems))
    }

    fn write(&self, inner: &mut Inner, rec: &Record) -> Result<(), KeyError> {
        let json = serde_json::to_string(rec).expect("records serialise");
        let line = format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()));
        let io = |source| KeyError::Io { path: self.path.clone(), source };
        inner.file.write_all(line.as_bytes()).map_err(io)?;
        inner.file.sync_data().map_err(io)?;
        Ok(())
    }

    /// Creates a key and returns it with its secret, which is never available again.
    /// `secret` is for the bootstrap admin token taken from the environment.
    pub fn create(
        &self,
        name: &str,
        description: &str,
        scope: Scope,
        max_keys: usize,
        now_ms: i64,
        secret: Option<String>,
    ) -> Result<(KeyRecord, String), KeyError> {
        check_text("name", name, 1, NAME_CHARS_MAX)?;
        check_text("description", description, 0, DESCRIPTION_CHARS_MAX)?;
        let secret = secret.unwrap_or_else(secrets::generate_key);
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.keys.len() >= max_keys {
            return Err(KeyError::Limit(max_keys));
        }
        let rec = KeyRecord {
            id: inner.next_id,
            name: name.trim().to_string(),
            description: description.trim().to_string(),
            scope,
            enabled: true,
            created_at_ms: now_ms,
            hash: secrets::hash_key(&secret),
            masked: secrets::mask(&secret),
            client_key_id: self.fp.client_key_id(&secret),
        };
        if inner.by_hash.contains_key(&rec.hash) {
            return Err(KeyError::Invalid { field: "key", message: "already exists".into() });
        }
        self.write(&mut inner, &Record::Create(rec.clone()))?;
        inner.next_id += 1;
        inner.keys.push(rec.clone());
        reindex(&mut inner);
        Ok((rec, secret))
    }

    pub fn update(&self, id: u64, patch: KeyPatch) -> Result<KeyRecord, KeyError> {
        if let Some(n) = &patch.name {
            check_text("name", n, 1, NAME_CHARS_MAX)?;
        }
        if let Some(d) = &patch.description {
            check_text("description", d, 0, DESCRIPTION_CHARS_MAX)?;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !inner.keys.iter().any(|k| k.id == id) {
            return Err(KeyError::NotFound(id));
        }
        let rec = Record::Update {
            id,
            name: patch.name.map(|s| s.trim().to_string()),
            description: patch.description.map(|s| s.trim().to_string()),
            enabled: patch.enabled,
        };
        self.write(&mut inner, &rec)?;
        apply(&mut inner.keys, rec);
        reindex(&mut inner);
        Ok(inner.keys.iter().find(|k| k.id == id).cloned().expect("present"))
    }

    pub fn delete(&self, id: u64) -> Result<(), KeyError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !inner.keys.iter().any(|k| k.id == id) {
            return Err(KeyError::NotFound(id));
        }
        self.write(&mut inner, &Record::Delete { id })?;
        apply(&mut inner.keys, Record::Delete { id });
        reindex(&mut inner);
        Ok(())
    }

    pub fn list(&self) -> Vec<(KeyRecord, Option<i64>)> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .keys
            .iter()
            .map(|k| (k.clone(), inner.used.get(&k.id).map(|u| u.load(Ordering::Relaxed)).filter(|&t| t > 0)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any key can administer Tokenboard.
    pub fn has_admin(&self) -> bool {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).keys.iter().any(|k| k.scope == Scope::Admin)
    }

    /// The enabled key a bearer token names, if any; notes its use. Takes only the read lock.
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Option<KeyRecord> {
        let hash = secrets::hash_key(token);
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let i = *inner.by_hash.get(&hash)?;
        let k = &inner.keys[i];
        if !(secrets::hashes_equal(&k.hash, &hash) && k.enabled) {
            return None;
        }
        if let Some(u) = inner.used.get(&k.id) {
            u.fetch_max(now_ms, Ordering::Relaxed);
        }
        Some(k.clone())
    }

    /// The managed key behind a client key id of the log.
    pub fn by_client_key_id(&self, client_key_id: &str) -> Option<KeyRecord> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_client_id.get(client_key_id).map(|&i| inner.keys[i].clone())
    }
}

fn check_text(field: &'static str, v: &str, min: usize, max: usize) -> Result<(), KeyError> {
    let n = v.trim().chars().count();
    if n < min {
        return Err(KeyError::Invalid { field, message: "must not be empty".into() });
    }
    if n > max {
        return Err(KeyError::Invalid { field, message: format!("is {n} characters, at most {max} allowed") });
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(KeyError::Invalid { field, message: "must not contain control characters".into() });
    }
    Ok(())
}

fn parse_line(line: &[u8]) -> Option<Record> {
    let line = std::str::from_utf8(line).ok()?;
    let (crc, json) = line.split_once(' ')?;
    let crc = u32::from_str_radix(crc, 16).ok()?;
    (crc32fast::hash(json.as_bytes()) == crc).then_some(())?;
    serde_json::from_str(json).ok()
}

fn apply(keys: &mut Vec<KeyRecord>, rec: Record) {
    match rec {
        Record::Create(k) => {
            keys.retain(|x| x.id != k.id);
            keys.push(k);
        }
        Record::Update { id, name, description, enabled } => {
            if let Some(k) = keys.iter_mut().find(|k| k.id == id) {
                if let Some(n) = name {
                    k.name = n;
                }
                if let Some(d) = description {
                    k.description = d;
                }
                if let Some(e) = enabled {
                    k.enabled = e;
                }
            }
        }
        Record::Delete { id } => keys.retain(|k| k.id != id),
    }
}

fn reindex(inner: &mut Inner) {
    for k in &inner.keys {
        inner.used.entry(k.id).or_insert_with(|| AtomicI64::new(0));
    }
    let live: std::collections::HashSet<u64> = inner.keys.iter().map(|k| k.id).collect();
    inner.used.retain(|id, _| live.contains(id));
    inner.by_hash = inner.keys.iter().enumerate().map(|(i, k)| (k.hash.clone(), i)).collect();
    inner.by_client_id = inner.keys.iter().enumerate().map(|(i, k)| (k.client_key_id.clone(), i)).collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let fp = Arc::new(Fingerprinter::fixed([1; 32]));
        let (store, problems) = KeyStore::open(dir.path(), fp.clone()).unwrap();
        assert!(problems.is_empty());
        let (a, secret_a) = store.create("alpha", "first", Scope::Read, 3, 1, None).unwrap();
        let (b, _) = store.create("beta", "", Scope::Gateway, 3, 2, None).unwrap();
        store.update(b.id, KeyPatch { name: Some("beta2".into()), enabled: Some(false), ..KeyPatch::default() }).unwrap();
        let (c, _) = store.create("gamma", "", Scope::Admin, 3, 3, None).unwrap();
        assert!(matches!(store.create("delta", "", Scope::Read, 3, 4, None), Err(KeyError::Limit(3))));
        store.delete(c.id).unwrap();
        store.create("x", "", Scope::Read, 3, 4, Some("y".repeat(3))).unwrap();
        let (x2, _) = store.create("x2", "", Scope::Read, 9, 4, None).unwrap();
        store.delete(x2.id).unwrap();
        assert!(matches!(store.create("", "", Scope::Read, 9, 4, None), Err(KeyError::Invalid { field: "name", .. })));
        assert_eq!(store.authenticate(&secret_a, 10).map(|k| k.id), Some(a.id));
        assert!(store.authenticate("tb_wrong", 10).is_none());
        drop(store);

        // A torn last line.
        let path = dir.path().join("keys.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"0000abcd {\"op\":\"del").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&secret_a), "the key log holds no secret");
        let (store, problems) = KeyStore::open(dir.path(), fp).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        let names: Vec<_> = store.list().into_iter().map(|(k, _)| (k.name, k.enabled)).collect();
        assert_eq!(names, [("alpha".to_string(), true), ("beta2".to_string(), false), ("x".to_string(), true)]);
        assert_eq!(store.authenticate(&secret_a, 10).map(|k| k.scope), Some(Scope::Read));
        let (d, _) = store.create("after", "", Scope::Read, 9, 5, None).unwrap();
        assert!(d.id > x2.id, "ids are never reused");
    }
}
