//! Long-term daily rollups: what retention folds in before it deletes a segment, so monthly
//! totals survive the raw log. Kept in `rollups.bin`, replaced atomically (write to a temporary
//! file, fsync, rename, fsync the directory).
//!
//! Invariants:
//! - `folded_through_seq` is the last sequence number whose event is counted here. The file is
//!   written before the segment is deleted, so after a crash a segment whose events are all at or
//!   below it is deleted at open instead of being counted twice.
//! - Days are UTC days; rollups answer at UTC-day granularity only.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Dim, StoredEvent, Sym};
use crate::interner::Interner;
use crate::views::Agg;

pub const ROLLUP_FILE: &str = "rollups.bin";
const ROLLUP_MAGIC: [u8; 8] = *b"TKBDRLP\x1a";
const ROLLUP_VERSION: u16 = 1;
pub(crate) const MS_PER_DAY: i64 = 86_400_000;

/// The most names of one group (models, keys, providers, credentials) a UTC day keeps in the
/// rollups; retention drops the smallest beyond it, and their calls count as the day's rest.
/// Bounds the rollups, and the file each retention pass rewrites, by days rather than by keys:
/// 10 000 keys active a day would otherwise add 10 000 cells (about 2.4 MB of heap) a day.
pub const NAMES_PER_DAY_MAX: usize = 1000;

/// What a rollup row is grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RollupGroup {
    All,
    Model,
    Key,
    Provider,
    Credential,
    StatusClass,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupAgg {
    pub calls: u64,
    pub errors: u64,
    pub tokens: [u64; 6],
    pub latency_sum_ms: u64,
}

impl RollupAgg {
    /// The part of a view's aggregate that rollups keep.
    pub fn of_agg(a: &Agg) -> RollupAgg {
        RollupAgg { calls: a.calls, errors: a.errors, tokens: a.tokens, latency_sum_ms: a.latency_sum_ms }
    }

    pub fn merge(&mut self, o: &RollupAgg) {
        self.calls = self.calls.saturating_add(o.calls);
        self.errors = self.errors.saturating_add(o.errors);
        for (t, v) in self.tokens.iter_mut().zip(o.tokens) {
            *t = t.saturating_add(v);
        }
        self.latency_sum_ms = self.latency_sum_ms.saturating_add(o.latency_sum_ms);
    }

    pub fn total_tokens(&self) -> u64 {
        self.tokens.iter().fold(0u64, |a, &t| a.saturating_add(t))
    }

    /// What `self` holds beyond `part` (which it contains).
    pub fn minus(&self, part: &RollupAgg) -> RollupAgg {
        let mut d = self.clone();
        d.calls = d.calls.saturating_sub(part.calls);
        d.errors = d.errors.saturating_sub(part.errors);
        for (t, v) in d.tokens.iter_mut().zip(part.tokens) {
            *t = t.saturating_sub(v);
        }
        d.latency_sum_ms = d.latency_sum_ms.saturating_sub(part.latency_sum_ms);
        d
    }

