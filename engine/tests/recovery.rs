//! The storage failure cases of `shared/reference/storage.md`, each built from what would be on
//! disk after the failure, then reopened.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::*;
use tokenboard_engine::format::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use tokenboard_engine::{
    Agg, Dim, Durability, Engine, Error, Group, IoFaults, LogFilter, NewEvent, RecoveryIssueKind, Retention, ScanIssue, Sym, TimeRange,
};

fn open(dir: &std::path::Path, clock: &TestClock) -> (Engine, tokenboard_engine::RecoveryReport) {
    Engine::open(options(dir, clock)).unwrap()
}

fn torn_tails(report: &tokenboard_engine::RecoveryReport) -> usize {
    report.issues.iter().filter(|i| matches!(i.kind, RecoveryIssueKind::Scan(ScanIssue::TornTail { .. }))).count()
}

fn corruptions(report: &tokenboard_engine::RecoveryReport) -> Vec<(u64, String)> {
    report
        .issues
        .iter()
        .filter_map(|i| match &i.kind {
            RecoveryIssueKind::Scan(ScanIssue::Corruption { offset, reason, .. }) => Some((*offset, reason.clone())),
            _ => None,
        })
        .collect()
}

fn write_at(path: &std::path::Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn read_at(path: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    let f = OpenOptions::new().read(true).open(path).unwrap();
    let mut b = vec![0; len];
    f.read_exact_at(&mut b, offset).unwrap();
    b
}

#[test]
fn clean_reopen_keeps_everything_and_reports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let sent = events(1, 500, T0 - 3_600_000, 1000);
    {
        let (e, report) = open(dir.path(), &clock);
        assert_eq!(report.events, 0);
        for chunk in sent.chunks(37) {
            e.append(chunk).unwrap();
        }
        e.close().unwrap();
    }
    let (e, report) = open(dir.path(), &clock);
    assert!(report.issues.is_empty(), "{:?}", report.issues);
    assert!(report.clean_shutdown);
    assert_eq!(report.events, 500);
    let stored = all_events(&e);
    assert_eq!(stored.len(), 500);
    for (i, (s, n)) in stored.iter().zip(&sent).enumerate() {
        assert_eq!(s.seq, i as u64 + 1);
        assert!(same_event(&e, s, n), "event {i} differs: {s:?} vs {n:?}");
    }
}

/// Case 1: cut the newest segment at every byte of its last frames, both as a zeroed tail (a
/// preallocated file) and as a shorter file. Recovery keeps exactly the batches that were whole,
/// cuts the rest, and appends resume.
#[test]
fn torn_tail_at_every_byte_of_the_last_frames() {
    let src = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let sent = events(2, 40, T0, 10);
    // Batches of 1, 1, 3, 5 events at the end, so cuts fall inside multi-frame batches too.
    let batches: Vec<&[NewEvent]> = vec![&sent[..30], &sent[30..31], &sent[31..32], &sent[32..35], &sent[35..40]];
    {
        let (e, _) = open(src.path(), &clock);
        for b in &batches {
            e.append(b).unwrap();
        }
        e.sync().unwrap();
    }
    let seg = segment_files(src.path()).pop().unwrap();
    let frames = frames(&seg);
    let end = frames.last().map(|(o, h)| o + h.frame_bytes()).unwrap();
    // Where each batch ends, and how many events lie before that.
    let mut batch_ends = vec![(SEGMENT_HEADER_BYTES, 0usize)];
    let mut n = 0;
    for (o, h) in &frames {
        if h.kind_type() == tokenboard_engine::format::KIND_EVENT {
            n += 1;
        }
        if h.is_batch_end() {
            batch_ends.push((o + h.frame_bytes(), n));
        }
    }
    assert_eq!(batch_ends.last().unwrap().1, 40);
    let first_cut = batch_ends[batch_ends.len() - 4].0;
    let original = std::fs::read(&seg).unwrap();
    for cut in first_cut..end {
        for shorten in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(src.path(), dir.path());
            let path = dir.path().join(seg.file_name().unwrap());
            if shorten {
                OpenOptions::new().write(true).open(&path).unwrap().set_len(cut as u64).unwrap();
            } else {
                write_at(&path, cut as u64, &vec![0u8; end - cut]);
            }
            // Cutting bytes that were zero leaves a frame whole: the file is preallocated again with zeros.
            let intact = |e: usize| e <= cut || (original[cut..e].iter().all(|b| *b == 0));
            let expect = batch_ends.iter().filter(|(e, _)| intact(*e)).map(|(_, n)| *n).max().unwrap();
            let (e, report) = open(dir.path(), &clock);
            assert_eq!(report.events as usize, expect, "cut at {cut} (shorten {shorten}) {batch_ends:?} {:?}", report.issues);
            assert!(corruptions(&report).is_empty(), "cut at {cut}: {:?}", report.issues);
            // Torn when non-zero bytes remain between the last whole batch and the cut.
            let last_whole = batch_ends.iter().filter(|(e, _)| intact(*e)).map(|(e, _)| *e).max().unwrap();
            let torn = last_whole < cut && original[last_whole..cut].iter().any(|b| *b != 0);
            assert_eq!(torn_tails(&report), usize::from(torn), "cut at {cut}: {:?}", report.issues);
            // Appends resume after the cut, and survive another reopen.
            let more = events(99, 3, T0 + 1_000_000, 1);
            let out = e.append(&more).unwrap();
            assert_eq!(out.last_seq, expect as u64 + 3);
            e.close().unwrap();
            drop(e);
            let (e, report) = open(dir.path(), &clock);
            assert!(report.issues.is_empty(), "after resume, cut at {cut}: {:?}", report.issues);
            let all = all_events(&e);
            assert_eq!(all.len(), expect + 3);
            assert!(same_event(&e, &all[expect], &more[0]));
        }
    }
}

/// A data directory whose newest segment holds `n` events appended one at a time (one batch each),
/// synced but not closed, with the frames of that segment.
struct SingleEventLog {
    dir: tempfile::TempDir,
    clock: TestClock,
    sent: Vec<NewEvent>,
    seg: std::path::PathBuf,
    frames: Vec<(usize, tokenboard_engine::format::FrameHeader)>,
}

