//! UTC timestamps for messages and `--json` (RFC 3339), without a date crate.

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Formats Unix seconds for people: `YYYY-MM-DD HH:MM:SS UTC`.
pub fn human(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// Appends `n` in decimal: for text built on every login (log lines, temp
/// file names) without the `core::fmt` machinery. Two
/// digits per division, from a table.
pub fn push_decimal(out: &mut String, mut n: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        if n == 0 {
            break;
        }
    }
    // A number with an odd count of digits got a leading zero in its first
    // pair; 0 itself keeps its one digit.
    if digits[at] == b'0' && at + 1 < digits.len() {
        at += 1;
    }
    out.reserve(digits.len() - at);
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// Days-to-civil conversion (Howard Hinnant's algorithm, proleptic Gregorian).
fn civil(unix: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known instants (checked with `date -u -d @N`) format exactly.
    #[test]
    fn known_instants_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_910_520_000), "2030-07-17T12:00:00Z");
        assert_eq!(rfc3339(20_000_000_000), "2603-10-11T11:33:20Z");
        assert_eq!(human(1_781_524_800), "2026-06-15 12:00:00 UTC");
    }

    /// Decimal text is what `Display` gives, at the edges too.
    #[test]
    fn push_decimal_matches_display() {
        for n in [
            0,
            1,
            7,
            9,
            10,
            11,
            42,
            99,
            100,
            101,
            999,
            1000,
            12_345,
            1_907_755_200,
            4_294_967_295,
            u64::MAX,
        ] {
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }
}
