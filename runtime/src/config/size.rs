//! Byte sizes in configuration: `64Mi`, `1G`, `4096`.

/// Parses a size with an optional binary (`Ki`, `Mi`, `Gi`) or decimal
/// (`k`, `M`, `G`) suffix; a trailing `B` is allowed (`64MiB`).
///
/// ```
/// assert_eq!(kubesink::config::parse_size("64Mi"), Ok(64 << 20));
/// ```
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let t = t.strip_suffix('B').unwrap_or(t);
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let mult: usize = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(format!("`{text}` is not a size (use e.g. 64Mi, 512Ki, 1G)")),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (use e.g. 64Mi, 512Ki, 1G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("Mi").is_err());
        assert!(parse_size("12Xi").is_err());
    }
}
