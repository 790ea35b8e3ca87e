//! One timestamp format for the whole API: RFC 3339 in UTC with a `Z` and millisecond
//! precision (`2026-11-30T11:36:26.123Z`), in bodies, SSE, webhooks and event payloads.
//!
//! The database stores UTC as `NaiveDateTime`; these serde adapters write it with the `Z` so a
//! client never has to guess the zone. Inputs accept any RFC 3339 offset and, as the seed's
//! Python clients send `datetime.utcnow().isoformat()`, a timestamp without a zone, read as UTC.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Formats a stored UTC time the API's way.
pub fn format(at: NaiveDateTime) -> String {
    at.and_utc().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Formats an aware time the API's way.
pub fn format_utc(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The current time, formatted the API's way.
pub fn now() -> String {
    format_utc(Utc::now())
}

/// Reads an RFC 3339 time (any offset, converted to UTC) or a zone-less ISO 8601 time
/// (`2026-11-30T11:36:26.123456`, read as UTC).
pub fn parse(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    for pattern in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, pattern) {
            return Ok(at.and_utc());
        }
    }
    Err("expected an RFC 3339 timestamp such as 2026-11-30T11:36:26Z (a time without a zone is read as UTC)".into())
}

/// `#[serde(with = "crate::platform::time::utc")]` for a `NaiveDateTime` holding UTC.
pub mod utc {
    use super::*;

    pub fn serialize<S: Serializer>(at: &NaiveDateTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map(|at| at.naive_utc()).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "crate::platform::time::utc_option")]` for an `Option<NaiveDateTime>`.
pub mod utc_option {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<NaiveDateTime>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_some(&format(*at)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<NaiveDateTime>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| parse(&text).map(|at| at.naive_utc()).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// `#[serde(with = "crate::platform::time::aware")]` for a `DateTime<Utc>` (requests: zone-less
/// input read as UTC; output with `Z`).
pub mod aware {
    use super::*;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_utc(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(default, with = "crate::platform::time::aware_option")]` for an `Option<DateTime<Utc>>`.
pub mod aware_option {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_some(&format_utc(*at)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoned_and_zone_less_inputs_read_as_the_same_utc_instant() {
        let zoned = parse("2026-11-30T12:36:26.5+01:00").unwrap();
        let plain = parse("2026-11-30T11:36:26.500000").unwrap();
        let z = parse("2026-11-30T11:36:26.5Z").unwrap();
        assert_eq!(zoned, plain);
        assert_eq!(plain, z);
        assert_eq!(format_utc(z), "2026-11-30T11:36:26.500Z");
        assert!(parse("yesterday").is_err());
        assert!(parse("2026-13-01T00:00:00").is_err());
    }

    #[test]
    fn stored_times_are_written_with_a_z() {
        let at = NaiveDateTime::parse_from_str("2026-01-02T03:04:05.678901", "%Y-%m-%dT%H:%M:%S%.f").unwrap();
        assert_eq!(format(at), "2026-01-02T03:04:05.678Z");
    }
}
