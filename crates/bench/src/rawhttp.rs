//! A minimal HTTP/1.1 client for one long `GET`: the load generator's SSE reader.
//!
//! Why not reqwest: its connection runs in a task of its own and hands each body chunk
//! to the reader through a channel, so every delivery costs two task wakeups besides the
//! socket read. With a thousand subscribers on one core that doubled the load
//! generator's CPU per delivery and made it, not the server, the limit of S4. Here each
//! subscriber is one task reading its own socket.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response head larger than this is refused.
const MAX_HEAD: usize = 16 * 1024;
/// A chunk-size line longer than this is refused.
const MAX_SIZE_LINE: usize = 1024;

/// An open response body, after a `200` head.
pub struct RawStream {
    socket: TcpStream,
    buf: BytesMut,
    /// `None`: the body runs until the server closes.
    chunked: Option<Chunked>,
}

impl RawStream {
    /// Connects to `addr`, sends `GET path`, and reads the head; anything but `200` is an
    /// error with the status line.
    pub async fn open(addr: SocketAddr, path: &str) -> Result<RawStream, String> {
        let mut socket = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let _ = socket.set_nodelay(true);
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        socket
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending the request: {e}"))?;
        let mut buf = BytesMut::with_capacity(1024);
        let head_len = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err("a response head over 16 KiB".into());
            }
            match socket.read_buf(&mut buf).await {
                Ok(0) => return Err("the connection closed before a response".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading the response: {e}")),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        buf.advance(head_len);
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        if status.split(' ').nth(1) != Some("200") {
            return Err(format!("the server answered {status:?}"));
        }
        let chunked = lines.any(|l| {
            l.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("transfer-encoding")
                    && value.to_ascii_lowercase().contains("chunked")
            })
        });
        Ok(RawStream {
            socket,
            buf,
            chunked: chunked.then(Chunked::default),
        })
    }

    /// Appends the next part of the body to `out`. `Ok(false)` once the body has ended.
    /// Cancel safe: bytes read are kept in the stream until decoded.
    pub async fn read(&mut self, out: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            let before = out.len();
            match &mut self.chunked {
                Some(decoder) => {
                    decoder.decode(&mut self.buf, out)?;
                    if decoder.done() {
                        return Ok(out.len() > before);
                    }
                }
                None => {
                    out.extend_from_slice(&self.buf);
                    self.buf.clear();
                }
            }
            if out.len() > before {
                return Ok(true);
            }
            match self.socket.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) => return Err(format!("reading: {e}")),
            }
        }
    }
}

/// Decodes `Transfer-Encoding: chunked`.
#[derive(Debug, Default)]
struct Chunked {
    state: State,
}

#[derive(Debug, Default, PartialEq)]
enum State {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// This many bytes of chunk data to go.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailer,
    Done,
}

impl Chunked {
    fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what it can of `input` into `out`, leaving an incomplete part in `input`.
    fn decode(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Result<(), String> {
        loop {
            match self.state {
                State::Size | State::Trailer => {
                    let Some(end) = input.windows(2).position(|w| w == b"\r\n") else {
                        if input.len() > MAX_SIZE_LINE {
                            return Err("a chunk-size line over 1 KiB".into());
                        }
                        return Ok(());
                    };
                    let line = input.split_to(end + 2);
                    let line = &line[..end];
                    if self.state == State::Trailer {
                        if line.is_empty() {
                            self.state = State::Done;
                        }
                        continue;
                    }
                    let hex = line.split(|b| *b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(hex)
                        .ok()
                        .and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
                        .ok_or_else(|| {
                            format!("a bad chunk size {:?}", String::from_utf8_lossy(line))
                        })?;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let take = left.min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input.advance(take);
                    self.state = if take == left {
                        State::DataEnd
                    } else {
                        State::Data(left - take)
                    };
                }
                State::DataEnd => {
                    if input.len() < 2 {
                        return Ok(());
                    }
                    if &input[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    input.advance(2);
                    self.state = State::Size;
                }
                State::Done => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";

    #[test]
    fn chunked_bodies_decode_whole_or_in_any_two_pieces() {
        for cut in 0..=BODY.len() {
            let mut d = Chunked::default();
            let mut out = Vec::new();
            let mut input = BytesMut::from(&BODY[..cut]);
            d.decode(&mut input, &mut out).unwrap();
            input.extend_from_slice(&BODY[cut..]);
            d.decode(&mut input, &mut out).unwrap();
            assert_eq!(out, b"hello, world", "cut at {cut}");
            assert!(d.done(), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        let mut out = Vec::new();
        let bad_size = &mut BytesMut::from(&b"zz\r\n"[..]);
        assert!(Chunked::default().decode(bad_size, &mut out).is_err());
        let no_crlf = &mut BytesMut::from(&b"1\r\naXX"[..]);
        assert!(Chunked::default().decode(no_crlf, &mut out).is_err());
    }

    #[tokio::test]
    async fn a_real_server_is_read_through_its_chunked_framing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = vec![0u8; 1024];
            let n = s.read(&mut head).await.unwrap();
            assert!(head[..n].starts_with(b"GET /s?x=1 HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
                .await
                .unwrap();
            s.write_all(b"2\r\nde\r\n0\r\n\r\n").await.unwrap();
        });
        let mut stream = RawStream::open(addr, "/s?x=1").await.unwrap();
        let mut out = Vec::new();
        while stream.read(&mut out).await.unwrap() {}
        assert_eq!(out, b"abcde");
        server.await.unwrap();
    }
}
