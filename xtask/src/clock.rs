//! UTC calendar dates from Unix time, for CHANGELOG dates and SBOM timestamps (no time crate).

/// Seconds since the Unix epoch now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `(year, month, day, seconds into the day)` of a Unix time, in UTC (Howard Hinnant's
/// days-to-civil algorithm).
fn civil(secs: u64) -> (i64, u32, u32, u64) {
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs % 86_400)
}

/// `YYYY-MM-DD`.
pub fn date(secs: u64) -> String {
    let (y, m, d, _) = civil(secs);
    format!("{y:04}-{m:02}-{d:02}")
}

/// RFC 3339 in UTC: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn timestamp(secs: u64) -> String {
    let (_, _, _, s) = civil(secs);
    format!("{}T{:02}:{:02}:{:02}Z", date(secs), s / 3_600, s % 3_600 / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_convert() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(timestamp(1_796_624_845), "2026-12-07T06:27:25Z");
        assert_eq!(date(4_107_542_400), "2100-03-01");
    }
}
