//! The event model: what producers send ([`NewEvent`]), what the log stores and readers
//! see ([`Event`]), and what an append answers ([`Appended`]).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ValidationError;
use crate::topic::Topic;

/// A place in the log: gapless, starting at 1. `0` means "before the first event".
pub type Position = u64;

/// Longest `name`, `id`, `client_id` or `session_id` accepted.
pub const MAX_FIELD_LEN: usize = 255;

/// Milliseconds since the Unix epoch, shown as RFC 3339 with millisecond precision.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Timestamp((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    pub fn parse_rfc3339(s: &str) -> Result<Self, ValidationError> {
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| ValidationError::Field {
            field: "timestamp",
            reason: format!("{s:?} is not an RFC 3339 time: {e}"),
        })?;
        Ok(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    pub fn to_rfc3339(self) -> String {
        let t = self.date_time();
        // Fixed shape with milliseconds, as LiveStore's createdAt and most JS code expect.
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

impl Timestamp {
    /// The UTC date and time; out of range (beyond year 9999) reads as the epoch.
    fn date_time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// `[year, month, day, hour, minute, second, millisecond]` in UTC, for writers that
    /// format it themselves; `None` for a year outside 0..=9999, which
    /// [`Timestamp::to_rfc3339`]'s four digits do not fit.
    pub(crate) fn civil(self) -> Option<[u32; 7]> {
        let t = self.date_time();
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        Some([
            year,
            u32::from(u8::from(t.month())),
            u32::from(t.day()),
            u32::from(t.hour()),
            u32::from(t.minute()),
            u32::from(t.second()),
            u32::from(t.millisecond()),
        ])
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// An event's `args`: any JSON value, kept as compact JSON text so it is stored and sent
/// exactly as given, without being parsed again on every read.
#[derive(Clone)]
pub struct Args(Box<RawValue>);

impl Args {
    /// Parses and compacts JSON text. Compacting matters: an SSE `data:` line must not
    /// hold a newline.
    pub fn from_json(text: &str) -> Result<Self, ValidationError> {
        let raw: Box<RawValue> =
            serde_json::from_str(text).map_err(|e| ValidationError::Field {
                field: "args",
                reason: format!("not valid JSON: {e}"),
            })?;
        Ok(Self::from_raw(raw))
    }

    /// Wraps JSON text that is known to be valid and compact (read back from storage).
    pub fn from_stored(text: String) -> Self {
        match RawValue::from_string(text) {
            Ok(raw) => Args(raw),
            // Storage only holds what passed `from_json`; anything else is corruption,
            // which readers would rather see as null than as a broken stream.
            Err(_) => Args::null(),
        }
    }

    pub fn from_value(value: &serde_json::Value) -> Self {
        Args(RawValue::from_string(value.to_string()).expect("a Value serializes to JSON"))
    }

    fn from_raw(raw: Box<RawValue>) -> Self {
        let text = raw.get();
        if text.bytes().any(|b| b.is_ascii_whitespace()) {
            Args(RawValue::from_string(compact_json(text)).expect("compacting keeps JSON valid"))
        } else {
            Args(raw)
        }
    }

    pub fn null() -> Self {
        Args(RawValue::from_string("null".to_owned()).expect("null is JSON"))
    }

    pub fn empty_object() -> Self {
        Args(RawValue::from_string("{}".to_owned()).expect("{} is JSON"))
    }

    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).expect("args hold valid JSON")
    }
}

/// Drops whitespace outside JSON strings. The input must be valid JSON.
fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

impl Default for Args {
    fn default() -> Self {
        Args::empty_object()
    }
}

impl PartialEq for Args {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for Args {}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(Args::from_raw(raw))
    }
}

/// A stored event, as every reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub position: Position,
    pub topic: Topic,
    /// Dense within the topic, starting at 1.
    pub seq: u64,
    pub name: String,
    pub args: Args,
    /// The producer's idempotency key (a UUIDv7 when none was given).
    pub id: String,
    pub client_id: Option<String>,
    pub session_id: Option<String>,
    pub timestamp: Timestamp,
}

impl Event {
    /// Always `seq - 1`: the topic's previous event (0 is the root).
    pub fn parent_seq(&self) -> u64 {
        self.seq - 1
    }
}