fn single_event_log(seed: u64, n: usize) -> SingleEventLog {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let sent = events(seed, n, T0, 10);
    {
        let (e, _) = open(dir.path(), &clock);
        for ev in &sent {
            e.append(std::slice::from_ref(ev)).unwrap();
        }
        e.sync().unwrap();
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let frames = frames(&seg);
    SingleEventLog { dir, clock, sent, seg, frames }
}

/// Case 2: a bit flip in the length, the CRC and the payload of a middle record: that record is
/// reported, every later one is kept, and nothing huge is allocated.
#[test]
fn bit_flips_in_a_middle_record_are_reported_and_skipped() {
    let SingleEventLog { dir: src, clock, sent, seg, frames } = single_event_log(3, 100);
    // The 50th event frame.
    let (victim, vh) = frames.iter().filter(|(_, h)| h.kind_type() == 1).nth(49).copied().unwrap();
    let targets = [
        ("length", victim + 4, 0x80u8),
        ("length high byte", victim + 5, 0xff),
        ("crc", victim + 1, 0x01),
        ("payload", victim + FRAME_HEADER_BYTES + vh.payload_len as usize / 2, 0x10),
    ];
    for (what, at, mask) in targets {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(src.path(), dir.path());
        let path = dir.path().join(seg.file_name().unwrap());
        let mut b = read_at(&path, at as u64, 1);
        b[0] ^= mask;
        write_at(&path, at as u64, &b);
        let (e, report) = open(dir.path(), &clock);
        let c = corruptions(&report);
        assert_eq!(c.len(), 1, "{what}: {:?}", report.issues);
        assert_eq!(c[0].0, victim as u64, "{what}");
        assert_eq!(torn_tails(&report), 0, "{what}");
        let all = all_events(&e);
        assert_eq!(all.len(), 99, "{what}: {:?}", report.issues);
        assert!(all.iter().all(|ev| ev.seq != 50), "{what}: the damaged record validated");
        assert!(same_event(&e, all.last().unwrap(), &sent[99]));
        assert!(same_event(&e, &all[49], &sent[50]));
        // The gap shows as a sequence number, never as a silent renumbering.
        assert_eq!(all[49].seq, 51);
        assert!(e.status().heap_bytes < 64 << 20);
    }
}

/// Case 3: a corrupt frame followed by valid frames in the newest segment is corruption, not a torn
/// tail; and case 4: a zero page followed by data.
#[test]
fn damage_followed_by_valid_frames_is_corruption_not_a_torn_tail() {
    let SingleEventLog { dir: src, clock, seg, frames, .. } = single_event_log(4, 20);
    let events_only: Vec<_> = frames.iter().filter(|(_, h)| h.kind_type() == 1).copied().collect();
    // Zero out the 10th and 11th event frames: a zero gap followed by data.
    let (start, _) = events_only[9];
    let (last, lh) = events_only[10];
    let dir = tempfile::tempdir().unwrap();
    copy_dir(src.path(), dir.path());
    let path = dir.path().join(seg.file_name().unwrap());
    write_at(&path, start as u64, &vec![0u8; last + lh.frame_bytes() - start]);
    let (e, report) = open(dir.path(), &clock);
    let c = corruptions(&report);
    assert_eq!(c.len(), 1, "{:?}", report.issues);
    assert_eq!(c[0], (start as u64, "zeros followed by data".to_string()));
    assert_eq!(torn_tails(&report), 0);
    assert_eq!(all_events(&e).len(), 18);
    // The engine still appends after the kept frames.
    drop(e);

    // Garbage (not zeros) in the middle of the newest segment.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(src.path(), dir.path());
    let path = dir.path().join(seg.file_name().unwrap());
    write_at(&path, start as u64 + 3, b"\xde\xad\xbe\xef\xde\xad\xbe\xef");
    let (e, report) = open(dir.path(), &clock);
    assert_eq!(corruptions(&report).len(), 1, "{:?}", report.issues);
    assert_eq!(torn_tails(&report), 0);
    assert_eq!(all_events(&e).len(), 19);
    let out = e.append(&events(5, 1, T0, 1)).unwrap();
    assert_eq!(out.last_seq, 21);
}

/// Case 4: the normal zero-filled preallocated tail is a clean end.
#[test]
fn zero_filled_preallocated_tail_is_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    {
        let (e, _) = open(dir.path(), &clock);
        e.append(&events(6, 10, T0, 1)).unwrap();
        e.sync().unwrap();
        // No close: as after a crash with the data on disk.
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 1 << 20, "the segment is preallocated");
    let (e, report) = open(dir.path(), &clock);
    assert!(report.issues.is_empty(), "{:?}", report.issues);
    assert!(!report.clean_shutdown);
    assert_eq!(all_events(&e).len(), 10);
}

fn small_segments(dir: &std::path::Path, clock: &TestClock) -> tokenboard_engine::EngineOptions {
    keep_all(dir, clock, 64 * 1024)
}

/// Appends `sent` in batches of 100 to a log of small segments and closes it.
fn write_closed_log(dir: &std::path::Path, clock: &TestClock, sent: &[NewEvent]) {
    let (e, _) = Engine::open(small_segments(dir, clock)).unwrap();
    for c in sent.chunks(100) {
        e.append(c).unwrap();
    }
    e.close().unwrap();
}

