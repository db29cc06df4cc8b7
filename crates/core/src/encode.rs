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
            let json = serde_json::to_vec(&self.event).expect("events always serialize");
            let mut frame = BytesMut::with_capacity(json.len() + FRAME_OVERHEAD);
            frame.put_slice(b"id: ");
            frame.put_slice(self.event.position.to_string().as_bytes());
            frame.put_slice(b"\ndata: ");
            let json_start = frame.len();
            frame.put_slice(&json);
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
}
