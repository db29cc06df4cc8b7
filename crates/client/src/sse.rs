//! An incremental parser for Server-Sent Events, the `text/event-stream` format of the
//! WHATWG HTML standard (section "Server-sent events", "Parsing an event stream").
//!
//! Bytes go in as they arrive from the network, in chunks split anywhere (inside a line,
//! between `\r` and `\n`, inside a multi-byte UTF-8 character); complete events come
//! out. Lines end with `\n`, `\r\n` or `\r`; a line starting with `:` is a comment
//! (heartbeat); `data:` lines of one event are joined with `\n`; `id:` sets the last
//! event ID, which persists across events; `retry:` sets the reconnection time; a blank
//! line dispatches the event. An event still incomplete when the stream ends is dropped,
//! as the standard says.
//!
//! ```
//! use tributary_client::sse::SseParser;
//!
//! let mut parser = SseParser::new();
//! assert!(parser.feed(b"id: 7\nda").unwrap().is_empty());
//! let events = parser.feed(b"ta: {\"a\":1}\n\n").unwrap();
//! assert_eq!(events[0].data, "{\"a\":1}");
//! assert_eq!(events[0].id, "7");
//! assert_eq!(events[0].event, "message");
//! ```

use std::time::Duration;

/// The largest event [`SseParser::new`] accepts: its lines and data together.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `"message"` when the event had none.
    pub event: String,
    /// The event's `data:` lines joined with `\n`.
    pub data: String,
    /// The last event ID as of this event: its own `id:` field or an earlier one's;
    /// empty when no event has set one.
    pub id: String,
}

/// Why a stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// One event grew beyond the parser's limit, so the stream is not trusted further.
    #[error("an event in the stream is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