/// Case 5: a missing segment is reported as a gap; the rest is served.
#[test]
fn missing_segment_is_reported_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let sent = events(7, 6000, T0, 100);
    write_closed_log(dir.path(), &clock, &sent);
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 4, "expected several segments, got {}", segs.len());
    let victim = &segs[1];
    let victim_base: u64 = victim.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let next_base: u64 = segs[2].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    std::fs::remove_file(victim).unwrap();
    let (e, report) = Engine::open(small_segments(dir.path(), &clock)).unwrap();
    let gaps: Vec<_> = report
        .issues
        .iter()
        .filter_map(|i| match i.kind {
            RecoveryIssueKind::SequenceGap { from, to } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(gaps, vec![(victim_base, next_base - 1)]);
    let all = all_events(&e);
    assert_eq!(all.len() as u64, 6000 - (next_base - victim_base));
    assert!(same_event(&e, all.last().unwrap(), sent.last().unwrap()));
    // Logs page across the gap.
    let page = e.logs(&LogFilter::default(), Some(next_base + 1), 10);
    assert_eq!(page.events[0].seq, next_base);
    assert_eq!(page.events[1].seq, victim_base - 1);
}

/// Case 6: stale bytes from another file never validate, and a renamed file is refused.
#[test]
fn stale_bytes_never_validate() {
    let clock = TestClock::new(T0);
    let a = tempfile::tempdir().unwrap();
    {
        let (e, _) = open(a.path(), &clock);
        e.append(&events(8, 50, T0, 1)).unwrap();
        e.sync().unwrap();
    }
    let b = tempfile::tempdir().unwrap();
    {
        let (e, _) = open(b.path(), &clock);
        e.append(&events(9, 10, T0, 1)).unwrap();
        e.sync().unwrap();
    }
    // Splice a's frames after b's last frame: the same sequence range, another salt.
    let seg_a = segment_files(a.path()).pop().unwrap();
    let seg_b = segment_files(b.path()).pop().unwrap();
    let fa = frames(&seg_a);
    let fb = frames(&seg_b);
    let b_end = fb.last().map(|(o, h)| o + h.frame_bytes()).unwrap();
    let a_end = fa.last().map(|(o, h)| o + h.frame_bytes()).unwrap();
    let stale = read_at(&seg_a, b_end as u64, a_end - b_end);
    write_at(&seg_b, b_end as u64, &stale);
    let (e, report) = open(b.path(), &clock);
    assert_eq!(all_events(&e).len(), 10, "{:?}", report.issues);
    assert_eq!(torn_tails(&report), 1, "stale bytes at the tail are cut: {:?}", report.issues);
    drop(e);

    // A segment file renamed to another base: its header says otherwise.
    let c = tempfile::tempdir().unwrap();
    std::fs::copy(&seg_a, c.path().join("00000000000000000100.seg")).unwrap();
    let (e, report) = open(c.path(), &clock);
    assert!(report.issues.iter().any(|i| matches!(i.kind, RecoveryIssueKind::BadHeader { .. })), "{:?}", report.issues);
    assert_eq!(all_events(&e).len(), 0);
    assert!(c.path().join("00000000000000000100.seg.corrupt").exists(), "the unreadable file is kept aside");
}

/// Case 7: disk full gives a clean error, reads keep working, writes resume when space frees.
#[test]
fn disk_full_is_a_clean_error_and_appends_resume() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let faults = std::sync::Arc::new(IoFaults::default());
    let mut o = small_segments(dir.path(), &clock);
    o.faults = Some(faults.clone());
    let (e, _) = Engine::open(o).unwrap();
    let sent = events(10, 3000, T0, 10);
    let mut acked = 0;
    let mut failed_at_roll = false;
    for c in sent.chunks(50) {
        faults.fail_fallocate.store(true, std::sync::atomic::Ordering::SeqCst);
        match e.append(c) {
            Ok(_) => acked += c.len(),
            Err(Error::DiskFull { op, .. }) => {
                assert_eq!(op, "fallocate");
                failed_at_roll = true;
                break;
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(failed_at_roll, "a roll needed new space");
    // Reads keep working.
    assert_eq!(e.summary(tokenboard_engine::TimeRange { from_ms: 0, to_ms: i64::MAX }).agg.calls as usize, acked);
    assert_eq!(all_events(&e).len(), acked);
    // Writes in the page cache fail too.
    faults.fail_fallocate.store(false, std::sync::atomic::Ordering::SeqCst);
    faults.fail_write.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(e.append(&sent[acked..acked + 1]), Err(Error::DiskFull { op: "write", .. })));
    assert!(!e.status().fenced, "a full disk does not fence the writer");
    // Space frees: appends resume with the next sequence number.
    faults.fail_write.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = e.append(&sent[acked..acked + 50]).unwrap();
    assert_eq!(out.last_seq as usize, acked + 50);
    e.close().unwrap();
    drop(e);
    let (e, report) = Engine::open(small_segments(dir.path(), &clock)).unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
    let all = all_events(&e);
    assert_eq!(all.len(), acked + 50);
    for (s, n) in all.iter().zip(&sent) {
        assert!(same_event(&e, s, n));
    }
}

/// A roll syncs the sealed segment before the next one exists (recovery only accepts a torn
/// tail in the newest segment): even under `never` the sealed events are durable after a roll;
/// under `always` every acknowledged batch is durable across rolls; a failed sync at a roll
/// fails that append and fences.
#[test]
fn a_roll_syncs_the_sealed_segment_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let faults = std::sync::Arc::new(IoFaults::default());
    let mut o = keep_all(dir.path(), &clock, 64 * 1024);
    o.durability = Durability::Always;
    o.faults = Some(faults.clone());
    let (e, _) = Engine::open(o.clone()).unwrap();
    for i in 0..40 {
        let out = e.append(&events(100 + i, 200, T0 + i as i64 * 1000, 1)).unwrap();
        assert!(e.durable_seq() >= out.last_seq, "batch {i} acknowledged before it was durable");
    }
    let rolled = e.status().segments;
    assert!(rolled > 3, "{rolled} segments: the test needs rolls");
    e.close().unwrap();
    drop(e);

    o.durability = Durability::Never;
    let (e, _) = Engine::open(o).unwrap();
    let (mut before, mut rolling) = (e.durable_seq(), 0);
    while e.status().segments == rolled {
        before = e.last_seq();
        rolling = e.append(&events(7, 200, T0, 1)).unwrap().last_seq;
    }
    // The batch that rolled went to the new segment; everything before it was synced first.
    assert!(rolling > before);
    assert_eq!(e.durable_seq(), before, "the sealed segment was not synced at the roll");
    faults.fail_fsync.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut failed = None;
    for _ in 0..100 {
        if let Err(err) = e.append(&events(8, 200, T0, 1)) {
            failed = Some(err);
            break;
        }
    }
    let err = failed.expect("no roll in 100 batches");
    assert!(matches!(err, Error::Io { op: "fdatasync", .. }), "{err}");
    assert!(e.status().fenced);
}

/// Case 8: an fsync failure fences the writer; nothing is retried; a reopen serves what was written.
#[test]
fn fsync_failure_fences_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let faults = std::sync::Arc::new(IoFaults::default());
    let mut o = options(dir.path(), &clock);
    o.durability = Durability::Always;
    o.faults = Some(faults.clone());
    let (e, _) = Engine::open(o).unwrap();
    e.append(&events(11, 10, T0, 1)).unwrap();
    assert_eq!(e.durable_seq(), 10);
    faults.fail_fsync.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = e.append(&events(12, 5, T0, 1)).unwrap_err();
    assert!(matches!(err, Error::Io { op: "fdatasync", .. }), "{err}");
    assert_eq!(e.durable_seq(), 10, "the failed batch is not durable");
    faults.fail_fsync.store(false, std::sync::atomic::Ordering::SeqCst);
    let err = e.append(&events(13, 1, T0, 1)).unwrap_err();
    assert!(matches!(err, Error::Fenced { op: "fdatasync", .. }), "{err}");
    assert!(e.status().fenced);
    // Reads still work.
    assert_eq!(e.summary(tokenboard_engine::TimeRange { from_ms: 0, to_ms: i64::MAX }).agg.calls, 15);
    drop(e);
    let (e, _) = open(dir.path(), &clock);
    assert!(all_events(&e).len() >= 10);
    e.append(&events(14, 1, T0, 1)).unwrap();
}

