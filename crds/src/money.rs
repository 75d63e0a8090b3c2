//! Prices as integers in micro-units.
//!
//! Users write prices as decimal strings in display units (`"2.50"` per GPU-hour); Agora stores and
//! computes with integer micro-units (1 unit = 1_000_000 micro-units) so no amount is ever a float.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-units per display unit.
pub const MICROS_PER_UNIT: u64 = 1_000_000;

/// A positive decimal string with at most nine integer digits and six fractional digits, that is
/// not zero. Written without look-ahead so that RE2 (the API server), `regex` and ECMA engines agree.
pub const POSITIVE_PRICE_PATTERN: &str = r"^([1-9][0-9]{0,8}(\.[0-9]{1,6})?|0\.([1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}|0000[1-9][0-9]?|00000[1-9]))$";

/// A price per GPU-hour in micro-units. Serialized as a decimal string (`"1.90"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(u64);

/// Why a decimal string is not a valid price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("must be a positive decimal string such as \"2.50\", got {0:?}")]
    Malformed(String),
    #[error("has more than 6 decimal places: {0:?}")]
    TooPrecise(String),
    #[error("is too large: {0:?}")]
    TooLarge(String),
}

impl Price {
    /// A price from micro-units per GPU-hour.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// Micro-units per GPU-hour.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Cost in micro-units of `gpu_millis` GPU-milliseconds at this hourly price, rounded up so a
    /// provider is never paid for less than was used and a payer never owes a fraction of a micro-unit.
    pub fn cost_micros(self, gpu_millis: u64) -> u64 {
        let product = u128::from(self.0) * u128::from(gpu_millis);
        let cost = product.div_ceil(3_600_000);
        u64::try_from(cost).unwrap_or(u64::MAX)
    }
}

impl FromStr for Price {
    type Err = PriceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || PriceError::Malformed(s.to_string());
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
            return Err(malformed());
        }
        if frac.len() > 6 {
            return Err(PriceError::TooPrecise(s.to_string()));
        }
        if int.len() > 1 && int.starts_with('0') {
            return Err(malformed());
        }
        if int.len() > 9 {
            return Err(PriceError::TooLarge(s.to_string()));
        }
        let whole: u64 = int.parse().map_err(|_| malformed())?;
        let mut fraction: u64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            fraction += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
        }
        let micros = whole * MICROS_PER_UNIT + fraction;
        if micros == 0 {
            return Err(malformed());
        }
        Ok(Self(micros))
    }
}

impl fmt::Display for Price {
    /// At least two decimals, at most six, trailing zeros beyond the second trimmed: `1.90`, `0.000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_micros(self.0, f)
    }
}

/// Writes an amount of micro-units in display units with 2 to 6 decimals.
pub fn format_micros(micros: u64, f: &mut impl fmt::Write) -> fmt::Result {
    let whole = micros / MICROS_PER_UNIT;
    let frac = format!("{:06}", micros % MICROS_PER_UNIT);
    let trimmed = frac.trim_end_matches('0');
    let shown = if trimmed.len() < 2 {
        &frac[..2]
    } else {
        trimmed
    };
    write!(f, "{whole}.{shown}")
}

/// An amount of micro-units as a display string (`"2.85"`).
pub fn display_micros(micros: u64) -> String {
    let mut s = String::new();
    format_micros(micros, &mut s).expect("writing to a String cannot fail");
    s
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Price {
    fn schema_name() -> Cow<'static, str> {
        "Price".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": POSITIVE_PRICE_PATTERN,
            "description": "A positive decimal amount in display units per GPU-hour, at most 6 decimals, e.g. \"2.50\"."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_display_strings_to_micro_units() {
        assert_eq!("2.50".parse::<Price>().unwrap().micros(), 2_500_000);
        assert_eq!("0.000001".parse::<Price>().unwrap().micros(), 1);
        assert_eq!("12".parse::<Price>().unwrap().micros(), 12_000_000);
        assert_eq!(
            "999999999.999999".parse::<Price>().unwrap().micros(),
            999_999_999_999_999
        );
    }

    #[test]
    fn rejects_zero_negative_and_malformed_prices() {
        for bad in [
            "0", "0.0", "0.000000", "-1", "-0.5", "1.", ".5", "01.5", "1e3", "", "abc", "1.2.3",
            " 1",
        ] {
            assert!(bad.parse::<Price>().is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(
            "1.0000001".parse::<Price>(),
            Err(PriceError::TooPrecise(_))
        ));
        assert!(matches!(
            "1000000000".parse::<Price>(),
            Err(PriceError::TooLarge(_))
        ));
    }

    #[test]
    fn the_schema_pattern_agrees_with_the_parser() {
        let re = regex_lite(POSITIVE_PRICE_PATTERN);
        for s in [
            "2.50",
            "0.1",
            "0.01",
            "0.000001",
            "0.100000",
            "7",
            "999999999.999999",
            "0",
            "0.0",
            "0.000000",
            "-1",
            "1.",
            "01",
            "1.0000001",
            "1000000000",
            "0.0000001",
        ] {
            assert_eq!(
                re(s),
                s.parse::<Price>().is_ok(),
                "pattern and parser disagree on {s:?}"
            );
        }
    }

    #[test]
    fn formats_with_two_to_six_decimals() {
        assert_eq!(Price::from_micros(1_900_000).to_string(), "1.90");
        assert_eq!(Price::from_micros(1).to_string(), "0.000001");
        assert_eq!(Price::from_micros(2_125_000).to_string(), "2.125");
        assert_eq!(display_micros(0), "0.00");
    }

    #[test]
    fn cost_rounds_up_to_the_micro_unit() {
        let p: Price = "3.60".parse().unwrap();
        // One GPU-hour costs exactly the price.
        assert_eq!(p.cost_micros(3_600_000), 3_600_000);
        // One GPU-millisecond at 3.60/h is exactly 1 micro-unit.
        assert_eq!(p.cost_micros(1), 1);
        let q: Price = "1.00".parse().unwrap();
        // 1 ms at 1.00/h is 0.277… micro-units: billed as 1.
        assert_eq!(q.cost_micros(1), 1);
    }

    /// Compiles the pattern with the regex engine of the schema validator the hub uses.
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        let schema = serde_json::json!({"type": "string", "pattern": pattern});
        let validator = jsonschema::validator_for(&schema).unwrap();
        move |s| validator.is_valid(&serde_json::json!(s))
    }
}