    fn add(&mut self, ev: &StoredEvent) {
        self.calls += 1;
        self.errors += u64::from(!ev.success);
        for (t, v) in self.tokens.iter_mut().zip(ev.tokens.to_array()) {
            *t += v;
        }
        self.latency_sum_ms += ev.latency_ms as u64;
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollups {
    pub folded_through_seq: u64,
    /// (UTC day number since the epoch, group, name) → aggregate.
    pub days: BTreeMap<(i64, RollupGroup, String), RollupAgg>,
}

impl Rollups {
    pub fn fold(&mut self, ev: &StoredEvent, interner: &Interner) {
        let day = ev.ts_ms.div_euclid(MS_PER_DAY);
        let mut add = |group: RollupGroup, name: String| {
            self.days.entry((day, group, name)).or_default().add(ev);
        };
        add(RollupGroup::All, String::new());
        add(RollupGroup::Model, interner.resolve(ev.dim(Dim::Model)).to_string());
        add(RollupGroup::Key, interner.resolve(ev.dim(Dim::Key)).to_string());
        add(RollupGroup::Provider, interner.resolve(ev.dim(Dim::Provider)).to_string());
        add(RollupGroup::Credential, interner.resolve(ev.dim(Dim::Credential)).to_string());
        add(RollupGroup::StatusClass, ev.status_class().to_string());
        self.folded_through_seq = self.folded_through_seq.max(ev.seq);
    }

    /// Folds in what a builder gathered, then keeps at most [`NAMES_PER_DAY_MAX`] names of a
    /// group on each day it touched.
    pub fn absorb<'a>(&mut self, builder: RollupBuilder, name: impl Fn(Sym) -> &'a str) {
        let mut touched = std::collections::BTreeSet::new();
        for ((day, group, key), agg) in builder.cells {
            let name = match group {
                RollupGroup::All => String::new(),
                RollupGroup::StatusClass => key.to_string(),
                _ => {
                    touched.insert((day, group));
                    name(Sym(key)).to_string()
                }
            };
            self.days.entry((day, group, name)).or_default().merge(&agg);
        }
        for (day, group) in touched {
            self.keep_largest(day, group);
        }
        self.folded_through_seq = self.folded_through_seq.max(builder.last_seq);
    }

    /// Drops the smallest names (by tokens, then calls) of `group` on `day` beyond
    /// [`NAMES_PER_DAY_MAX`]. What they held stays in the day's `All` cell: the rest of a group
    /// is that cell minus the group's cells.
    fn keep_largest(&mut self, day: i64, group: RollupGroup) {
        let mut cells: Vec<(u64, u64, &String)> = self
            .days
            .range((day, group, String::new())..)
            .take_while(|((d, g, _), _)| *d == day && *g == group)
            .map(|((_, _, name), a)| (a.total_tokens(), a.calls, name))
            .collect();
        if cells.len() <= NAMES_PER_DAY_MAX {
            return;
        }
        cells.sort_unstable();
        let smallest: Vec<String> = cells[..cells.len() - NAMES_PER_DAY_MAX].iter().map(|(_, _, n)| (*n).clone()).collect();
        for name in smallest {
            self.days.remove(&(day, group, name));
        }
    }

    /// An estimate of the heap the cells take: each entry twice (the B-tree's nodes end up about
    /// half full, as cells come in day order and a full node splits in the middle), and each
    /// name's string.
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<((i64, RollupGroup, String), RollupAgg)>();
        self.days.len() * entry * 2 + self.days.keys().map(|(_, _, name)| name.capacity()).sum::<usize>()
    }

