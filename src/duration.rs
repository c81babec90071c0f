//! The one parser of durations written as text: `250ms`, `90s`, `10m`,
//! `1h`, `30d`; a bare number is milliseconds. Blueprints (through
//! `swarm.duration`), LLM specs and command-line flags all use it.

/// Milliseconds in `s`, or a message saying what is wrong with it.
pub fn parse_ms(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 250ms, 90s, 10m, 1h)"))?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => return Err(format!("`{s}`: unknown unit `{other}` (ms, s, m, h or d)")),
    };
    Ok(n * scale)
}

#[cfg(test)]
mod tests {
    use super::parse_ms;

    #[test]
    fn units_and_bare_numbers() {
        assert_eq!(parse_ms("250ms"), Ok(250.0));
        assert_eq!(parse_ms(" 1.5s "), Ok(1500.0));
        assert_eq!(parse_ms("2m"), Ok(120_000.0));
        assert_eq!(parse_ms("1h"), Ok(3_600_000.0));
        assert_eq!(parse_ms("1d"), Ok(86_400_000.0));
        assert_eq!(parse_ms("40"), Ok(40.0));
        assert!(parse_ms("soon").is_err());
        assert!(parse_ms("5 parsecs").unwrap_err().contains("unknown unit"));
    }
}
