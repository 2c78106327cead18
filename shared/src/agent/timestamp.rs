//! The agent service's timestamps: naive UTC ISO-8601 without an offset, written by Python's
//! `datetime.utcnow().isoformat()` (`"2025-07-14T21:30:05.123456"`, or without the fraction when
//! the microseconds are zero).
//!
//! The client parses them to compare run start times with its own clock (paging `/runs` stops
//! once items start before the run it looks for); the simulator writes them the same way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::Millis;

/// Formats a moment the way the service does: naive UTC, microseconds, no offset.
pub fn format_naive_utc(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() as i64;
    let micros = since.subsec_micros();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if micros == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{micros:06}")
    }
}

/// Parses an ISO-8601 timestamp into milliseconds since the Unix epoch.
///
/// Accepts the service's naive form (read as UTC) and, to be lenient, a trailing `Z` or a
/// `±HH:MM` offset. Returns `None` for anything else rather than guessing.
pub fn parse_to_millis(text: &str) -> Option<Millis> {
    let text = text.trim();
    let bytes = text.as_bytes();
    if bytes.len() < 19 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if bytes[10] != b'T' && bytes[10] != b' ' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let year = num(0..4)?;
    let month = num(5..7)?;
    let day = num(8..10)?;
    let hour = num(11..13)?;
    let minute = num(14..16)?;
    let second = num(17..19)?;
    if bytes[16] != b':'
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis_frac = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms_digits: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis_frac = ms_digits.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let (sign, hhmm) = match rest.as_bytes()[0] {
                b'+' => (1, &rest[1..]),
                b'-' => (-1, &rest[1..]),
                _ => return None,
            };
            let hhmm = hhmm.replace(':', "");
            if hhmm.len() != 4 || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let oh: i64 = hhmm[..2].parse().ok()?;
            let om: i64 = hhmm[2..].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis_frac)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_service_format() {
        let at = UNIX_EPOCH + Duration::from_micros(1_752_528_605_123_456);
        let text = format_naive_utc(at);
        assert_eq!(text, "2025-07-14T21:30:05.123456");
        assert_eq!(parse_to_millis(&text), Some(1_752_528_605_123));
    }

    #[test]
    fn omits_zero_microseconds_like_python() {
        let at = UNIX_EPOCH + Duration::from_secs(1_752_528_605);
        assert_eq!(format_naive_utc(at), "2025-07-14T21:30:05");
    }

    #[test]
    fn reads_offsets_and_rejects_garbage() {
        assert_eq!(
            parse_to_millis("2025-07-14T23:30:05+02:00"),
            parse_to_millis("2025-07-14T21:30:05")
        );
        assert_eq!(
            parse_to_millis("2025-07-14T21:30:05Z"),
            Some(1_752_528_605_000)
        );
        assert_eq!(parse_to_millis("yesterday"), None);
        assert_eq!(parse_to_millis("2025-13-14T21:30:05"), None);
        assert_eq!(parse_to_millis("2025-07-14T21:30:05.abc"), None);
    }
}
