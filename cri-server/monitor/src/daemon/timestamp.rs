//! RFC 3339 timestamps in UTC with nine fractional digits (Go's RFC3339Nano layout, kept at a
//! fixed width): `2026-11-22T05:30:01.123456789Z`. No calendar crate: a days-to-civil
//! conversion does it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of a formatted timestamp.
pub const LEN: usize = 30;

/// Nanoseconds since the Unix epoch, now.
pub fn now_unix_nanos() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Formats `unix_nanos` as `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ`.
pub fn format(unix_nanos: i64) -> [u8; LEN] {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);

    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut out[0..4], year.clamp(0, 9999) as u32);
    put_digits(&mut out[5..7], month);
    put_digits(&mut out[8..10], day);
    put_digits(&mut out[11..13], sod / 3600);
    put_digits(&mut out[14..16], sod / 60 % 60);
    put_digits(&mut out[17..19], sod % 60);
    put_digits(&mut out[20..29], nanos);
    out
}

fn put_digits(slot: &mut [u8], mut value: u32) {
    for b in slot.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(nanos: i64) -> String {
        String::from_utf8(format(nanos).to_vec()).unwrap()
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (leap day of a century leap year) 12:34:56.000000001
        assert_eq!(
            fmt(951_827_696_000_000_001),
            "2000-02-29T12:34:56.000000001Z"
        );
        // 2026-11-22T05:30:01.123456789Z
        assert_eq!(
            fmt(1_795_325_401_123_456_789),
            "2026-11-22T05:30:01.123456789Z"
        );
        // 2100-03-01 (2100 is not a leap year)
        assert_eq!(
            fmt(4_107_542_400_000_000_000),
            "2100-03-01T00:00:00.000000000Z"
        );
        assert_eq!(fmt(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn days_round_trip_over_four_centuries() {
        // Walk day by day and check the calendar advances by exactly one day each time.
        let (mut y, mut m, mut d) = civil_from_days(-1);
        for days in 0..(146_097 * 2) {
            let next = civil_from_days(days);
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ][(m - 1) as usize];
            let expected = if d < month_len {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            assert_eq!(next, expected, "day {days}");
            (y, m, d) = next;
        }
    }
}
