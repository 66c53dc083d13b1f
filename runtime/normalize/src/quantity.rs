//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`, `nvidia.com/gpu: 1`):
//! parse, add, compare and print them back in Kubernetes' canonical form, so
//! that per-pod resources can be summed over containers and maxed against
//! init containers the way Kubernetes (and KubeDL) do.
//!
//! A quantity is held exactly as an integer number of nano-units (10⁻⁹), like
//! Kubernetes' own `Quantity` does for everything it can represent: digits
//! finer than a nano-unit are rounded up. Each quantity remembers the format
//! it was written in (binary `Ki`, decimal `k`, or exponent `e3`); a sum keeps
//! the format of its first operand, as `Quantity.Add` does.

use std::cmp::Ordering;
use std::fmt;

/// Nano-units per unit.
const NANO: i128 = 1_000_000_000;

/// Why a quantity string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not follow the quantity grammar.
    #[error("`{0}` is not a quantity (expected e.g. `500m`, `2`, `1.5Gi`, `1e3`)")]
    Syntax(String),
    /// The value is too large to hold.
    #[error("quantity `{0}` is out of range")]
    OutOfRange(String),
}

/// How a quantity was written, which decides how it is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Powers of 1024: `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`.
    BinarySi,
    /// Powers of 1000: `n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`.
    DecimalSi,
    /// `e`/`E` followed by a (signed) power of ten.
    DecimalExponent,
}

/// An exact quantity: `nanos` × 10⁻⁹, and the format it prints in.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

/// Largest power of ten accepted in a value (keeps every step in `i128`).
const MAX_EXP10: i32 = 24;

