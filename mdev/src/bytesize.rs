//! Byte sizes as people write them: binary units only (KiB, MiB, GiB, TiB),
//! printed in the largest unit that is exact and parsed case-insensitively.
//!
//! Decimal units (KB, MB, GB) are refused rather than guessed: "4GB" means
//! 4 000 000 000 bytes to some readers and 4 GiB to others, and a VRAM size
//! off by 7% is a bad surprise.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];

/// A number of bytes, displayed as "1 GiB", "1536 MiB", "4097 B".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0 {
            for (unit, shift) in UNITS {
                if self.0.trailing_zeros() >= shift {
                    return write!(f, "{} {unit}", self.0 >> shift);
                }
            }
        }
        write!(f, "{} B", self.0)
    }
}

/// A size that did not parse.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ByteSizeError {
    /// Nothing but whitespace.
    #[error("empty size")]
    Empty,
    /// The text does not start with a decimal number.
    #[error("size `{0}` does not start with a number")]
    NoNumber(String),
    /// The number has a fractional part.
    #[error("size `{0}` has a fraction: write it in a smaller unit (1536 MiB, not 1.5 GiB)")]
    Fraction(String),
    /// A decimal (power-of-ten) unit, which is ambiguous.
    #[error("unit `{unit}` is ambiguous: sizes are binary, write `{suggestion}`")]
    DecimalUnit {
        /// The unit as written.
        unit: String,
        /// The binary unit to write instead.
        suggestion: &'static str,
    },
    /// A unit that is not one of B, KiB, MiB, GiB, TiB.
    #[error("unknown unit `{0}`: use B, KiB, MiB, GiB or TiB")]
    UnknownUnit(String),
    /// The size does not fit in 64 bits.
    #[error("size `{0}` is too large")]
    Overflow(String),
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    /// Parses "4GiB", "512 MiB", "1024kib", "4096" (bytes) or "4096 B".
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ByteSizeError::Empty);
        }
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, rest) = text.split_at(digits);
        if number.is_empty() {
            return Err(ByteSizeError::NoNumber(text.to_owned()));
        }
        if rest.starts_with(['.', ',']) {
            return Err(ByteSizeError::Fraction(text.to_owned()));
        }
        let unit = rest.trim_start();
        let shift = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "kib" => 10,
            "mib" => 20,
            "gib" => 30,
            "tib" => 40,
            lower => {
                let suggestion = match lower {
                    "k" | "kb" => "KiB",
                    "m" | "mb" => "MiB",
                    "g" | "gb" => "GiB",
                    "t" | "tb" => "TiB",
                    _ => return Err(ByteSizeError::UnknownUnit(unit.to_owned())),
                };
                return Err(ByteSizeError::DecimalUnit {
                    unit: unit.to_owned(),
                    suggestion,
                });
            }
        };
        let overflow = || ByteSizeError::Overflow(text.to_owned());
        // Only ASCII digits reach here, so the parse can fail only by size.
        let count: u64 = number.parse().map_err(|_| overflow())?;
        count
            .checked_mul(1 << shift)
            .map(ByteSize)
            .ok_or_else(overflow)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(text: &str) -> Result<u64, ByteSizeError> {
        text.parse::<ByteSize>().map(ByteSize::bytes)
    }

    #[test]
    fn display_uses_the_largest_exact_unit() {
        assert_eq!(ByteSize(1 << 30).to_string(), "1 GiB");
        assert_eq!(ByteSize(512 << 20).to_string(), "512 MiB");
        assert_eq!(ByteSize(1536 << 20).to_string(), "1536 MiB");
        assert_eq!(ByteSize(3 << 40).to_string(), "3 TiB");
        assert_eq!(ByteSize(4 << 10).to_string(), "4 KiB");
    }

    #[test]
    fn display_falls_back_to_bytes() {
        assert_eq!(ByteSize(0).to_string(), "0 B");
        assert_eq!(ByteSize(4097).to_string(), "4097 B");
        assert_eq!(ByteSize(u64::MAX).to_string(), "18446744073709551615 B");
    }

    #[test]
    fn parses_binary_units_with_or_without_a_space() {
        assert_eq!(parse("4GiB"), Ok(4 << 30));
        assert_eq!(parse("512 MiB"), Ok(512 << 20));
        assert_eq!(parse("1024KiB"), Ok(1 << 20));
        assert_eq!(parse("2 TiB"), Ok(2 << 40));
        assert_eq!(parse(" 7 B "), Ok(7));
    }

    #[test]
    fn parses_a_bare_number_as_bytes() {
        assert_eq!(parse("4096"), Ok(4096));
    }

    #[test]
    fn units_are_case_insensitive() {
        assert_eq!(parse("1gib"), Ok(1 << 30));
        assert_eq!(parse("1GIB"), Ok(1 << 30));
        assert_eq!(parse("1mIb"), Ok(1 << 20));
    }

    #[test]
    fn decimal_units_are_refused_with_the_binary_suggestion() {
        let err = parse("4GB").unwrap_err();
        assert_eq!(
            err,
            ByteSizeError::DecimalUnit {
                unit: "GB".into(),
                suggestion: "GiB"
            }
        );
        assert!(err.to_string().contains("GiB"));
        assert!(matches!(
            parse("1 kb"),
            Err(ByteSizeError::DecimalUnit {
                suggestion: "KiB",
                ..
            })
        ));
        assert!(matches!(
            parse("2M"),
            Err(ByteSizeError::DecimalUnit {
                suggestion: "MiB",
                ..
            })
        ));
    }

    #[test]
    fn malformed_sizes_are_refused() {
        assert_eq!(parse("  "), Err(ByteSizeError::Empty));
        assert_eq!(parse("GiB"), Err(ByteSizeError::NoNumber("GiB".into())));
        assert_eq!(
            parse("-1 GiB"),
            Err(ByteSizeError::NoNumber("-1 GiB".into()))
        );
        assert_eq!(
            parse("1.5GiB"),
            Err(ByteSizeError::Fraction("1.5GiB".into()))
        );
        assert_eq!(
            parse("3 PiB"),
            Err(ByteSizeError::UnknownUnit("PiB".into()))
        );
        assert_eq!(
            parse("3 GiB x"),
            Err(ByteSizeError::UnknownUnit("GiB x".into()))
        );
    }

    #[test]
    fn sizes_beyond_64_bits_are_refused() {
        assert_eq!(
            parse("16777216 TiB"),
            Err(ByteSizeError::Overflow("16777216 TiB".into()))
        );
        assert!(matches!(
            parse("99999999999999999999"),
            Err(ByteSizeError::Overflow(_))
        ));
        assert_eq!(parse("16777215 TiB"), Ok(16_777_215 << 40));
    }

    proptest! {
        #[test]
        fn display_round_trips_through_parse(bytes in any::<u64>(), shift in 0u32..48) {
            // Low zero bits make whole KiB..TiB likely, not just bytes.
            let bytes = bytes << shift;
            let size = ByteSize(bytes);
            prop_assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
        }

        #[test]
        fn any_spelling_of_a_unit_parses_to_the_same_bytes(
            count in 0u64..1 << 20,
            unit in 0usize..4,
            space in any::<bool>(),
            lowercase in any::<bool>(),
        ) {
            let (name, shift) = UNITS[unit];
            let name = if lowercase { name.to_ascii_lowercase() } else { name.to_owned() };
            let text = format!("{count}{}{name}", if space { " " } else { "" });
            prop_assert_eq!(parse(&text), Ok(count << shift));
        }
    }
}