    pub fn load(dir: &Path) -> Result<Rollups> {
        let path = dir.join(ROLLUP_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Rollups::default()),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let bad = |reason: &str| Error::BadRollups { path: path.clone(), reason: reason.to_string() };
        if bytes.len() < 22 || bytes[..8] != ROLLUP_MAGIC {
            return Err(bad("bad magic"));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != ROLLUP_VERSION {
            return Err(bad(&format!("unsupported version {version}")));
        }
        let crc = u32::from_le_bytes(bytes[10..14].try_into().unwrap());
        let len = u64::from_le_bytes(bytes[14..22].try_into().unwrap()) as usize;
        let body = &bytes[22..];
        if body.len() != len || crc32fast::hash(body) != crc {
            return Err(bad("checksum mismatch"));
        }
        let (rollups, _) = bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| bad(&e.to_string()))?;
        Ok(rollups)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(ROLLUP_FILE);
        let tmp = dir.join("rollups.tmp");
        let body = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("encoding to a vec cannot fail");
        let mut out = Vec::with_capacity(body.len() + 22);
        out.extend_from_slice(&ROLLUP_MAGIC);
        out.extend_from_slice(&ROLLUP_VERSION.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(&out).map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
        sync_dir(dir)
    }

    /// The cells of `group` with a UTC day in `[from_day, to_day)`, by day then name: a range
    /// of the map per day, so other groups' cells (the keys' outnumber the rest) are not read.
    pub fn cells(&self, from_day: i64, to_day: i64, group: RollupGroup) -> impl Iterator<Item = (i64, &str, &RollupAgg)> {
        let first = self.days.first_key_value().map_or(to_day, |((d, _, _), _)| *d).max(from_day);
        let end = self.days.last_key_value().map_or(from_day, |((d, _, _), _)| d + 1).min(to_day);
        (first..end).flat_map(move |day| {
            self.days
                .range((day, group, String::new())..)
                .take_while(move |((d, g, _), _)| *d == day && *g == group)
                .map(|((d, _, name), agg)| (*d, name.as_str(), agg))
        })
    }
}

/// What the log (its views) and the rollups (the segments retention deleted) hold over a range
/// of UTC days. A segment's events are counted in one or the other, never both, so the two add.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Per UTC day or month, in time order, covering the range.
    pub buckets: Vec<HistoryBucket>,
    /// Per name of the group asked for, over the whole range, most tokens first; empty for
    /// [`RollupGroup::All`]. Status classes are named by their digit (`"5"`, `"0"` for none).
    pub breakdown: Vec<HistoryRow>,
    /// What the rollups hold of names a day did not keep (see [`NAMES_PER_DAY_MAX`]).
    pub rest: RollupAgg,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryBucket {
    /// UTC start, inclusive, and end, exclusive.
    pub start_ms: i64,
    pub end_ms: i64,
    pub log: RollupAgg,
    pub rollups: RollupAgg,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryRow {
    pub name: String,
    pub log: RollupAgg,
    pub rollups: RollupAgg,
}

impl HistoryRow {
    pub fn total(&self) -> RollupAgg {
        let mut t = self.log.clone();
        t.merge(&self.rollups);
        t
    }

    pub fn total_tokens(&self) -> u64 {
        self.log.total_tokens().saturating_add(self.rollups.total_tokens())
    }
}

/// Gathers the rollup of many events by symbol, without a string per event; `Rollups::absorb`
/// names the cells once at the end.
#[derive(Default)]
pub struct RollupBuilder {
    cells: rustc_hash::FxHashMap<(i64, RollupGroup, u32), RollupAgg>,
    last_seq: u64,
}

impl RollupBuilder {
    pub fn add(&mut self, ev: &StoredEvent) {
        let day = ev.ts_ms.div_euclid(MS_PER_DAY);
        let groups = [
            (RollupGroup::All, 0),
            (RollupGroup::Model, ev.dim(Dim::Model).0),
            (RollupGroup::Key, ev.dim(Dim::Key).0),
            (RollupGroup::Provider, ev.dim(Dim::Provider).0),
            (RollupGroup::Credential, ev.dim(Dim::Credential).0),
            (RollupGroup::StatusClass, ev.status_class() as u32),
        ];
        for (group, key) in groups {
            self.cells.entry((day, group, key)).or_default().add(ev);
        }
        self.last_seq = self.last_seq.max(ev.seq);
    }

    /// The interned strings the gathered cells are named by, each once.
    pub fn symbols(&self) -> impl Iterator<Item = Sym> {
        let named = self.cells.keys().filter(|(_, g, _)| !matches!(g, RollupGroup::All | RollupGroup::StatusClass));
        named.map(|&(_, _, key)| key).collect::<rustc_hash::FxHashSet<u32>>().into_iter().map(Sym)
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Quality, Tokens};

    fn event(seq: u64, day: i64, key: u32, output: u64) -> StoredEvent {
        let mut dims = [Sym(0); Dim::COUNT];
        dims[Dim::Key as usize] = Sym(key);
        StoredEvent {
            seq,
            ts_ms: day * MS_PER_DAY + 1000,
            dims,
            status: 200,
            success: true,
            stream: false,
            quality: Quality::default(),
            ts_clamped: false,
            tokens: Tokens { output, ..Tokens::default() },
            latency_ms: 10,
            ttft_ms: None,
            event_id: None,
            request_id: None,
            error_message: None,
        }
    }

    /// A day keeps its largest names up to the limit; the day's total still counts every call,
    /// so the rest is the total minus the names kept. A later pass over the same day caps again.
    #[test]
    fn a_day_keeps_its_largest_names_and_its_whole_total() {
        let names: Vec<String> = (0..3000).map(|k| format!("key-{k:05}")).collect();
        let name = |s: Sym| names[s.0 as usize].as_str();
        let mut rollups = Rollups::default();
        let extra = 300;
        for pass in 0..2u64 {
            let mut b = RollupBuilder::default();
            let keys = if pass == 0 { 0..(NAMES_PER_DAY_MAX as u32 + extra) } else { 2000..2100 };
            for k in keys.clone() {
                b.add(&event(pass * 10_000 + u64::from(k), 20_000, k, 1 + u64::from(k)));
            }
            b.add(&event(99_999, 20_001, 7, 5)); // another day, untouched by the cap
            rollups.absorb(b, name);
        }
        let kept: Vec<(i64, &str, &RollupAgg)> = rollups.cells(20_000, 20_001, RollupGroup::Key).collect();
        assert_eq!(kept.len(), NAMES_PER_DAY_MAX);
        // The largest stayed: the second pass's keys (2000..2100) and the first pass's biggest.
        let smallest_kept = kept.iter().map(|(_, n, _)| *n).min().unwrap();
        assert_eq!(smallest_kept, format!("key-{:05}", extra as usize + 100));
        let total: Vec<_> = rollups.cells(20_000, 20_001, RollupGroup::All).collect();
        assert_eq!(total.len(), 1);
        assert_eq!(total[0].2.calls, u64::from(NAMES_PER_DAY_MAX as u32 + extra) + 100);
        let mut named = RollupAgg::default();
        kept.iter().for_each(|(_, _, a)| named.merge(a));
        let rest = total[0].2.minus(&named);
        assert_eq!(rest.calls, u64::from(extra) + 100);
        assert_eq!(rest.total_tokens(), (1..=u64::from(extra) + 100).sum::<u64>());
        assert_eq!(rollups.cells(20_001, 20_002, RollupGroup::Key).count(), 1);
    }
}
