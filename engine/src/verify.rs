//! A read-only check of a data directory, for `tokenboard verify`: every segment is scanned the
//! way recovery scans it, but nothing is cut, moved or rewritten.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::interner::Interner;
use crate::segment::{self, ScanBounds, ScanIssue, Segment};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentCheck {
    pub path: PathBuf,
    pub base_seq: u64,
    pub events: u64,
    pub bytes: u64,
    /// The header is unreadable; nothing else was checked.
    pub bad_header: Option<String>,
    pub issues: Vec<ScanIssue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: Vec<SegmentCheck>,
    /// Missing sequence ranges between segments.
    pub gaps: Vec<(u64, u64)>,
}

impl VerifyReport {
    /// Corruption, bad headers or gaps: anything but a torn tail of the newest segment.
    pub fn damaged(&self) -> bool {
        !self.gaps.is_empty()
            || self.segments.iter().any(|s| {
                s.bad_header.is_some() || s.issues.iter().any(|i| !matches!(i, ScanIssue::TornTail { .. }))
            })
    }

    pub fn events(&self) -> u64 {
        self.segments.iter().map(|s| s.events).sum()
    }
}

/// Scans every segment of `dir` without changing anything; `progress` gets each segment's path
/// before it is read.
pub fn verify(dir: &Path, progress: &mut dyn FnMut(usize, usize, &Path)) -> Result<VerifyReport> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        if let Some(base) = segment::parse_segment_file_name(&entry.file_name().to_string_lossy()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut report = VerifyReport::default();
    let mut interner = Interner::new();
    let mut last_seq: Option<u64> = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(segment::segment_file_name(base));
        progress(i, bases.len(), &path);
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
        let mut check = SegmentCheck { path: path.clone(), base_seq: base, events: 0, bytes: len, bad_header: None, issues: Vec::new() };
        let header = match segment::read_header(&file, base) {
            Ok(h) => h,
            Err(reason) => {
                check.bad_header = Some(reason);
                report.segments.push(check);
                continue;
            }
        };
        if let Some(last) = last_seq
            && base > last + 1
        {
            report.gaps.push((last + 1, base - 1));
        }
        let mut seg = Segment::new_mapped(path.clone(), header, &file)?;
        let bounds = ScanBounds {
            seq_floor: last_seq.unwrap_or(base.saturating_sub(1)),
            seq_ceiling: bases.get(i + 1).copied().unwrap_or(u64::MAX),
            newest: i + 1 == bases.len(),
            data_len: segment::data_end(&file, seg.file_len),
        };
        let mut events = 0u64;
        let mut newest_seq = None;
        let outcome = segment::scan(&mut seg, &bounds, &mut interner, &mut |_, _, ev| {
            events += 1;
            newest_seq = Some(ev.seq);
        });
        check.events = events;
        check.issues = outcome.issues;
        if let Some(s) = newest_seq {
            last_seq = Some(s);
        } else if last_seq.is_none() {
            last_seq = Some(base.saturating_sub(1));
        }
        report.segments.push(check);
    }
    Ok(report)
}