impl Quantity {
    /// Parses a quantity as Kubernetes writes it:
    /// `[+-]digits[.digits][suffix]` with suffix one of the binary (`Ki`..`Ei`)
    /// or decimal (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`) SI suffixes, or
    /// an exponent `e<int>` / `E<int>`.
    ///
    /// ```
    /// use kubesink_normalize::quantity::Quantity;
    /// let q = Quantity::parse("1.5Gi").unwrap();
    /// assert_eq!(q.to_string(), "1536Mi");
    /// ```
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let syntax = || QuantityError::Syntax(text.to_string());
        let range = || QuantityError::OutOfRange(text.to_string());
        let s = text.trim();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        // The number: digits with at most one '.', at least one digit.
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_len);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(syntax());
        }
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(range());
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| syntax())?
        };
        // value = mantissa × 10^(-frac_len) × multiplier
        let frac_len = i32::try_from(frac_part.len()).map_err(|_| range())?;
        let (format, exp10, pow1024) = match suffix {
            "" => (Format::DecimalSi, 0, 0),
            "n" => (Format::DecimalSi, -9, 0),
            "u" => (Format::DecimalSi, -6, 0),
            "m" => (Format::DecimalSi, -3, 0),
            "k" => (Format::DecimalSi, 3, 0),
            "M" => (Format::DecimalSi, 6, 0),
            "G" => (Format::DecimalSi, 9, 0),
            "T" => (Format::DecimalSi, 12, 0),
            "P" => (Format::DecimalSi, 15, 0),
            "E" => (Format::DecimalSi, 18, 0),
            "Ki" => (Format::BinarySi, 0, 1),
            "Mi" => (Format::BinarySi, 0, 2),
            "Gi" => (Format::BinarySi, 0, 3),
            "Ti" => (Format::BinarySi, 0, 4),
            "Pi" => (Format::BinarySi, 0, 5),
            "Ei" => (Format::BinarySi, 0, 6),
            exp if exp.starts_with(['e', 'E']) => {
                let e = &exp[1..];
                let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                let e: i32 = e.parse().map_err(|_| range())?;
                (Format::DecimalExponent, e, 0)
            }
            _ => return Err(syntax()),
        };
        // Scale to nano-units: mantissa × 10^(9 + exp10 - frac_len) × 1024^pow.
        let shift = 9 + exp10 - frac_len;
        let mut nanos = mantissa;
        if pow1024 > 0 {
            nanos = nanos
                .checked_mul(1024_i128.pow(pow1024))
                .ok_or_else(range)?;
        }
        if shift >= 0 {
            if shift > MAX_EXP10 + 9 {
                return if nanos == 0 {
                    Ok(Self::zero(format))
                } else {
                    Err(range())
                };
            }
            nanos = nanos
                .checked_mul(10_i128.pow(shift.unsigned_abs()))
                .ok_or_else(range)?;
        } else {
            // Finer than a nano-unit: round up, as Kubernetes does.
            let div = if -shift > 38 {
                None
            } else {
                10_i128.checked_pow(shift.unsigned_abs())
            };
            nanos = match div {
                Some(d) => (nanos + d - 1) / d,
                None => i128::from(nanos > 0),
            };
        }
        if nanos > 10_i128.pow((MAX_EXP10 + 9).unsigned_abs()) {
            return Err(range());
        }
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// Zero in the given format.
    pub fn zero(format: Format) -> Self {
        Self { nanos: 0, format }
    }

    /// The format the quantity prints in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The value in milli-units, rounded up (e.g. millicores for `cpu`).
    pub fn millis(&self) -> i128 {
        let d = 1_000_000;
        self.nanos.div_euclid(d) + i128::from(self.nanos.rem_euclid(d) != 0)
    }

    fn fmt_decimal(&self, f: &mut fmt::Formatter<'_>, exponent: bool) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        // Largest power of 1000 (from 10^18 down to 10^-9) dividing the value.
        const SUFFIXES: [(i32, &str); 10] = [
            (18, "E"),
            (15, "P"),
            (12, "T"),
            (9, "G"),
            (6, "M"),
            (3, "k"),
            (0, ""),
            (-3, "m"),
            (-6, "u"),
            (-9, "n"),
        ];
        for (exp, suffix) in SUFFIXES {
            let unit = 10_i128.pow((exp + 9).unsigned_abs());
            if self.nanos % unit == 0 {
                let n = self.nanos / unit;
                return if !exponent {
                    write!(f, "{n}{suffix}")
                } else if exp == 0 {
                    write!(f, "{n}")
                } else {
                    write!(f, "{n}e{exp}")
                };
            }
        }
        // Unreachable in practice: every value is a whole number of nano-units.
        write!(f, "{}n", self.nanos)
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;

    /// The sum, in the format of `self` (like Kubernetes' `Quantity.Add`).
    fn add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: self.format,
        }
    }
}