/// Case 9: leftovers of a crash mid-roll and mid-retention are cleaned; nothing counts twice.
#[test]
fn crash_mid_roll_and_mid_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let sent = events(15, 6000, T0, 100);
    write_closed_log(dir.path(), &clock, &sent);
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 3);
    // Mid-retention: the first segment was folded into the rollups but not yet deleted.
    let first_base: u64 = segs[1].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let mut rollups = tokenboard_engine::rollup::Rollups::default();
    {
        let (e, _) = Engine::open(small_segments(dir.path(), &clock)).unwrap();
        e.with_interner(|i| {
            for ev in all_events(&e).iter().filter(|ev| ev.seq < first_base) {
                rollups.fold(ev, i);
            }
        });
    }
    rollups.save(dir.path()).unwrap();
    std::fs::write(dir.path().join("00000000000000000001.deleted"), b"old").unwrap();
    // Mid-roll: a temporary segment that never got renamed.
    std::fs::write(dir.path().join("00000000000000009999.seg.tmp"), b"partial").unwrap();
    let (e, report) = Engine::open(small_segments(dir.path(), &clock)).unwrap();
    let kinds: Vec<_> = report.issues.iter().map(|i| &i.kind).collect();
    assert_eq!(kinds.iter().filter(|k| matches!(k, RecoveryIssueKind::LeftoverRemoved)).count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| matches!(k, RecoveryIssueKind::FoldedSegmentRemoved)).count(), 1, "{kinds:?}");
    assert!(!dir.path().join("00000000000000009999.seg.tmp").exists());
    let all = all_events(&e);
    assert_eq!(all.len() as u64, 6000 - (first_base - 1));
    let live_calls = e.summary(tokenboard_engine::TimeRange { from_ms: 0, to_ms: i64::MAX }).agg.calls;
    let rolled: u64 = e
        .rollups()
        .days
        .iter()
        .filter(|((_, g, _), _)| *g == tokenboard_engine::rollup::RollupGroup::All)
        .map(|(_, a)| a.calls)
        .sum();
    assert_eq!(live_calls + rolled, 6000, "every call counted exactly once");
}

/// Retention by count, bytes and age deletes whole oldest segments, folds them into the rollups,
/// and the views drop exactly their contribution.
#[test]
fn retention_drops_whole_segments_and_keeps_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let sent = events(16, 4000, T0, 1000);
    let mut o = small_segments(dir.path(), &clock);
    o.retention.max_events = Some(2500);
    let (e, _) = Engine::open(o.clone()).unwrap();
    for c in sent.chunks(100) {
        e.append(c).unwrap();
    }
    let before = e.status();
    let report = e.enforce_retention().unwrap();
    assert!(report.segments_deleted > 0);
    let after = e.status();
    assert_eq!(after.events, before.events - report.events_deleted);
    assert!(after.events >= 2500);
    let all = all_events(&e);
    assert_eq!(all.len() as u64, after.events);
    let live = e.summary(tokenboard_engine::TimeRange { from_ms: 0, to_ms: i64::MAX }).agg;
    assert_eq!(live.calls, after.events);
    let rolled: u64 = e.rollups().days.iter().filter(|((_, g, _), _)| *g == tokenboard_engine::rollup::RollupGroup::All).map(|(_, a)| a.calls).sum();
    assert_eq!(rolled, report.events_deleted);
    // A reopen agrees.
    e.close().unwrap();
    drop(e);
    let (e, report2) = Engine::open(o).unwrap();
    assert!(report2.issues.is_empty(), "{:?}", report2.issues);
    assert_eq!(e.summary(tokenboard_engine::TimeRange { from_ms: 0, to_ms: i64::MAX }).agg.calls, after.events);
    assert_eq!(e.rollups().folded_through_seq, all[0].seq - 1);
}

/// The history adds what the rollups hold to what the log holds, day by day and per name, so
/// the totals of a range stay the same when retention moves segments from one to the other.
#[test]
fn history_adds_the_rollups_to_what_the_log_holds() {
    use std::collections::BTreeMap;
    use tokenboard_engine::rollup::{History, RollupGroup};
    const DAY: i64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    // About 17 days, 1700 s apart, so segments end in the middle of days.
    let sent = events(21, 3000, T0 - 20 * DAY, 500_000);
    let mut o = small_segments(dir.path(), &clock);
    o.retention.max_events = Some(1200);
    let (e, _) = Engine::open(o.clone()).unwrap();
    for c in sent.chunks(50) {
        e.append(c).unwrap();
    }
    let (from, to) = (T0.div_euclid(DAY) - 25, T0.div_euclid(DAY) + 1);
    let mut per_day: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    let mut per_model: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for ev in &sent {
        let tokens: u64 = ev.tokens.to_array().iter().sum();
        let d = per_day.entry(ev.ts_ms.div_euclid(DAY)).or_default();
        *d = (d.0 + 1, d.1 + tokens);
        let m = per_model.entry(ev.dims[Dim::Model as usize].clone()).or_default();
        *m = (m.0 + 1, m.1 + tokens);
    }
    let check = |h: &History| {
        assert_eq!(h.buckets.len() as i64, to - from);
        for b in &h.buckets {
            let want = per_day.get(&b.start_ms.div_euclid(DAY)).copied().unwrap_or_default();
            let (calls, tokens) = (b.log.calls + b.rollups.calls, b.log.total_tokens() + b.rollups.total_tokens());
            assert_eq!((calls, tokens), want, "day starting {}", b.start_ms);
        }
        let got: BTreeMap<String, (u64, u64)> = h.breakdown.iter().map(|r| (r.name.clone(), (r.total().calls, r.total().total_tokens()))).collect();
        assert_eq!(got, per_model);
        assert!(h.breakdown.windows(2).all(|w| w[0].total().total_tokens() >= w[1].total().total_tokens()));
    };
    let h = e.history(from, to, false, RollupGroup::Model).unwrap();
    check(&h);
    assert!(h.buckets.iter().all(|b| b.rollups.calls == 0));
    assert_eq!(e.status().heap.rollups, 0);
    let report = e.enforce_retention().unwrap();
    let cells = e.rollups().days.len();
    assert!(e.status().heap.rollups >= cells * 100, "{cells} cells in {} B", e.status().heap.rollups);
    assert!(report.segments_deleted > 0);
    let h = e.history(from, to, false, RollupGroup::Model).unwrap();
    check(&h);
    assert_eq!(h.buckets.iter().map(|b| b.rollups.calls).sum::<u64>(), report.events_deleted);
    assert!(h.buckets.iter().any(|b| b.rollups.calls > 0 && b.log.calls > 0), "a day split between the two");
    assert_eq!(h.rest, Default::default(), "every model kept: nothing beyond the names");
    // Months, and the status classes by their digit.
    let months = e.history(from, to, true, RollupGroup::StatusClass).unwrap();
    assert!(months.buckets.len() <= 2);
    assert_eq!(months.buckets.iter().map(|b| b.log.calls + b.rollups.calls).sum::<u64>(), 3000);
    assert!(months.breakdown.iter().all(|r| r.name.len() == 1 && r.name.parse::<u8>().is_ok()), "{:?}", months.breakdown);
    assert_eq!(months.breakdown.iter().map(|r| r.total().calls).sum::<u64>(), 3000);
    // A reopen answers the same.
    e.close().unwrap();
    drop(e);
    let (e, _) = Engine::open(o).unwrap();
    assert_eq!(e.history(from, to, false, RollupGroup::Model).unwrap(), h);
    assert_eq!(e.history(to, from, false, RollupGroup::All).unwrap(), History::default());
}

