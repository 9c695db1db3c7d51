//! SIP over a byte stream (TCP): where each message ends, and how to find the next one after
//! bytes that are not SIP.
//!
//! Bytes enter a [`Deframer`] as the relay reads them and leave as [`Piece`]s in the same
//! order, every byte exactly once: whole messages for the observer (cut by `Content-Length`,
//! which RFC 3261 §18.3 makes mandatory on streams), and bytes to forward unobserved with the
//! reason — keep-alive CRLFs (RFC 5626), a head whose length cannot be known (a bad or
//! conflicting `Content-Length`), bytes that are not a start line (a body left behind by such
//! a head, garbage), a message too large to buffer. After any of those framing resumes at the
//! next line that looks like a start line, so one bad message never blinds the observer to
//! the rest of the connection. A message without `Content-Length` is taken to have no body
//! (the only reading a stream allows). [`frame`] is the pure decision at the buffer's start.
use bytes::{Bytes, BytesMut};

use super::message::{MAX_MESSAGE, SipParseError, content_length, head_end, leading_crlf, unfold};

/// What [`frame`] found at the start of a stream buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message of this many bytes.
    Message(usize),
    /// Keep-alive CRLFs (RFC 5626) of this many bytes.
    KeepAlive(usize),
    /// More bytes are needed.
    Incomplete,
    /// A head of this many bytes (blank line included) whose body length cannot be known.
    Unframable(usize, SipParseError),
    /// This many bytes do not start a SIP message; the next message may start after them.
    Junk(usize),
    /// A message of this many bytes (head and body), larger than [`MAX_MESSAGE`].
    TooLarge(usize),
}

/// Whether `line` (without its line end) can be a start line: `SIP/x.y CODE …` or
/// `METHOD URI SIP/x.y`. Loose on purpose: the parser judges the message, this only decides
/// where one may begin.
pub fn is_start_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = |v: &[u8]| {
        v.len() == 7
            && v[..4].eq_ignore_ascii_case(b"SIP/")
            && v[4].is_ascii_digit()
            && v[5] == b'.'
            && v[6].is_ascii_digit()
    };
    if line.len() >= 11 && version(&line[..7]) && line[7] == b' ' {
        return line[8..11].iter().all(u8::is_ascii_digit);
    }
    let Some(first_space) = line.iter().position(|b| *b == b' ') else {
        return false;
    };
    first_space > 0
        && line[..first_space].iter().all(|b| b.is_ascii_graphic())
        && line.len() >= first_space + 8
        && version(&line[line.len() - 7..])
        && line[line.len() - 8] == b' '
}

/// Offset of the first line at or after `from` that may start a message (or that is not yet
/// complete, so cannot be judged); `buf.len()` if there is none.
fn next_start(buf: &[u8], from: usize) -> usize {
    let mut at = from;
    while at < buf.len() {
        if buf[at] == b'\r' || buf[at] == b'\n' {
            at += 1;
            continue;
        }
        match buf[at..].iter().position(|b| *b == b'\n') {
            Some(eol) if !is_start_line(&buf[at..at + eol]) => at += eol + 1,
            _ => return at,
        }
    }
    buf.len()
}

/// Decide what the bytes at the start of `buf` are.
pub fn frame(buf: &[u8]) -> Frame {
    let ws = leading_crlf(buf);
    if ws > 0 {
        return Frame::KeepAlive(ws);
    }
    let Some(eol) = buf.iter().position(|b| *b == b'\n') else {
        return if buf.len() > MAX_MESSAGE {
            Frame::Junk(buf.len())
        } else {
            Frame::Incomplete
        };
    };
    if !is_start_line(&buf[..eol]) {
        return Frame::Junk(next_start(buf, eol + 1));
    }
    let Some((head_len, body_at)) = head_end(buf) else {
        return if buf.len() > MAX_MESSAGE {
            Frame::Junk(next_start(buf, eol + 1))
        } else {
            Frame::Incomplete
        };
    };
    // Only the length matters here: a head that is not UTF-8 is framed all the same and
    // reported by the parser.
    let head = String::from_utf8_lossy(&buf[..head_len]);
    match content_length(&unfold(&head)) {
        Ok(Some(len)) => {
            let total = body_at.saturating_add(len);
            if total > MAX_MESSAGE {
                Frame::TooLarge(total)
            } else if buf.len() >= total {
                Frame::Message(total)
            } else {
                Frame::Incomplete
            }
        }
        Ok(None) => Frame::Message(body_at),
        Err(e) => Frame::Unframable(body_at, e),
    }
}

/// Why bytes went on without being observed as a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unobserved {
    /// RFC 5626 keep-alive CRLFs: nothing to report.
    KeepAlive,
    /// A head whose body length is unknown.
    Unframable(SipParseError),
    /// Bytes that are not a SIP message (reported once per run of them).
    Junk,
    /// The start of a message of this many bytes, too large to observe.
    TooLarge(usize),
    /// More of a too-large message, or more of a run of junk (already reported).
    Continued,
}

/// One piece of the stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A whole message for the observer.
    Message(Bytes),
    /// Bytes to forward as they are.
    Forward(Bytes, Unobserved),
}

/// Cuts one direction of a stream into [`Piece`]s. Pure: the relay feeds it and writes what
/// comes out.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: BytesMut,
    /// Bytes of a too-large message still to pass through.
    passing: usize,
    /// The last piece was junk (a run is reported once).
    in_junk: bool,
}

impl Deframer {
    /// A deframer with room for a typical read.
    pub fn new() -> Self {
        Deframer {
            buf: BytesMut::with_capacity(16 * 1024),
            passing: 0,
            in_junk: false,
        }
    }

    /// The buffer the relay reads into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Add bytes (for callers that do not read into [`Deframer::buffer`]).
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next piece, or `None` until more bytes arrive.
    pub fn next_piece(&mut self) -> Option<Piece> {
        if self.buf.is_empty() {
            return None;
        }
        if self.passing > 0 {
            let n = self.passing.min(self.buf.len());
            self.passing -= n;
            return Some(Piece::Forward(
                self.buf.split_to(n).freeze(),
                Unobserved::Continued,
            ));
        }
        let (n, why) = match frame(&self.buf) {
            Frame::Incomplete => return None,
            Frame::Message(n) => {
                self.in_junk = false;
                return Some(Piece::Message(self.buf.split_to(n).freeze()));
            }
            Frame::KeepAlive(n) => (n, Unobserved::KeepAlive),
            Frame::Unframable(n, e) => {
                // What follows (its body) is junk until the next start line: report it with
                // this head, not separately.
                self.in_junk = true;
                (n, Unobserved::Unframable(e))
            }
            Frame::Junk(n) => {
                let why = if self.in_junk {
                    Unobserved::Continued
                } else {
                    Unobserved::Junk
                };
                self.in_junk = true;
                (n, why)
            }
            Frame::TooLarge(total) => {
                self.in_junk = false;
                let n = total.min(self.buf.len());
                self.passing = total - n;
                (n, Unobserved::TooLarge(total))
            }
        };
        Some(Piece::Forward(self.buf.split_to(n).freeze(), why))
    }

    /// At the end of the stream: what is left once [`Deframer::next_piece`] returned `None`
    /// (a message cut short, a partial line), for the observer to report.
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
