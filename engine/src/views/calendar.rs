//! Local-time bucket boundaries of a trend, as UTC milliseconds.
//!
//! A boundary is the start of a local calendar unit (minute, hour, day, ISO week, month) mapped
//! to UTC: on a fold the earlier instant, in a gap the first instant after the gap. Units whose
//! start falls on or before the previous boundary (a unit swallowed by a gap, or a unit started
//! during the second pass of a fold) add no boundary, so boundaries strictly increase.

use chrono::{DateTime, Datelike, Days, LocalResult, Months, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike};
use chrono_tz::Tz;

use super::Granularity;

/// Trend ranges are clamped to ±(about 95 000 years) so every local date computation stays
/// inside chrono's range, with room for offsets and one month of stepping.
pub const LIMIT_MS: i64 = 3_000_000_000_000_000;

const HOUR_MS: i64 = 3_600_000;

/// The UTC offset in effect at an instant, in milliseconds.
fn offset_ms(tz: Tz, utc_ms: i64) -> Option<i64> {
    let utc = DateTime::from_timestamp_millis(utc_ms)?.naive_utc();
    Some(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc() as i64 * 1000)
}

fn local_of(tz: Tz, utc_ms: i64) -> Option<NaiveDateTime> {
    Some(DateTime::from_timestamp_millis(utc_ms)?.with_timezone(&tz).naive_local())
}

/// The UTC instant a local time stands for: earlier on a fold, first after a gap.
pub fn resolve(tz: Tz, local: NaiveDateTime) -> Option<i64> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.timestamp_millis()),
        LocalResult::Ambiguous(a, b) => Some(a.timestamp_millis().min(b.timestamp_millis())),
        LocalResult::None => gap_end(tz, local.and_utc().timestamp_millis()),
    }
}

/// The first instant whose local time is past `local_ms`, which lies in a gap. Offsets are
/// within ±16 h, so the instant lies within ±26 h of `local_ms` read as UTC; inside that window
/// "local time > local_ms" switches from false to true once (a second switch would need a fold
/// bringing the local time back below a time that never occurs, within a day).
fn gap_end(tz: Tz, local_ms: i64) -> Option<i64> {
    let past = |u: i64| -> Option<bool> { Some(u + offset_ms(tz, u)? > local_ms) };
    let mut lo = local_ms - 26 * HOUR_MS; // false
    let mut hi = local_ms + 26 * HOUR_MS; // true
    if past(lo)? || !past(hi)? {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if past(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The start of the local unit containing `local`.
fn truncate(local: NaiveDateTime, granularity: Granularity) -> Option<NaiveDateTime> {
    let date = local.date();
    Some(match granularity {
        Granularity::Minute => date.and_hms_opt(local.hour(), local.minute(), 0)?,
        Granularity::Hour => date.and_hms_opt(local.hour(), 0, 0)?,
        Granularity::Day => date.and_hms_opt(0, 0, 0)?,
        Granularity::Week => {
            let monday = date.checked_sub_days(Days::new(date.weekday().num_days_from_monday() as u64))?;
            monday.and_hms_opt(0, 0, 0)?
        }
        Granularity::Month => NaiveDate::from_ymd_opt(date.year(), date.month(), 1)?.and_hms_opt(0, 0, 0)?,
    })
}

fn step(local: NaiveDateTime, granularity: Granularity) -> Option<NaiveDateTime> {
    match granularity {
        Granularity::Minute => local.checked_add_signed(chrono::TimeDelta::minutes(1)),
        Granularity::Hour => local.checked_add_signed(chrono::TimeDelta::hours(1)),
        Granularity::Day => local.checked_add_days(Days::new(1)),
        Granularity::Week => local.checked_add_days(Days::new(7)),
        Granularity::Month => local.checked_add_months(Months::new(1)),
    }
}

/// Nominal length of a unit, for estimating a bucket count.
pub fn nominal_ms(granularity: Granularity) -> i64 {
    match granularity {
        Granularity::Minute => 60_000,
        Granularity::Hour => HOUR_MS,
        Granularity::Day => 24 * HOUR_MS,
        Granularity::Week => 7 * 24 * HOUR_MS,
        // The mean Gregorian month.
        Granularity::Month => 2_629_746_000,
    }
}

/// The cuts of `[from, to)`: `from`, every boundary strictly inside, `to`. `Err(())` when there
/// would be more than `max_buckets` buckets. Requires `LIMIT_MS`-clamped, non-empty input.
pub fn cuts(from: i64, to: i64, granularity: Granularity, tz: Tz, max_buckets: usize) -> Result<Vec<i64>, ()> {
    let mut cuts = vec![from];
    let mut local = local_of(tz, from).and_then(|l| truncate(l, granularity));
    let mut last = from;
    while let Some(l) = local.and_then(|l| step(l, granularity)) {
        local = Some(l);
        let Some(boundary) = resolve(tz, l) else { break };
        if boundary <= last {
            continue;
        }
        if boundary >= to {
            break;
        }
        // Pushing this boundary and then `to` would make `cuts.len() + 1` buckets.
        if cuts.len() >= max_buckets {
            return Err(());
        }
        cuts.push(boundary);
        last = boundary;
    }
    cuts.push(to);
    Ok(cuts)
}
