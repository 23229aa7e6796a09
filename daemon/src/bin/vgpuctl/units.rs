//! Numbers for people: bytes in KiB/MiB/GiB, nanoseconds in s/min/h,
//! counts and rates with k/M/G, and UTC timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// `512 B`, `64 KiB`, `256 MiB`, `1.5 GiB`: the largest unit of which
/// there is at least one, with one decimal when it is not whole.
pub fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if n >= size {
            return format!("{} {name}", one_decimal(n as f64 / size as f64));
        }
    }
    format!("{n} B")
}

/// `0 s`, `850 ms`, `12.5 s`, `3 min 20 s`, `5 h 02 min`, `3 d 4 h`.
pub fn duration_ns(ns: u64) -> String {
    let ms = ns / 1_000_000;
    let s = ns / 1_000_000_000;
    match s {
        0 if ms == 0 && ns > 0 => format!("{} µs", ns / 1000),
        0 if ms == 0 => "0 s".into(),
        0 => format!("{ms} ms"),
        1..60 => format!("{} s", one_decimal(ns as f64 / 1e9)),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `999`, `12.3k`, `4.5M`, `7.8G`.
pub fn count(n: u64) -> String {
    scaled(n as f64, "")
}

/// A per-second rate: `0`, `0.5`, `12`, `12.3k`.
pub fn rate(per_s: f64) -> String {
    if per_s < 10.0 && per_s.fract() != 0.0 {
        return one_decimal(per_s);
    }
    scaled(per_s, "")
}

/// A percentage with one decimal: `12.5%`.
pub fn percent(p: f64) -> String {
    format!("{p:.1}%")
}

fn scaled(n: f64, suffix: &str) -> String {
    const STEPS: [(&str, f64); 3] = [("G", 1e9), ("M", 1e6), ("k", 1e3)];
    for (name, size) in STEPS {
        if n >= size {
            return format!("{}{name}{suffix}", one_decimal(n / size));
        }
    }
    format!("{}{suffix}", n.round() as u64)
}

/// `1.5`, `2` (not `2.0`).
fn one_decimal(x: f64) -> String {
    let text = format!("{x:.1}");
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

/// Now in UTC, ISO 8601 to the second: `2026-12-07T20:48:31Z`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Seconds since the epoch as ISO 8601 UTC, by the days-to-civil algorithm
/// (H. Hinnant) so that no time-zone crate is needed.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_take_the_largest_whole_unit() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(256 << 20), "256 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(4 << 30), "4 GiB");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_ns(0), "0 s");
        assert_eq!(duration_ns(1500), "1 µs");
        assert_eq!(duration_ns(850_000_000), "850 ms");
        assert_eq!(duration_ns(12_500_000_000), "12.5 s");
        assert_eq!(duration_ns(200_000_000_000), "3 min 20 s");
        assert_eq!(duration_ns(18_120_000_000_000), "5 h 02 min");
        assert_eq!(duration_ns(273_600_000_000_000), "3 d 4 h");
    }

    #[test]
    fn counts_and_rates_are_scaled() {
        assert_eq!(count(999), "999");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(4_500_000), "4.5M");
        assert_eq!(rate(0.5), "0.5");
        assert_eq!(rate(1500.0), "1.5k");
        assert_eq!(percent(12.345), "12.3%");
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_675_311), "2026-12-07T20:28:31Z");
    }
}