/// Retention whose rollups cannot be saved deletes nothing and leaves the views equal to the
/// log; the next pass, once they can be, deletes as usual.
#[test]
fn retention_that_cannot_save_its_rollups_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let mut o = small_segments(dir.path(), &clock);
    o.retention.max_events = Some(2500);
    let (e, _) = Engine::open(o.clone()).unwrap();
    for c in events(17, 4000, T0, 1000).chunks(100) {
        e.append(c).unwrap();
    }
    let all_time = tokenboard_engine::TimeRange { from_ms: 0, to_ms: i64::MAX };
    let (before, summary) = (e.status(), e.summary(all_time));
    // A directory where the rollups' temporary file goes makes their save fail.
    std::fs::create_dir(dir.path().join("rollups.tmp")).unwrap();
    assert!(e.enforce_retention().is_err());
    let after = e.status();
    assert_eq!((after.events, after.segments), (before.events, before.segments));
    assert_eq!(e.summary(all_time), summary, "the views lost a segment that is still in the log");
    assert_eq!(all_events(&e).len() as u64, before.events);
    assert!(e.rollups().days.is_empty());
    std::fs::remove_dir(dir.path().join("rollups.tmp")).unwrap();
    let report = e.enforce_retention().unwrap();
    assert!(report.segments_deleted > 0);
    assert_eq!(e.summary(all_time).agg.calls, before.events - report.events_deleted);
    assert_eq!(all_events(&e).len() as u64, before.events - report.events_deleted);
}

#[test]
fn retention_by_age_uses_the_time_a_segment_was_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let mut o = options(dir.path(), &clock);
    o.segment_age_max_ms = 3_600_000;
    o.retention = Retention { max_age_ms: Some(2 * 3_600_000), max_bytes: None, max_events: None };
    let (e, _) = Engine::open(o).unwrap();
    // Far-future timestamps must not pin a segment: retention looks at wall-clock seal times.
    for hour in 0..5 {
        let mut batch = events(17 + hour, 10, T0 + hour as i64 * 3_600_000, 1);
        batch[0].ts_ms = T0 + 400 * 86_400_000;
        e.append(&batch).unwrap();
        clock.advance(3_600_000);
    }
    e.append(&events(30, 1, T0, 1)).unwrap();
    // Segments sealed at T0+1h..T0+5h; now is T0+5h; anything sealed before T0+3h goes.
    let report = e.enforce_retention().unwrap();
    assert_eq!(report.segments_deleted, 2);
    assert_eq!(e.status().events, 31);
    // With no more appends, the live segment is sealed by age and then ages out too.
    clock.advance(3_600_000);
    e.enforce_retention().unwrap();
    clock.advance(3 * 3_600_000);
    e.enforce_retention().unwrap();
    assert_eq!(e.status().events, 0, "an idle log still ages out");
}

#[test]
fn retention_by_age_drops_backfilled_history_by_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + 100 * 86_400_000);
    let mut o = small_segments(dir.path(), &clock);
    o.retention = Retention { max_age_ms: Some(30 * 86_400_000), max_bytes: None, max_events: None };
    let (e, _) = Engine::open(o).unwrap();
    // 60-day-old history, just imported, then today's traffic.
    let old = events(31, 20_000, T0 + 40 * 86_400_000, 100);
    for c in old.chunks(1000) {
        e.append(c).unwrap();
    }
    let recent = events(32, 500, T0 + 99 * 86_400_000, 1000);
    e.append(&recent).unwrap();
    let report = e.enforce_retention().unwrap();
    assert!(report.segments_deleted > 0);
    let left = all_events(&e);
    assert!(left.len() >= recent.len() && left.len() < old.len() + recent.len());
    assert_eq!(e.summary(tokenboard_engine::TimeRange::ALL).agg.calls as usize, left.len());
}

/// Case 10: a reader keeps reading a segment that retention deletes under it.
#[test]
fn reader_during_retention_keeps_reading() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let sent = events(18, 6000, T0, 1000);
    let mut o = small_segments(dir.path(), &clock);
    o.retention.max_events = Some(1);
    let (e, _) = Engine::open(o).unwrap();
    for c in sent.chunks(100) {
        e.append(c).unwrap();
    }
    let (to_reader, from_main) = std::sync::mpsc::channel::<()>();
    let (to_main, from_reader) = std::sync::mpsc::channel::<()>();
    let reader = {
        let e = e.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            e.scan(&LogFilter::default(), &mut |ev| {
                if seen.is_empty() {
                    to_main.send(()).unwrap();
                    from_main.recv().unwrap();
                }
                seen.push(ev.seq);
                true
            });
            seen
        })
    };
    from_reader.recv().unwrap();
    let report = e.enforce_retention().unwrap();
    assert!(report.segments_deleted >= 2);
    assert!(!segment_files(dir.path()).iter().any(|p| p.ends_with("00000000000000000001.seg")));
    to_reader.send(()).unwrap();
    let seen = reader.join().unwrap();
    assert_eq!(seen, (1..=6000).collect::<Vec<u64>>(), "the reader saw every event, deleted or not");
}

/// A retention pass reads what it drops outside the state lock and takes its turn with any
/// other pass: with appends and two callers running passes at the same time, the views still
/// equal a rebuild of what is left, every event is either left or in the rollups once, and the
/// ids of dropped events are forgotten.
#[test]
fn retention_passes_beside_appends_and_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let mut sent = events(19, 12_000, T0, 1000);
    for (i, e) in sent.iter_mut().enumerate() {
        e.event_id = Some(format!("ev-{i}"));
    }
    let mut o = small_segments(dir.path(), &clock);
    o.retention.max_events = Some(3000);
    let (e, _) = Engine::open(o).unwrap();
    for c in sent[..2000].chunks(100) {
        e.append(c).unwrap();
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let passes: Vec<_> = (0..2)
        .map(|_| {
            let (e, done) = (e.clone(), done.clone());
            std::thread::spawn(move || {
                let mut deleted = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    deleted += e.enforce_retention().unwrap().events_deleted;
                }
                deleted
            })
        })
        .collect();
    for c in sent[2000..].chunks(50) {
        e.append(c).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut deleted: u64 = passes.into_iter().map(|p| p.join().unwrap()).sum();
    deleted += e.enforce_retention().unwrap().events_deleted;
    assert!(deleted > 0);
    let left = all_events(&e);
    assert_eq!(left.len() as u64 + deleted, 12_000);
    assert_eq!(left.first().unwrap().seq, deleted + 1, "whole oldest segments went");
    let rolled: u64 = e.rollups().days.iter().filter(|((_, g, _), _)| *g == tokenboard_engine::rollup::RollupGroup::All).map(|(_, a)| a.calls).sum();
    assert_eq!(rolled, deleted);
    // The ids of dropped events are accepted again; those left are still duplicates.
    let again = [sent[0].clone(), sent[11_999].clone()];
    let outcome = e.append(&again).unwrap();
    assert_eq!((outcome.accepted, outcome.duplicates), (1, 1));
    e.sync().unwrap();
    // A rebuild of what is left interns its strings in another order: compare by string.
    let (_copy, rebuilt) = rebuilt_copy(dir.path(), &clock);
    let by_name = |e: &Engine, group: Group, range: TimeRange| -> std::collections::BTreeMap<String, Agg> {
        e.breakdown(group, range)
            .into_iter()
            .map(|(id, agg)| (if group == Group::StatusClass { id.to_string() } else { e.resolve(Sym(id)).to_string() }, agg))
            .collect()
    };
    let everything = TimeRange { from_ms: 0, to_ms: i64::MAX / 4 };
    let hours = (0..14).map(|h| TimeRange { from_ms: T0 + h * 3_600_000, to_ms: T0 + (h + 1) * 3_600_000 });
    for range in std::iter::once(everything).chain(hours) {
        assert_eq!(e.summary(range), rebuilt.summary(range), "{range:?}");
        for group in Group::ALL {
            assert_eq!(by_name(&e, group, range), by_name(&rebuilt, group, range), "{group:?} {range:?}");
        }
    }
    let named = |e: &Engine| all_events(e).iter().map(|ev| (ev.seq, ev.ts_ms, e.resolve(ev.dim(Dim::Key)).to_string())).collect::<Vec<_>>();
    assert_eq!(named(&e), named(&rebuilt));
}