/// The parser's state between chunks. Create one per connection.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of the line being read (no line ending).
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` that starts the next one belongs to it.
    after_cr: bool,
    /// No line has been completed yet (a byte order mark may open the stream).
    first_line: bool,
    event: String,
    /// Every `data:` value followed by `\n`, as the standard builds it.
    data: String,
    last_id: String,
    retry: Option<Duration>,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser that accepts events up to [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser that refuses any event (lines plus data) larger than `limit` bytes, so a
    /// misbehaving server cannot make it buffer without bound.
    pub fn with_max_event_bytes(limit: usize) -> Self {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            event: String::new(),
            data: String::new(),
            last_id: String::new(),
            retry: None,
            max_event_bytes: limit,
        }
    }

    /// The last event ID seen so far (empty if none).
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// The reconnection time the server asked for with `retry:`, if it did.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Parses the next chunk of the stream and returns the events it completed, in order.
    /// After an error the parser must not be fed again.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.line.extend_from_slice(&chunk[..end]);
                    self.check_size()?;
                    self.after_cr = chunk[end] == b'\r';
                    chunk = &chunk[end + 1..];
                    if let Some(event) = self.process_line() {
                        out.push(event);
                    }
                }
                None => {
                    self.line.extend_from_slice(chunk);
                    self.check_size()?;
                    break;
                }
            }
        }
        Ok(out)
    }

    fn check_size(&self) -> Result<(), SseError> {
        if self.line.len() + self.data.len() + self.event.len() > self.max_event_bytes {
            return Err(SseError::TooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    fn process_line(&mut self) -> Option<SseEvent> {
        let mut bytes = std::mem::take(&mut self.line);
        if self.first_line {
            self.first_line = false;
            if bytes.starts_with(b"\xEF\xBB\xBF") {
                bytes.drain(..3);
            }
        }
        if bytes.is_empty() {
            return self.dispatch();
        }
        if bytes[0] == b':' {
            // A comment: heartbeats are sent this way. Nothing to do.
            return None;
        }
        // Line endings never occur inside a multi-byte character, so a whole line
        // decodes on its own; invalid UTF-8 becomes U+FFFD, as the standard says.
        let line = String::from_utf8_lossy(&bytes);
        let (field, value) = match line.find(':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // An id holding NUL is ignored.
            "id" if !value.contains('\0') => {
                self.last_id.clear();
                self.last_id.push_str(value);
            }
            // Only digits count; too many for a u64 is no sensible delay either.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        if self.data.is_empty() {
            self.event.clear();
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the `\n` after the last data line
        let event = if self.event.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event)
        };
        Some(SseEvent {
            event,
            data,
            id: self.last_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(event: &str, data: &str, id: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        }
    }

    fn parse_whole(input: &[u8]) -> Vec<SseEvent> {
        SseParser::new().feed(input).unwrap()
    }

    /// Feeds `input` cut at each of `cuts` (sorted byte offsets).
    fn parse_split(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let cut = cut.clamp(start, input.len());
            out.extend(parser.feed(&input[start..cut]).unwrap());
            start = cut;
        }
        out
    }

    /// Every way to cut `input` into one, two or three pieces gives the same events.
    fn assert_split_invariant(input: &[u8], expected: &[SseEvent]) {
        assert_eq!(parse_whole(input), expected, "whole input");
        for a in 0..=input.len() {
            assert_eq!(parse_split(input, &[a]), expected, "cut at {a}");
            for b in a..=input.len() {
                assert_eq!(parse_split(input, &[a, b]), expected, "cuts at {a}, {b}");
            }
        }
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(parse_split(input, &bytewise), expected, "byte by byte");
    }

    #[test]
    fn server_frames_parse() {
        let input = b"retry: 1000\n\nid: 1\ndata: {\"position\":1}\n\n: heartbeat\n\n\
                      event: caught-up\ndata: {\"position\":1}\n\n\
                      event: end\ndata: {\"position\":1}\n\n";
        let expected = [
            ev("message", "{\"position\":1}", "1"),
            ev("caught-up", "{\"position\":1}", "1"),
            ev("end", "{\"position\":1}", "1"),
        ];
        assert_split_invariant(input, &expected);
        let mut parser = SseParser::new();
        parser.feed(input).unwrap();
        assert_eq!(parser.retry(), Some(Duration::from_millis(1000)));
        assert_eq!(parser.last_event_id(), "1");
    }

    #[test]
    fn crlf_and_lone_cr_end_lines() {
        let expected = [ev("message", "a", "1"), ev("x", "b", "1")];
        assert_split_invariant(
            b"id: 1\r\ndata: a\r\n\r\nevent: x\r\ndata: b\r\n\r\n",
            &expected,
        );
        assert_split_invariant(b"id: 1\rdata: a\r\revent: x\rdata: b\r\r", &expected);
        assert_split_invariant(b"id: 1\r\ndata: a\n\revent: x\rdata: b\n\r\n", &expected);
    }

    #[test]
    fn multi_line_data_joins_with_newline() {
        assert_split_invariant(
            b"data: one\ndata:two\ndata\ndata:  three\n\n",
            &[ev("message", "one\ntwo\n\n three", "")],
        );
    }

    #[test]
    fn only_one_leading_space_is_stripped_and_colons_stay() {
        assert_split_invariant(b"data:  a: b\n\n", &[ev("message", " a: b", "")]);
    }

    #[test]
    fn empty_data_still_dispatches_but_no_data_does_not() {
        // `data:` with nothing after it makes a data buffer of "\n": an empty event.
        assert_split_invariant(b"data:\n\n", &[ev("message", "", "")]);
        // An event type and id without data dispatch nothing, but the id sticks and the
        // type does not.
        assert_split_invariant(
            b"event: x\nid: 5\n\ndata: y\n\n",
            &[ev("message", "y", "5")],
        );
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        assert_split_invariant(
            b": hello\nfoo: bar\n:\ndata: d\n: mid\n\n",
            &[ev("message", "d", "")],
        );
    }

    #[test]
    fn id_persists_and_can_be_reset() {
        assert_split_invariant(
            b"id: 3\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\0y\ndata: d\n\n",
            &[
                ev("message", "a", "3"),
                ev("message", "b", "3"),
                ev("message", "c", ""),
                ev("message", "d", ""),
            ],
        );
    }

    #[test]
    fn bad_retry_values_are_ignored() {
        let mut parser = SseParser::new();
        parser.feed(b"retry: 10x\nretry:\nretry: -5\n\n").unwrap();
        assert_eq!(parser.retry(), None);
        parser.feed(b"retry:250\n").unwrap();
        assert_eq!(parser.retry(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn incomplete_event_at_the_end_is_not_dispatched() {
        assert_split_invariant(b"data: a\n\ndata: b\n", &[ev("message", "a", "")]);
        assert_split_invariant(b"data: a\n\ndata: b", &[ev("message", "a", "")]);
    }

    #[test]
    fn byte_order_mark_is_stripped_once() {
        assert_split_invariant(
            b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n",
            &[ev("message", "a", "")],
        );
    }

    #[test]
    fn multi_byte_characters_survive_any_split() {
        assert_split_invariant(
            "data: héllo → wörld 🎉\n\n".as_bytes(),
            &[ev("message", "héllo → wörld 🎉", "")],
        );
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut parser = SseParser::with_max_event_bytes(16);
        assert!(parser.feed(b"data: 0123456789\n").is_ok());
        assert_eq!(
            parser.feed(b"data: 0123456789\n"),
            Err(SseError::TooLarge { limit: 16 })
        );
        let mut parser = SseParser::with_max_event_bytes(16);
        assert!(parser.feed(&[b'x'; 17]).is_err());
    }

    /// One event to encode: optional type and id, data lines, comments before it.
    #[derive(Clone, Debug)]
    struct Frame {
        event: Option<String>,
        id: Option<String>,
        data: Vec<String>,
        comment: bool,
    }

    fn text() -> impl Strategy<Value = String> {
        // Anything but line endings and NUL, including colons, spaces and non-ASCII.
        proptest::string::string_regex("[^\r\n\0]{0,12}").unwrap()
    }

    fn field_value() -> impl Strategy<Value = String> {
        // Values whose first space would be eaten are avoided so the expectation is
        // simply the value itself.
        proptest::string::string_regex("([^\r\n\0 ][^\r\n\0]{0,8})?").unwrap()
    }

    fn frame() -> impl Strategy<Value = Frame> {
        (
            proptest::option::of(proptest::string::string_regex("[a-z-]{1,8}").unwrap()),
            proptest::option::of(field_value()),
            proptest::collection::vec(text(), 1..4),
            any::<bool>(),
        )
            .prop_map(|(event, id, data, comment)| Frame {
                event,
                id,
                data,
                comment,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_streams_parse_the_same_under_arbitrary_splits(
            frames in proptest::collection::vec(frame(), 0..6),
            endings in proptest::collection::vec(0..3usize, 64),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let mut input = Vec::new();
            let mut expected = Vec::new();
            let mut last_id = String::new();
            let mut n = 0;
            let mut prev_cr = false;
            let mut line = |input: &mut Vec<u8>, s: &str| {
                let mut ending = [&b"\n"[..], b"\r\n", b"\r"][endings[n % endings.len()]];
                // `\r` then an empty line ended by `\n` would read as one `\r\n`: the
                // format cannot tell them apart, so no encoder may write that.
                if prev_cr && s.is_empty() && ending == b"\n" {
                    ending = b"\r";
                }
                prev_cr = ending == b"\r";
                input.extend_from_slice(s.as_bytes());
                input.extend_from_slice(ending);
                n += 1;
            };
            for f in &frames {
                if f.comment {
                    line(&mut input, ": heartbeat");
                }
                if let Some(e) = &f.event {
                    line(&mut input, &format!("event: {e}"));
                }
                if let Some(id) = &f.id {
                    line(&mut input, &format!("id: {id}"));
                    last_id = id.clone();
                }
                for d in &f.data {
                    line(&mut input, &format!("data: {d}"));
                }
                line(&mut input, "");
                expected.push(SseEvent {
                    event: f.event.clone().unwrap_or_else(|| "message".into()),
                    data: f.data.join("\n"),
                    id: last_id.clone(),
                });
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(parse_split(&input, &cuts), expected.clone());
            prop_assert_eq!(parse_whole(&input), expected);
        }
    }
}