/// The wire shape of an event; `parent_seq` is derived, never stored.
#[derive(Serialize, Deserialize)]
struct EventWire {
    position: Position,
    topic: Topic,
    seq: u64,
    parent_seq: u64,
    name: String,
    args: Args,
    id: String,
    client_id: Option<String>,
    session_id: Option<String>,
    timestamp: Timestamp,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Ref<'a> {
            position: Position,
            topic: &'a Topic,
            seq: u64,
            parent_seq: u64,
            name: &'a str,
            args: &'a Args,
            id: &'a str,
            client_id: &'a Option<String>,
            session_id: &'a Option<String>,
            timestamp: Timestamp,
        }
        Ref {
            position: self.position,
            topic: &self.topic,
            seq: self.seq,
            parent_seq: self.parent_seq(),
            name: &self.name,
            args: &self.args,
            id: &self.id,
            client_id: &self.client_id,
            session_id: &self.session_id,
            timestamp: self.timestamp,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = EventWire::deserialize(d)?;
        if w.seq == 0 || w.parent_seq != w.seq - 1 {
            return Err(serde::de::Error::custom("parent_seq must be seq - 1"));
        }
        Ok(Event {
            position: w.position,
            topic: w.topic,
            seq: w.seq,
            name: w.name,
            args: w.args,
            id: w.id,
            client_id: w.client_id,
            session_id: w.session_id,
            timestamp: w.timestamp,
        })
    }
}

/// An event as a producer sends it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    pub topic: Topic,
    pub name: String,
    #[serde(default)]
    pub args: Args,
    /// Idempotency key. An event whose id was stored before is not stored again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The topic's head seq this event expects to follow; on mismatch nothing is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u64>,
}

impl NewEvent {
    pub fn new(topic: Topic, name: impl Into<String>, args: Args) -> Self {
        NewEvent {
            topic,
            name: name.into(),
            args,
            id: None,
            client_id: None,
            session_id: None,
            expected_seq: None,
        }
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    pub fn with_expected_seq(mut self, seq: u64) -> Self {
        self.expected_seq = Some(seq);
        self
    }

    /// Checks the fields a topic type cannot: lengths and emptiness.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_field("name", Some(&self.name))?;
        check_field("id", self.id.as_deref())?;
        check_field("client_id", self.client_id.as_deref())?;
        check_field("session_id", self.session_id.as_deref())?;
        Ok(())
    }

    /// Roughly what the event weighs once stored, for per-event size limits.
    pub fn size_bytes(&self) -> usize {
        self.topic.as_str().len()
            + self.name.len()
            + self.args.as_json().len()
            + self.id.as_deref().map_or(0, str::len)
            + self.client_id.as_deref().map_or(0, str::len)
            + self.session_id.as_deref().map_or(0, str::len)
    }
}

/// What every backend checks before an append: a batch is not empty and each event is
/// valid. Kept here so that no backend can check less than another.
pub fn validate_batch(batch: &[NewEvent]) -> Result<(), ValidationError> {
    if batch.is_empty() {
        return Err(ValidationError::EmptyBatch);
    }
    batch.iter().try_for_each(NewEvent::validate)
}

fn check_field(field: &'static str, value: Option<&str>) -> Result<(), ValidationError> {
    let Some(value) = value else { return Ok(()) };
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.len() > MAX_FIELD_LEN {
        "longer than 255 bytes"
    } else if value.chars().any(char::is_control) {
        "must not hold control characters"
    } else {
        return Ok(());
    };
    Err(ValidationError::Field {
        field,
        reason: reason.to_owned(),
    })
}

/// What an append answers for one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    pub position: Position,
    pub seq: u64,
    /// True when the event's id was stored before: position and seq are the original's.
    pub duplicate: bool,
}

/// A fresh idempotency key for an event that came without one.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_compacted_but_strings_kept() {
        let a = Args::from_json("{ \"a\" : [1, 2],\n \"b\": \"x y\\\" z\" }").unwrap();
        assert_eq!(a.as_json(), r#"{"a":[1,2],"b":"x y\" z"}"#);
        assert!(Args::from_json("{").is_err());
    }

    #[test]
    fn event_json_round_trips_with_parent_seq() {
        let e = Event {
            position: 7,
            topic: Topic::new("a.b").unwrap(),
            seq: 3,
            name: "v1.X".into(),
            args: Args::from_json(r#"{"k":1}"#).unwrap(),
            id: "id-1".into(),
            client_id: Some("c".into()),
            session_id: None,
            timestamp: Timestamp(1_767_225_600_123),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"position":7,"topic":"a.b","seq":3,"parent_seq":2,"name":"v1.X","args":{"k":1},"id":"id-1","client_id":"c","session_id":null,"timestamp":"2026-01-01T00:00:00.123Z"}"#
        );
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn timestamps_parse_rfc3339() {
        let t = Timestamp::parse_rfc3339("2026-01-01T00:00:00.123Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00.123Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn fields_are_checked() {
        let mut e = NewEvent::new(Topic::new("t").unwrap(), "n", Args::default());
        assert!(e.validate().is_ok());
        e.name = String::new();
        assert!(e.validate().is_err());
        e.name = "x".repeat(256);
        assert!(e.validate().is_err());
    }
}
