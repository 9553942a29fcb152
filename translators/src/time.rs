//! Minimal RFC 3339 parsing for `metadata.creationTimestamp` (no clock is ever read).

/// Creation time of objects that carry no `metadata.creationTimestamp`:
/// 2020-01-01T00:00:00Z. A constant (never the load time) so that it survives reloads and
/// restarts; istio breaks ties between equal creation times by name, so such objects are
/// ordered by name.
pub const DEFAULT_CREATE_TIME: (i64, i32) = (1_577_836_800, 0);

/// Seconds and nanoseconds since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> Result<(i64, i32), String> {
    let bad = || "expected an RFC 3339 time like 2024-05-01T10:00:00Z".to_string();
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num =
        |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok()).ok_or_else(bad);
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    let mut nanos = 0i32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        nanos = frac[..digits].parse::<i32>().map_err(|_| bad())? * 10i32.pow(9 - digits as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && &rest[3..4] == ":" =>
        {
            let h: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let m: i64 = rest[4..6].parse().map_err(|_| bad())?;
            let v = h * 3600 + m * 60;
            if rest.starts_with('-') { -v } else { v }
        }
        _ => return Err(bad()),
    };
    Ok((
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset,
        nanos,
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok((0, 0)));
        assert_eq!(
            parse_rfc3339("2024-05-01T10:00:00Z"),
            Ok((1_714_557_600, 0))
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00.5+02:00"),
            Ok((1_714_557_600, 500_000_000))
        );
        assert!(parse_rfc3339("2024-13-01T00:00:00Z").is_err());
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