/// Case 11: late events land in past buckets; far-future ones are clamped and flagged.
#[test]
fn out_of_order_and_far_future_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let (e, _) = open(dir.path(), &clock);
    let mut evs = events(19, 3, T0, 1);
    evs[1].ts_ms = T0 - 10 * 86_400_000; // ten days late
    evs[2].ts_ms = T0 + 365 * 86_400_000; // a year ahead
    e.append(&evs).unwrap();
    let day = 86_400_000;
    let past = e.summary(tokenboard_engine::TimeRange { from_ms: T0 - 10 * day, to_ms: T0 - 9 * day });
    assert_eq!(past.agg.calls, 1);
    let stored = all_events(&e);
    assert!(stored[2].ts_clamped);
    assert_eq!(stored[2].ts_ms, T0 + day);
    assert!(!stored[1].ts_clamped);
    drop(e);
    let (e, _) = open(dir.path(), &clock);
    let stored2 = all_events(&e);
    assert_eq!(stored, stored2);
}

/// Case 13: oversized and malformed records are refused with the field named; a format version
/// from the future is refused clearly.
#[test]
fn malformed_input_and_unknown_versions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let (e, _) = open(dir.path(), &clock);
    let mut evs = events(20, 3, T0, 1);
    evs[2].error_message = Some("x".repeat(5000));
    match e.append(&evs) {
        Err(Error::InvalidEvent { index, error }) => {
            assert_eq!(index, 2);
            assert_eq!(error.field, "error_message");
        }
        other => panic!("expected an invalid event, got {other:?}"),
    }
    evs[2].error_message = None;
    evs[1].set_dim(tokenboard_engine::Dim::Model, "m".repeat(300));
    let err = e.append(&evs).unwrap_err();
    assert!(err.to_string().contains("model"), "{err}");
    assert_eq!(e.status().events, 0, "nothing of a rejected batch is stored");
    e.append(&events(21, 1, T0, 1)).unwrap();
    e.close().unwrap();
    drop(e);
    // Bump the version byte in the header (and fix its checksum): refused, kept aside.
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut head = read_at(&seg, 0, SEGMENT_HEADER_BYTES);
    head[8] = 99;
    let crc = crc32fast::hash(&head[..SEGMENT_HEADER_BYTES - 4]);
    head[SEGMENT_HEADER_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
    write_at(&seg, 0, &head);
    let (_e, report) = open(dir.path(), &clock);
    let reasons: Vec<_> = report
        .issues
        .iter()
        .filter_map(|i| match &i.kind {
            RecoveryIssueKind::BadHeader { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("version 99"), "{reasons:?}");
}

#[test]
fn duplicate_event_ids_are_counted_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let (e, _) = open(dir.path(), &clock);
    let mut evs = events(22, 4, T0, 1);
    for (i, ev) in evs.iter_mut().enumerate() {
        ev.event_id = Some(format!("id-{}", i % 3));
    }
    let out = e.append(&evs).unwrap();
    assert_eq!((out.accepted, out.duplicates), (3, 1));
    let out = e.append(&evs[..2]).unwrap();
    assert_eq!((out.accepted, out.duplicates), (0, 2));
    e.close().unwrap();
    drop(e);
    // The window survives a restart.
    let (e, _) = open(dir.path(), &clock);
    let out = e.append(&evs).unwrap();
    assert_eq!((out.accepted, out.duplicates), (0, 4));
    assert_eq!(e.status().events, 3);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let (_e, _) = open(dir.path(), &clock);
    assert!(matches!(Engine::open(options(dir.path(), &clock)), Err(Error::Locked { .. })));
}

#[test]
fn retention_runs_on_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let mut o = small_segments(dir.path(), &clock);
    o.retention.max_events = Some(1000);
    o.retention_interval_ms = Some(1000);
    let (e, _) = Engine::open(o).unwrap();
    // Chunks small enough for 64 KiB segments.
    for c in events(40, 6000, T0, 1000).chunks(500) {
        e.append(c).unwrap();
    }
    let before = e.status().events;
    assert_eq!(before, 6000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e.status().events == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let after = e.status().events;
    assert!(after < before && after >= 1000, "retention ran by itself: {before} -> {after}");
    e.close().unwrap();
    drop(e);
    // Closing joined the worker: the directory is free again at once.
    let (_e, _) = Engine::open(small_segments(dir.path(), &clock)).unwrap();
}

#[test]
fn event_ids_are_remembered_for_the_window_then_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let mut o = options(dir.path(), &clock);
    o.segment_age_max_ms = 3_600_000;
    o.dedup_window_ms = 86_400_000;
    o.retention = Retention::none();
    let (e, _) = Engine::open(o.clone()).unwrap();
    let mut ev = events(50, 1, T0, 1);
    ev[0].event_id = Some("once".into());
    assert_eq!(e.append(&ev).unwrap().accepted, 1);
    // An hour later the segment rolls; 23 hours later the id is still known, even across a reopen.
    clock.advance(3_600_001);
    e.append(&events(51, 1, T0, 1)).unwrap();
    clock.advance(22 * 3_600_000);
    e.enforce_retention().unwrap();
    assert_eq!(e.append(&ev).unwrap().duplicates, 1);
    e.close().unwrap();
    drop(e);
    let (e, _) = Engine::open(o).unwrap();
    assert_eq!(e.append(&ev).unwrap().duplicates, 1);
    // Past the window (plus the segment's age span), the id is forgotten.
    clock.advance(3 * 3_600_000);
    e.enforce_retention().unwrap();
    assert_eq!(e.append(&ev).unwrap().accepted, 1);
}

