//! The one place an event is serialized. Each event is encoded once into its SSE frame
//! (`id: <position>\ndata: <json>\n\n`); the JSON is a slice of that frame, so live
//! subscribers, SSE and history all share the same bytes. SSE is a text format, not HTTP,
//! which is why its framing lives in the core.
//!
//! The encoding is made when a reader first asks for it, not when the tail takes the
//! event in: with no one following, a publish pays nothing for it (the profile of
//! single-event publishes had the tail's eager encoding at about 4 % of the server's
//! CPU). Whoever asks first encodes; everyone after shares those bytes.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::Event;

/// Room for `id: <position>\ndata: ` and the blank line, beside the JSON.
const FRAME_OVERHEAD: usize = 32;
/// The JSON of an event beyond its own strings: field names, quotes, numbers, the time.
const JSON_OVERHEAD: usize = 224;

/// An event with its encodings, shared (behind an `Arc`) by every reader that wants it.
#[derive(Debug)]
pub struct Encoded {
    pub event: Event,
    /// The SSE frame, and where the JSON starts in it; made on first use.
    frame: OnceLock<(Bytes, usize)>,
    /// Fixed when the entry is made, so that memory accounting adds and removes the same
    /// amount whether or not the frame was made in between.
    weight: usize,
}

impl Encoded {
    pub fn new(event: Event) -> Self {
        let strings = event.topic.as_str().len()
            + event.name.len()
            + event.args.as_json().len()
            + event.id.len()
            + event.client_id.as_deref().map_or(0, str::len)
            + event.session_id.as_deref().map_or(0, str::len);
        // Counted as if encoded: the frame is made for any event someone reads.
        let weight = (strings + JSON_OVERHEAD + FRAME_OVERHEAD) * 2 + std::mem::size_of::<Self>();
        Encoded {
            event,
            frame: OnceLock::new(),
            weight,
        }
    }

    fn encoded(&self) -> &(Bytes, usize) {
        self.frame.get_or_init(|| {
            let e = &self.event;
            // One allocation, sized from the strings (the weight's estimate, halved).
            let mut frame = BytesMut::with_capacity(self.weight / 2);
            frame.put_slice(b"id: ");
            put_u64(&mut frame, e.position);
            frame.put_slice(b"\ndata: ");
            let json_start = frame.len();
            write_json(&mut frame, e);
            frame.put_slice(b"\n\n");
            (frame.freeze(), json_start)
        })
    }

    /// The complete SSE frame, ending with the blank line.
    pub fn sse_frame(&self) -> Bytes {
        self.encoded().0.clone()
    }

    /// The event as compact JSON (one line).
    pub fn json(&self) -> Bytes {
        let (frame, json_start) = self.encoded();
        frame.slice(*json_start..frame.len() - 2)
    }

    /// Bytes held by this entry, for memory bounds: an estimate made with the entry,
    /// which never changes.
    pub fn weight(&self) -> usize {
        self.weight
    }
}

/// The event's JSON, byte for byte what `serde_json::to_vec(event)` makes (a test holds
/// the two together), written straight into the frame. Encoding is most of a catch-up
/// stream's cost per event, and the generic serializer spent it on formatting machinery:
/// numbers and the time through `fmt`, every string through the escaper, a growing
/// buffer copied again into the frame.
fn write_json(out: &mut BytesMut, e: &Event) {
    out.put_slice(b"{\"position\":");
    put_u64(out, e.position);
    out.put_slice(b",\"topic\":");
    put_str(out, e.topic.as_str());
    out.put_slice(b",\"seq\":");
    put_u64(out, e.seq);
    out.put_slice(b",\"parent_seq\":");
    put_u64(out, e.parent_seq());
    out.put_slice(b",\"name\":");
    put_str(out, &e.name);
    out.put_slice(b",\"args\":");
    out.put_slice(e.args.as_json().as_bytes());
    out.put_slice(b",\"id\":");
    put_str(out, &e.id);
    out.put_slice(b",\"client_id\":");
    put_opt_str(out, e.client_id.as_deref());
    out.put_slice(b",\"session_id\":");
    put_opt_str(out, e.session_id.as_deref());
    out.put_slice(b",\"timestamp\":");
    put_timestamp(out, e.timestamp);
    out.put_u8(b'}');
}

