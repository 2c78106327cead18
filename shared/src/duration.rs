//! Human-friendly durations (`"30s"`, `"10m"`, `"1h 30m"`, or an integer number of seconds).
//!
//! Definitions are written by people, so durations are strings; the engine only ever sees
//! milliseconds. The original text is kept so a definition round-trips unchanged.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration as written in a workflow definition.
#[derive(Clone, PartialEq, Eq)]
pub struct DurationSpec {
    text: String,
    millis: u64,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (write it like \"30s\", \"10m\" or \"1h 30m\")")]
pub struct DurationError {
    pub text: String,
    pub reason: String,
}

impl DurationSpec {
    /// Parse `"30s"`, `"5m"`, `"1h 30m"`, `"250ms"` or a bare number of seconds.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let trimmed = text.trim();
        let err = |reason: &str| DurationError {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        if trimmed.is_empty() {
            return Err(err("it is empty"));
        }
        let millis = if let Ok(secs) = trimmed.parse::<u64>() {
            secs.checked_mul(1000)
                .ok_or_else(|| err("it is too large"))?
        } else {
            let d = humantime::parse_duration(trimmed).map_err(|e| err(&e.to_string()))?;
            u64::try_from(d.as_millis()).map_err(|_| err("it is too large"))?
        };
        Ok(Self {
            text: trimmed.to_string(),
            millis,
        })
    }

    /// Build from milliseconds (used by code, not by people).
    pub fn from_millis(millis: u64) -> Self {
        let text = humantime::format_duration(Duration::from_millis(millis)).to_string();
        Self { text, millis }
    }

    pub fn from_secs(secs: u64) -> Self {
        Self::from_millis(secs.saturating_mul(1000))
    }

    pub fn as_millis(&self) -> u64 {
        self.millis
    }

    /// Milliseconds as the signed type the engine's clock uses.
    pub fn millis_i64(&self) -> i64 {
        i64::try_from(self.millis).unwrap_or(i64::MAX)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({}ms)", self.text, self.millis)
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a duration like \"30s\", \"10m\", \"1h 30m\" or a number of seconds",
            )
        })? {
            Raw::Secs(s) => Ok(Self {
                text: format!("{s}s"),
                millis: s.saturating_mul(1000),
            }),
            Raw::Text(t) => Self::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(DurationSpec::parse("30s").unwrap().as_millis(), 30_000);
        assert_eq!(DurationSpec::parse("10m").unwrap().as_millis(), 600_000);
        assert_eq!(
            DurationSpec::parse("1h 30m").unwrap().as_millis(),
            5_400_000
        );
        assert_eq!(DurationSpec::parse("250ms").unwrap().as_millis(), 250);
        assert_eq!(DurationSpec::parse("45").unwrap().as_millis(), 45_000);
    }

    #[test]
    fn refuses_nonsense() {
        assert!(DurationSpec::parse("").is_err());
        assert!(DurationSpec::parse("ten minutes").is_err());
        assert!(DurationSpec::parse("5 parsecs").is_err());
        assert!(DurationSpec::parse("-5s").is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let d: DurationSpec = serde_json::from_str("\"2m\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2m\"");
        let n: DurationSpec = serde_json::from_str("90").unwrap();
        assert_eq!(n.as_millis(), 90_000);
    }
}
