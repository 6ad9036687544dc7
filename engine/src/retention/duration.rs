//! Durations in settings and flags: `90s`, `30m`, `12h`, `7d`, `2w`, or a
//! plain number of seconds; `forever` (or `off`) for no limit.

use std::time::Duration;

/// Parses a retention duration; `Ok(None)` means no limit.
pub fn parse(s: &str) -> Result<Option<Duration>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("forever") || t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_secs = match unit.trim() {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 7.0 * 86_400.0,
        other => {
            return Err(format!(
                "bad duration {s:?}: unknown unit {other:?} (use s, m, h, d or w, e.g. \"7d\"; or \"forever\")"
            ))
        }
    };
    let n: f64 = num.parse().map_err(|_| {
        format!("bad duration {s:?}: expected a number and a unit, e.g. \"7d\", \"12h\" or \"forever\"")
    })?;
    let secs = n * unit_secs;
    if !(secs.is_finite() && (0.0..1e12).contains(&secs)) {
        return Err(format!("bad duration {s:?}: out of range"));
    }
    Ok(Some(Duration::from_secs_f64(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_forever_and_mistakes() {
        assert_eq!(parse("7d").unwrap(), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("90").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(parse("1.5h").unwrap(), Some(Duration::from_secs(5400)));
        assert_eq!(parse(" 2w ").unwrap(), Some(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse("forever").unwrap(), None);
        assert!(parse("7 days").unwrap_err().contains("unknown unit"));
        assert!(parse("d").unwrap_err().contains("expected a number"));
        assert!(parse("-1d").is_err());
    }
}
