//! The one place an event is serialized. Each event is encoded once into its SSE frame
//! (`id: <position>\ndata: <json>\n\n`); the JSON is a slice of that frame, so live
//! subscribers, SSE and history all share the same bytes. SSE is a text format, not HTTP,
//! which is why its framing lives in the core.

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::Event;

/// An event with its encodings, shared (behind an `Arc`) by every reader that wants it.
#[derive(Debug)]
pub struct Encoded {
    pub event: Event,
    frame: Bytes,
    json_start: usize,
}

impl Encoded {
    pub fn new(event: Event) -> Self {
        let json = serde_json::to_vec(&event).expect("events always serialize");
        let mut frame = BytesMut::with_capacity(json.len() + 32);
        frame.put_slice(b"id: ");
        frame.put_slice(event.position.to_string().as_bytes());
        frame.put_slice(b"\ndata: ");
        let json_start = frame.len();
        frame.put_slice(&json);
        frame.put_slice(b"\n\n");
        Encoded {
            event,
            frame: frame.freeze(),
            json_start,
        }
    }

    /// The complete SSE frame, ending with the blank line.
    pub fn sse_frame(&self) -> Bytes {
        self.frame.clone()
    }

    /// The event as compact JSON (one line).
    pub fn json(&self) -> Bytes {
        self.frame.slice(self.json_start..self.frame.len() - 2)
    }

    /// Bytes held by this entry, for memory bounds.
    pub fn weight(&self) -> usize {
        self.frame.len() * 2 + std::mem::size_of::<Self>()
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
    }
}
