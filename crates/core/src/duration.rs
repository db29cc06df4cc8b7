//! Durations as the API writes them: a whole number and a unit, `ms`, `s`, `m`, `h` or
//! `d` (`250ms`, `30s`, `5m`, `1h`, `7d`). One format for group timeouts, backoff and
//! retention ages, shared by the server, the client and the CLI.

use std::time::Duration;

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}")]
pub struct ParseDurationError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Reads `250ms`, `30s`, `5m`, `1h`, `7d`; blanks around it are ignored.
pub fn parse_duration(text: &str) -> Result<Duration, ParseDurationError> {
    let err = |reason| ParseDurationError {
        text: text.to_owned(),
        reason,
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| err("a unit is needed: ms, s, m, h or d (like 30s)"))?;
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(err("expected a whole number and a unit, like 30s"));
    }
    let n: u64 = number.parse().map_err(|_| err("the number is too large"))?;
    let scale = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, ms)| *ms)
        .ok_or_else(|| err("the unit is ms, s, m, h or d (like 30s)"))?;
    let ms = n
        .checked_mul(scale)
        .ok_or_else(|| err("the duration is too long"))?;
    Ok(Duration::from_millis(ms))
}

/// Writes a duration in the largest unit that holds it exactly (`1500ms`, `30s`, `5m`,
/// `1h`, `7d`). The wire has whole milliseconds only, so a fraction of a millisecond is
/// rounded up: a short, non-zero duration never becomes zero.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        ms += 1;
    }
    if ms == 0 {
        return "0s".to_owned();
    }
    let (unit, scale) = UNITS
        .iter()
        .find(|(_, scale)| ms.is_multiple_of(u128::from(*scale)))
        .copied()
        .unwrap_or(("ms", 1));
    format!("{}{unit}", ms / u128::from(scale))
}

/// Serde adapters for durations written as strings with a unit, for
/// `#[serde(with = "tributary_core::duration::text")]`.
pub mod text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::{format_duration, parse_duration};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// The same for an optional duration (`null` or absent is `None`).
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&format_duration(*d)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    /// The same for a list of durations.
    pub mod list {
        use super::*;

        pub fn serialize<S: Serializer>(list: &[Duration], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(list.iter().map(|d| format_duration(*d)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|t| parse_duration(t).map_err(serde::de::Error::custom))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_write_with_units() {
        for (text, ms) in [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("7d", 604_800_000),
            ("0s", 0),
            (" 7s ", 7_000),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "",
            "30",
            "s",
            "1.5s",
            "-1s",
            "10 s",
            "3w",
            "99999999999999999999s",
            "999999999999999999d",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains("invalid duration"), "{bad}: {e}");
        }
        assert!(parse_duration("30").unwrap_err().reason.contains("unit"));

        for (ms, text) in [
            (0, "0s"),
            (1500, "1500ms"),
            (30_000, "30s"),
            (90_000, "90s"),
            (300_000, "5m"),
            (7_200_000, "2h"),
            (90_000_000, "25h"),
            (172_800_000, "2d"),
        ] {
            assert_eq!(format_duration(Duration::from_millis(ms)), text);
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)));
        }
        assert_eq!(format_duration(Duration::from_micros(1)), "1ms");
        assert_eq!(format_duration(Duration::from_micros(1_000_001)), "1001ms");
    }
}