/// Unmounts a tmpfs when dropped, even if the test fails.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Case 7 on a real, full file system: a 2 MiB tmpfs. Runs where tests run as root (CI does);
/// elsewhere the injected-fault test above covers the same paths.
#[test]
fn disk_full_on_a_real_tmpfs() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("disk_full_on_a_real_tmpfs: not root, cannot mount a tmpfs; covered by the injected-fault test");
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tokenboard-test", mnt.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs as root");
    let _guard = Tmpfs(mnt.path().to_path_buf());
    let dir = mnt.path().join("data");
    // Space to give back later.
    let filler = mnt.path().join("filler");
    std::fs::write(&filler, vec![1u8; 512 * 1024]).unwrap();

    let clock = TestClock::new(T0);
    let o = keep_all(&dir, &clock, 256 * 1024);
    let (e, _) = Engine::open(o.clone()).unwrap();
    let sent = events(60, 200_000, T0, 10);
    let mut acked = 0;
    let mut full = None;
    for c in sent.chunks(500) {
        match e.append(c) {
            Ok(_) => acked += c.len(),
            Err(err) => {
                full = Some(err);
                break;
            }
        }
    }
    let err = full.expect("a 2 MiB file system fills up");
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    assert!(acked > 10_000);
    // Still alive (no SIGBUS), reads work, nothing acknowledged is missing.
    assert_eq!(e.summary(tokenboard_engine::TimeRange { from_ms: 0, to_ms: i64::MAX }).agg.calls as usize, acked);
    assert_eq!(all_events(&e).len(), acked);
    assert!(!e.status().fenced);
    // Space frees: appends resume.
    std::fs::remove_file(&filler).unwrap();
    e.append(&sent[acked..acked + 500]).unwrap();
    e.close().unwrap();
    drop(e);
    let (e, report) = Engine::open(o).unwrap();
    assert_eq!(report.corruptions(), 0, "{:?}", report.issues);
    let all = all_events(&e);
    assert_eq!(all.len(), acked + 500);
    assert!(same_event(&e, all.last().unwrap(), &sent[acked + 499]));
}

#[test]
fn appends_after_close_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let (e, _) = open(dir.path(), &clock);
    e.append(&events(70, 2, T0, 1)).unwrap();
    e.close().unwrap();
    let err = e.append(&events(71, 1, T0, 1)).unwrap_err();
    assert!(matches!(err, Error::Closed), "{err}");
    assert_eq!(err.to_string(), "the engine is closed");
    // Reads still answer.
    assert_eq!(all_events(&e).len(), 2);
}

/// Found by the `recovery` fuzz target: a newest segment whose valid frames are followed by
/// zeros with stray bytes. Recovery must be idempotent: a second open serves what the first did.
#[test]
fn fuzz_regression_recovery_is_idempotent() {
    let bytes = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-recovery-idempotent.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000001.seg"), &bytes).unwrap();
    let clock = TestClock::new(1_800_000_000_000);
    let open = || {
        let mut o = options(dir.path(), &clock);
        o.segment_bytes_max = 64 * 1024;
        o.retention = tokenboard_engine::Retention::none();
        o.retention_interval_ms = None;
        Engine::open(o).unwrap()
    };
    let (e, report) = open();
    eprintln!("first: {report:?}");
    let first: Vec<u64> = all_events(&e).iter().map(|ev| ev.seq).collect();
    e.close().unwrap();
    drop(e);
    let (e, report) = open();
    eprintln!("second: {report:?}");
    let second: Vec<u64> = all_events(&e).iter().map(|ev| ev.seq).collect();
    assert_eq!(second, first);
}

const SAVED: &str = "state.saved";

/// 3000 events with ids over several segments, then a clean close.
fn closed_log_with_ids(dir: &std::path::Path, clock: &TestClock) -> Vec<NewEvent> {
    let mut sent = events(7, 3000, T0 - 6 * 3_600_000, 7_000);
    for (i, e) in sent.iter_mut().enumerate() {
        e.event_id = Some(format!("id-{i}"));
    }
    let e = Engine::open(keep_all(dir, clock, 64 * 1024)).unwrap().0;
    for chunk in sent.chunks(100) {
        e.append(chunk).unwrap();
    }
    assert!(e.status().segments > 2);
    e.close().unwrap();
    sent
}

/// A copy of `dir` without its saved state, opened: a full rebuild.
fn rebuilt_copy(dir: &std::path::Path, clock: &TestClock) -> (tempfile::TempDir, Engine) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    let _ = std::fs::remove_file(copy.path().join(SAVED));
    let (e, report) = Engine::open(keep_all(copy.path(), clock, 64 * 1024)).unwrap();
    assert!(!report.restored);
    (copy, e)
}

fn assert_same(a: &Engine, b: &Engine) {
    assert!(a.with_views(|x| b.with_views(|y| x == y)), "views differ");
    assert_eq!(all_events(a), all_events(b));
    let errors = LogFilter { status: Some(tokenboard_engine::StatusFilter::Errors), ..LogFilter::default() };
    for filter in [LogFilter::default(), errors] {
        let (pa, pb) = (a.logs(&filter, None, 50), b.logs(&filter, None, 50));
        assert_eq!(pa.events, pb.events);
        assert_eq!(pa.next_cursor, pb.next_cursor);
    }
    let (sa, sb) = (a.status(), b.status());
    assert_eq!((sa.events, sa.segments, sa.last_seq), (sb.events, sb.segments, sb.last_seq));
}

#[test]
fn a_clean_close_saves_the_state_and_the_next_open_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let sent = closed_log_with_ids(dir.path(), &clock);
    assert!(dir.path().join(SAVED).exists());
    let (_copy, rebuilt) = rebuilt_copy(dir.path(), &clock);

    let (e, report) = Engine::open(keep_all(dir.path(), &clock, 64 * 1024)).unwrap();
    assert!(report.restored && report.clean_shutdown, "{report:?}");
    assert!(report.issues.is_empty(), "{:?}", report.issues);
    assert_eq!((report.events, report.segments), (3000, rebuilt.status().segments));
    assert!(!dir.path().join(SAVED).exists(), "an open consumes the saved state");
    // The bitmaps come from the (unlinked, still mapped) file when first needed, or from a
    // background load: either way the same answers.
    assert_same(&e, &rebuilt);
    assert!(e.status().heap.bitmaps > 0);

    // The dedup set came back too, and appends continue the live segment as after a rebuild.
    assert_eq!(e.append(&sent[..100]).unwrap().duplicates, 100);
    let more = events(8, 700, T0 - 600_000, 500);
    for chunk in more.chunks(50) {
        assert_eq!(e.append(chunk).unwrap().accepted, chunk.len());
        rebuilt.append(chunk).unwrap();
    }
    assert_same(&e, &rebuilt);
    // The heap adds up, the live segment's bitmaps (kept with the views) included.
    let s = e.status();
    let h = &s.heap;
    assert!(h.bitmaps > 0 && h.blocks_and_dicts > 0 && h.blocks_and_dicts < 16 << 20, "{h:?}");
    assert_eq!(s.heap_bytes, h.views + h.bitmaps + h.blocks_and_dicts + h.interner + h.dedup + h.rollups);

    // Stopped without a close, the next open rebuilds, to the same state.
    e.sync().unwrap();
    drop(e);
    let (e, report) = Engine::open(keep_all(dir.path(), &clock, 64 * 1024)).unwrap();
    assert!(!report.restored && !report.clean_shutdown);
    assert_same(&e, &rebuilt);
}

