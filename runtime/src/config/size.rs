//! Byte sizes in configuration: `64Mi`, `1G`, `4096`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A number of bytes, written in the configuration as `64Mi`, `512Ki`,
/// `1G` or `4096` ([`parse_size`]) and checked when the file is parsed.
///
/// ```
/// use kubesink::config::ByteSize;
/// assert_eq!("8Mi".parse::<ByteSize>().unwrap().bytes(), 8 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(usize);

impl ByteSize {
    /// `bytes` bytes.
    pub const fn new(bytes: usize) -> Self {
        Self(bytes)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> usize {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_size(text).map(Self)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] {
            if self.0 != 0 && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a size with an optional binary (`Ki`, `Mi`, `Gi`) or decimal
/// (`k`, `M`, `G`) suffix; a trailing `B` is allowed (`64MiB`).
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
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
    use super::*;

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

    #[test]
    fn byte_sizes_parse_from_yaml_strings_and_numbers_and_print_in_units() {
        let size = |yaml: &str| serde_yaml::from_str::<ByteSize>(yaml).map_err(|e| e.to_string());
        assert_eq!(size("64Mi"), Ok(ByteSize::new(64 << 20)));
        assert_eq!(size("4096"), Ok(ByteSize::new(4096)));
        let err = size("lots").unwrap_err();
        assert!(err.contains("`lots` is not a size"), "{err}");
        assert_eq!(ByteSize::new(64 << 20).to_string(), "64Mi");
        assert_eq!(ByteSize::new(1000).to_string(), "1000");
        assert_eq!(ByteSize::new(0).to_string(), "0");
    }
}
