//! FHIR date, dateTime, instant and time text to microseconds.
//!
//! A partial date maps to the start of its period (`2020` → 2020-01-01T00:00:00Z); a dateTime
//! without an offset is read as UTC.

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};

/// Microseconds since the epoch of the start of a FHIR `date` (`2020`, `2020-05`, `2020-05-17`).
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let year = num(b, 0, 4)?;
    let (month, day) = match b.len() {
        4 => (1, 1),
        7 if b[4] == b'-' => (num(b, 5, 2)?, 1),
        10 if b[4] == b'-' && b[7] == b'-' => (num(b, 5, 2)?, num(b, 8, 2)?),
        _ => return None,
    };
    let d = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

/// Microseconds since the epoch of a FHIR `dateTime`: a date, or a date and time with an offset.
pub fn parse_datetime(s: &str) -> Option<i64> {
    match s.find('T') {
        None => parse_date(s),
        Some(10) => {
            let b = s.as_bytes();
            if b[4] != b'-' || b[7] != b'-' {
                return None;
            }
            let date = NaiveDate::from_ymd_opt(num(b, 0, 4)? as i32, num(b, 5, 2)?, num(b, 8, 2)?)?;
            let rest = &s[11..];
            let (time, offset_secs) = split_offset(rest)?;
            let t = parse_clock(time)?;
            let local = date.and_time(t);
            let utc = local.and_utc().timestamp_micros() - offset_secs as i64 * 1_000_000;
            Some(utc)
        }
        _ => None,
    }
}

/// Microseconds since the epoch of a FHIR `instant`: a full date and time with an offset.
pub fn parse_instant(s: &str) -> Option<i64> {
    if s.len() < 20 || s.as_bytes()[10] != b'T' {
        return None;
    }
    let rest = &s[11..];
    if !(rest.ends_with('Z') || rest.contains('+') || rest.contains('-')) {
        return None;
    }
    parse_datetime(s)
}

/// Microseconds since midnight of a FHIR `time` (`14:30:00`, `14:30:00.5`).
pub fn parse_time(s: &str) -> Option<i64> {
    let t = parse_clock(s)?;
    Some(
        (t - NaiveTime::MIN)
            .num_microseconds()
            .expect("a day fits in microseconds"),
    )
}

/// The canonical text of an instant: `2019-08-05T17:33:41.167+00:00`. An instant whose text is
/// different is kept in overflow as well.
pub fn instant_text(micros: i64) -> String {
    use chrono::{Datelike, Timelike};
    match Utc.timestamp_micros(micros).single() {
        Some(t) if (0..=9999).contains(&t.year()) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+00:00",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond() / 1_000_000
        ),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string(),
        None => String::new(),
    }
}

fn split_offset(s: &str) -> Option<(&str, i32)> {
    if let Some(t) = s.strip_suffix('Z') {
        return Some((t, 0));
    }
    if let Some(pos) = s.rfind(['+', '-']) {
        let (t, off) = s.split_at(pos);
        let b = off.as_bytes();
        if b.len() != 6 || b[3] != b':' {
            return None;
        }
        let h = num(b, 1, 2)? as i32;
        let m = num(b, 4, 2)? as i32;
        if h > 14 || m > 59 {
            return None;
        }
        let sign = if b[0] == b'-' { -1 } else { 1 };
        return Some((t, sign * (h * 3600 + m * 60)));
    }
    Some((s, 0))
}

fn parse_clock(s: &str) -> Option<NaiveTime> {
    let b = s.as_bytes();
    if b.len() < 5 || b[2] != b':' {
        return None;
    }
    let h = num(b, 0, 2)?;
    let m = num(b, 3, 2)?;
    let (sec, micros) = if b.len() == 5 {
        (0, 0)
    } else {
        if b.len() < 8 || b[5] != b':' {
            return None;
        }
        let sec = num(b, 6, 2)?;
        let micros = if b.len() > 8 {
            if b[8] != b'.' || b.len() == 9 {
                return None;
            }
            let frac = &b[9..];
            if !frac.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let mut v = 0u32;
            for i in 0..6 {
                v = v * 10 + frac.get(i).map_or(0, |d| (d - b'0') as u32);
            }
            v
        } else {
            0
        };
        (sec, micros)
    };
    // FHIR allows a leap second's 60; chrono takes it as 59 + 1 s of fraction.
    let (sec, micros) = if sec == 60 {
        (59, micros + 1_000_000)
    } else {
        (sec, micros)
    };
    NaiveTime::from_hms_micro_opt(h, m, sec, micros)
}

fn num(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let digits = b.get(at..at + len)?;
    let mut v = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (d - b'0') as u32;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_dates_map_to_their_start() {
        let y = parse_date("2020").unwrap();
        assert_eq!(y, parse_datetime("2020-01-01T00:00:00Z").unwrap());
        assert_eq!(parse_date("2020-05"), parse_date("2020-05-01"));
        assert!(parse_date("2020-13").is_none());
        assert!(parse_date("2020-02-30").is_none());
        assert!(parse_date("20").is_none());
    }

    #[test]
    fn datetimes_are_utc() {
        let a = parse_datetime("2019-08-05T17:33:41.167+10:00").unwrap();
        let b = parse_datetime("2019-08-05T07:33:41.167Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(instant_text(a), "2019-08-05T07:33:41.167+00:00");
        assert!(parse_datetime("2019-08-05T25:00:00Z").is_none());
        assert!(parse_instant("2019-08-05").is_none());
        assert_eq!(parse_time("00:00:01.5"), Some(1_500_000));
    }
}