#[test]
fn a_saved_state_that_does_not_match_the_log_is_not_used() {
    let base = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    closed_log_with_ids(base.path(), &clock);
    let (_copy, rebuilt) = rebuilt_copy(base.path(), &clock);
    let segments = segment_files(base.path());
    let newest = segments.last().unwrap().file_name().unwrap().to_owned();
    let oldest = segments[0].file_name().unwrap().to_owned();

    type Damage<'a> = (&'a str, &'a dyn Fn(&std::path::Path));
    let cases: [Damage; 5] = [
        ("no clean-shutdown marker", &|d| std::fs::remove_file(d.join("clean-shutdown")).unwrap()),
        ("a damaged state file", &|d| {
            let p = d.join(SAVED);
            let len = std::fs::metadata(&p).unwrap().len();
            let b = read_at(&p, len / 2, 1);
            write_at(&p, len / 2, &[b[0] ^ 1]);
        }),
        ("a state file from another version", &|d| write_at(&d.join(SAVED), 8, &[0xee])),
        ("a newest segment of another length", &|d| {
            let f = OpenOptions::new().write(true).open(d.join(&newest)).unwrap();
            f.set_len(f.metadata().unwrap().len() + 4096).unwrap();
        }),
        ("a missing oldest segment", &|d| std::fs::remove_file(d.join(&oldest)).unwrap()),
    ];
    for (name, tamper) in cases {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        tamper(dir.path());
        let (e, report) = Engine::open(keep_all(dir.path(), &clock, 64 * 1024)).unwrap();
        assert!(!report.restored, "{name}: the saved state was used");
        assert!(!dir.path().join(SAVED).exists(), "{name}: the saved state is left behind");
        if name != "a missing oldest segment" {
            assert_same(&e, &rebuilt);
        } else {
            assert!(e.status().events < 3000, "{name}");
        }
    }

    // With `save_state` off, close saves nothing.
    let dir = tempfile::tempdir().unwrap();
    let mut o = keep_all(dir.path(), &clock, 64 * 1024);
    o.save_state = false;
    let e = Engine::open(o).unwrap().0;
    e.append(&events(9, 10, T0, 1000)).unwrap();
    e.close().unwrap();
    assert!(!dir.path().join(SAVED).exists());
}

/// After an open from the saved state the views' minute slots stay in that file until first used
/// (a background thread decodes the rest half a second after the open): a query that needs them
/// reads them from there, to the answers a rebuild gives, and only then are they in the heap.
#[test]
fn minute_slots_are_decoded_from_the_saved_state_when_first_used() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let day = 86_400_000;
    let e = Engine::open(keep_all(dir.path(), &clock, 1 << 20)).unwrap().0;
    for d in 0..5 {
        e.append(&events(50 + d as u64, 300, T0 - (5 - d) * day, 200)).unwrap();
    }
    e.close().unwrap();
    drop(e);
    let (_copy, rebuilt) = rebuilt_copy(dir.path(), &clock);
    let (e, report) = Engine::open(keep_all(dir.path(), &clock, 1 << 20)).unwrap();
    assert!(report.restored);
    // The first and last days' are decoded at once (the time bounds read them), not the others.
    let before = e.status().heap.views;
    let middle = tokenboard_engine::TimeRange::new(T0 - 3 * day, T0 - 3 * day + 3_600_000);
    let minutes = |x: &Engine| x.trend(middle, tokenboard_engine::Granularity::Minute, chrono_tz::UTC).unwrap();
    let got = minutes(&e);
    assert!(got.iter().any(|b| b.agg.calls > 0));
    assert_eq!(got, minutes(&rebuilt));
    assert!(e.status().heap.views > before, "the middle day's minute slots were in the heap before they were used");
    // The background thread decodes the other days (comparing the views would decode them too).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let settled = e.status().heap.views;
    assert_same(&e, &rebuilt);
    assert_eq!(e.status().heap.views, settled, "days were left undecoded");
}

/// The live segment's bitmaps are loaded by the fold thread after an open from the saved state;
/// appends and reads that come at once wait for them, so none of their entries is lost.
#[test]
fn appends_right_after_an_open_from_the_saved_state_keep_their_index_entries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    closed_log_with_ids(dir.path(), &clock);
    for round in 0..10u64 {
        let (e, report) = Engine::open(keep_all(dir.path(), &clock, 64 * 1024)).unwrap();
        assert!(report.restored, "round {round}");
        // Small (folded inline) and large (folded on the fold thread) batches.
        e.append(&events(100 + round, 3, T0 - 3_600_000, 1000)).unwrap();
        e.append(&events(200 + round, 150, T0 - 3_600_000, 10)).unwrap();
        let all = all_events(&e);
        for model in ["claude-sonnet-4", "qwen3"] {
            let sym = e.lookup(model).unwrap();
            let filter = LogFilter { model: Some(sym), ..LogFilter::default() };
            let expect: Vec<u64> = all.iter().rev().filter(|ev| filter.matches(ev)).map(|ev| ev.seq).take(1000).collect();
            let got: Vec<u64> = e.logs(&filter, None, 1000).events.iter().map(|ev| ev.seq).collect();
            assert_eq!(got, expect, "round {round}, model {model}");
        }
        e.close().unwrap();
    }
}

/// The same on an empty store, where the first append can come before the fold thread started.
#[test]
fn appends_right_after_opening_an_empty_store_keep_their_index_entries() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for round in 0..50u64 {
            let dir = tempfile::tempdir().unwrap();
            let clock = TestClock::new(T0);
            let (e, _) = Engine::open(options(dir.path(), &clock)).unwrap();
            e.append(&events(round, 5, T0, 1)).unwrap();
            e.append(&events(round + 1000, 5, T0, 1)).unwrap();
            let all = all_events(&e);
            assert_eq!(all.len(), 10, "round {round}");
            for ev in &all {
                let filter = LogFilter { model: Some(ev.dim(Dim::Model)), ..LogFilter::default() };
                let expect: Vec<u64> = all.iter().rev().filter(|x| filter.matches(x)).map(|x| x.seq).collect();
                let got: Vec<u64> = e.logs(&filter, None, 100).events.iter().map(|x| x.seq).collect();
                assert_eq!(got, expect, "round {round}");
            }
        }
        done.send(()).unwrap();
    });
    // A hang is a failure too.
    finished.recv_timeout(std::time::Duration::from_secs(60)).expect("appends and reads finish");
}