fn put_u64(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// A JSON string. Most strings (topics, names, ids) need no escape and are copied as
/// they are; the rest go through serde_json's escaper.
fn put_str(out: &mut BytesMut, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        let escaped = serde_json::to_string(s).expect("a str always serializes");
        out.put_slice(escaped.as_bytes());
    } else {
        out.put_u8(b'"');
        out.put_slice(s.as_bytes());
        out.put_u8(b'"');
    }
}

fn put_opt_str(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.put_slice(b"null"),
    }
}

/// `"YYYY-MM-DDTHH:MM:SS.mmmZ"`, as [`crate::Timestamp::to_rfc3339`] writes it.
fn put_timestamp(out: &mut BytesMut, t: crate::event::Timestamp) {
    let Some(fields) = t.civil() else {
        put_str(out, &t.to_rfc3339());
        return;
    };
    let mut s = *b"\"0000-00-00T00:00:00.000Z\"";
    // Where each field's digits end in `s`, and how many there are.
    const PLACES: [(usize, usize); 7] =
        [(5, 4), (8, 2), (11, 2), (14, 2), (17, 2), (20, 2), (24, 3)];
    for (mut v, (end, width)) in fields.into_iter().zip(PLACES) {
        for i in (end - width..end).rev() {
            s[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    out.put_slice(&s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Args, Timestamp};
    use crate::topic::Topic;

    #[test]
    fn frame_and_json_agree() {
        let e = Event {
            position: 42,
            topic: Topic::new("t").unwrap(),
            seq: 1,
            name: "n".into(),
            args: Args::from_json(r#"{"a":"b\nc"}"#).unwrap(),
            id: "i".into(),
            client_id: None,
            session_id: None,
            timestamp: Timestamp(0),
        };
        let enc = Encoded::new(e.clone());
        let frame = std::str::from_utf8(&enc.sse_frame()).unwrap().to_owned();
        assert!(frame.starts_with("id: 42\ndata: {"));
        assert!(frame.ends_with("}\n\n"));
        assert_eq!(frame.matches('\n').count(), 3, "no raw newline inside data");
        let back: Event = serde_json::from_slice(&enc.json()).unwrap();
        assert_eq!(back, e);
        // The estimate covers what was made (the frame is counted twice, as before).
        assert!(
            enc.weight() >= 2 * frame.len(),
            "{} < 2 × {}",
            enc.weight(),
            frame.len()
        );
        // Made once, shared after.
        assert_eq!(enc.sse_frame().as_ptr(), enc.sse_frame().as_ptr());
    }

    fn event(name: &str, id: &str, client: Option<&str>, millis: i64) -> Event {
        Event {
            position: u64::MAX,
            topic: Topic::new("a.b-c_d").unwrap(),
            seq: 1_000_000_007,
            name: name.into(),
            args: Args::from_json(r#"{"x":[1,"\u00e9\n"],"y":null}"#).unwrap(),
            id: id.into(),
            client_id: client.map(str::to_owned),
            session_id: Some("s".into()),
            timestamp: Timestamp(millis),
        }
    }

    #[test]
    fn the_json_is_what_serde_makes() {
        let cases = [
            event("n", "0190-abc", None, 0),
            event(
                "with \"quotes\" and \\",
                "tab\there",
                Some("é ∑ 😀"),
                1_764_633_600_123,
            ),
            event(
                "ctl \u{1} \u{1f} \u{7f} /",
                "",
                Some(""),
                253_402_300_799_999,
            ),
            // Past what the time crate's default range holds: the fallback path.
            event("far", "i", None, i64::MAX),
            event("before 1970", "i", None, -1),
        ];
        for e in cases {
            let json = Encoded::new(e.clone()).json();
            let serde = serde_json::to_vec(&e).unwrap();
            assert_eq!(
                std::str::from_utf8(&json).unwrap(),
                std::str::from_utf8(&serde).unwrap()
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_strings_and_times_encode_as_serde_does(
            name in ".*", id in ".*", client in proptest::option::of(".*"),
            millis in proptest::num::i64::ANY, position in 1u64.., seq in 1u64..,
        ) {
            let mut e = event(&name, &id, client.as_deref(), millis);
            e.position = position;
            e.seq = seq;
            let json = Encoded::new(e.clone()).json();
            proptest::prop_assert_eq!(json.to_vec(), serde_json::to_vec(&e).unwrap());
        }
    }
}