impl fmt::Display for Quantity {
    /// Kubernetes' canonical form: the largest suffix of the quantity's
    /// format that keeps the number whole (`1500m`, `2`, `1536Mi`, `1e3`).
    /// Binary quantities under 1024 or with a fraction print as decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.format {
            Format::DecimalSi => self.fmt_decimal(f, false),
            Format::DecimalExponent => self.fmt_decimal(f, true),
            Format::BinarySi => {
                if self.nanos % NANO != 0 || self.nanos.abs() < 1024 * NANO {
                    return self.fmt_decimal(f, false);
                }
                let n = self.nanos / NANO;
                const SUFFIXES: [(u32, &str); 6] = [
                    (6, "Ei"),
                    (5, "Pi"),
                    (4, "Ti"),
                    (3, "Gi"),
                    (2, "Mi"),
                    (1, "Ki"),
                ];
                for (pow, suffix) in SUFFIXES {
                    let unit = 1024_i128.pow(pow);
                    if n % unit == 0 {
                        return write!(f, "{}{suffix}", n / unit);
                    }
                }
                write!(f, "{n}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_decimal_suffixes_exactly() {
        assert_eq!(q("500m").nanos, 500_000_000);
        assert_eq!(q("2").nanos, 2 * NANO);
        assert_eq!(q("1k").nanos, 1000 * NANO);
        assert_eq!(q("1M").nanos, 1_000_000 * NANO);
        assert_eq!(q("3G").nanos, 3_000_000_000 * NANO);
        assert_eq!(q("1T").nanos, 10_i128.pow(12) * NANO);
        assert_eq!(q("1P").nanos, 10_i128.pow(15) * NANO);
        assert_eq!(q("1E").nanos, 10_i128.pow(18) * NANO);
        assert_eq!(q("250u").nanos, 250_000);
        assert_eq!(q("7n").nanos, 7);
        assert_eq!(q("0.5").nanos, NANO / 2);
        assert_eq!(q(".5").nanos, NANO / 2);
        assert_eq!(q("1.").nanos, NANO);
        assert_eq!(q("+1").nanos, NANO);
        assert_eq!(q("-1").nanos, -NANO);
    }

    #[test]
    fn parses_binary_suffixes_exactly() {
        assert_eq!(q("1Ki").nanos, 1024 * NANO);
        assert_eq!(q("1Mi").nanos, 1024 * 1024 * NANO);
        assert_eq!(q("1.5Gi").nanos, 1536 * 1024 * 1024 * NANO);
        assert_eq!(q("2Ti").nanos, 2 * 1024_i128.pow(4) * NANO);
        assert_eq!(q("1Pi").nanos, 1024_i128.pow(5) * NANO);
        assert_eq!(q("1Ei").nanos, 1024_i128.pow(6) * NANO);
        assert_eq!(q("1Gi").format(), Format::BinarySi);
    }

    #[test]
    fn parses_exponents() {
        assert_eq!(q("1e3").nanos, 1000 * NANO);
        assert_eq!(q("1E3").nanos, 1000 * NANO);
        assert_eq!(q("1.5e-3").nanos, 1_500_000);
        assert_eq!(q("12e+2").nanos, 1200 * NANO);
        assert_eq!(q("1e3").format(), Format::DecimalExponent);
    }

    #[test]
    fn rounds_below_a_nano_unit_up() {
        assert_eq!(q("0.0000000001").nanos, 1);
        assert_eq!(q("1e-20").nanos, 1);
        assert_eq!(q("0e-20").nanos, 0);
    }

    #[test]
    fn rejects_garbage_naming_the_text() {
        for bad in [
            "", "m", "1.2.3", "1x", "1mi", "abc", "1e", "1e+", "--1", "1 Gi", "1KiB",
        ] {
            let err = Quantity::parse(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        assert!(matches!(
            Quantity::parse("1e400"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(
            Quantity::parse("9999999999999999999999999999999999Ei"),
            Err(QuantityError::OutOfRange(_))
        ));
    }

    #[test]
    fn prints_canonical_forms() {
        for (input, canonical) in [
            ("0.5", "500m"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("2000", "2k"),
            ("1500", "1500"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("0", "0"),
            ("0Gi", "0"),
            ("512Ki", "512Ki"),
            ("1e3", "1e3"),
            ("1.5e3", "1500"),
            ("100n", "100n"),
            ("0.1m", "100u"),
            ("-2", "-2"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn small_binary_values_print_as_decimal() {
        let v = Quantity {
            nanos: 1000 * NANO,
            format: Format::BinarySi,
        };
        assert_eq!(v.to_string(), "1k");
        let frac = Quantity {
            nanos: 2048 * NANO + 1,
            format: Format::BinarySi,
        };
        assert_eq!(frac.to_string(), "2048000000001n");
    }

    #[test]
    fn sums_keep_the_first_operands_format() {
        assert_eq!((q("500m") + q("1")).to_string(), "1500m");
        assert_eq!((q("1Gi") + q("512Mi")).to_string(), "1536Mi");
        assert_eq!((q("1G") + q("1Gi")).to_string(), "2073741824");
        assert_eq!((q("1Gi") + q("1G")).to_string(), "2073741824");
        assert_eq!((q("100m") + q("200m") + q("700m")).to_string(), "1");
    }

    #[test]
    fn compares_by_value_across_formats() {
        assert!(q("1Gi") > q("1G"));
        assert!(q("999m") < q("1"));
        assert_eq!(q("1k"), q("1000"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("1500m").millis(), 1500);
        assert_eq!(q("1n").millis(), 1);
    }
}
