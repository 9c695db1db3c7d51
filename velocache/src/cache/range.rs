//! Byte ranges (RFC 9110 §14): the client's `Range`, and the origin's `Content-Range`.
//!
//! A client `Range` header enters as bytes and leaves as a [`RangeRequest`]; resolving it
//! against an object's length gives the byte span to send (206) or "unsatisfiable" (416).
//! Multi-range requests are answered with the whole object (RFC 9110 lets a server ignore
//! `Range`), as are headers that do not parse.

/// What a `Range` header asks for, before the object's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// `bytes=first-` or `bytes=first-last`.
    FromTo {
        /// First byte.
        first: u64,
        /// Last byte, inclusive (`None`: to the end).
        last: Option<u64>,
    },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

/// A resolved range: `[start, end)` within an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Span {
    /// Number of bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// `Content-Range` value for this span of an object of `total` bytes.
    pub fn content_range(&self, total: u64) -> String {
        format!(
            "bytes {}-{}/{}",
            self.start,
            self.end.saturating_sub(1),
            total
        )
    }
}

/// How a range request resolves against an object of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Send these bytes with 206.
    Partial(Span),
    /// Nothing satisfiable: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

impl RangeRequest {
    /// Parse a `Range` header value. `None`: not a single byte range we serve (absent unit,
    /// other unit, multiple ranges, syntax error) — the whole object is sent instead.
    pub fn parse(value: &[u8]) -> Option<RangeRequest> {
        let s = std::str::from_utf8(value).ok()?.trim();
        let (unit, spec) = s.split_once('=')?;
        if !unit.trim().eq_ignore_ascii_case("bytes") {
            return None;
        }
        let spec = spec.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Some(RangeRequest::Suffix(digits(b)?));
        }
        let first = digits(a)?;
        let last = if b.is_empty() { None } else { Some(digits(b)?) };
        if let Some(l) = last
            && l < first
        {
            return None;
        }
        Some(RangeRequest::FromTo { first, last })
    }

    /// Resolve against an object of `len` bytes.
    pub fn resolve(&self, len: u64) -> Resolved {
        match *self {
            RangeRequest::FromTo { first, last } => {
                if first >= len {
                    return Resolved::Unsatisfiable;
                }
                let end = last.map_or(len, |l| l.saturating_add(1).min(len));
                Resolved::Partial(Span { start: first, end })
            }
            RangeRequest::Suffix(n) => {
                if n == 0 || len == 0 {
                    return Resolved::Unsatisfiable;
                }
                Resolved::Partial(Span {
                    start: len.saturating_sub(n),
                    end: len,
                })
            }
        }
    }

    /// The first byte asked for, when it does not depend on the length.
    pub fn first_byte(&self) -> Option<u64> {
        match *self {
            RangeRequest::FromTo { first, .. } => Some(first),
            RangeRequest::Suffix(_) => None,
        }
    }
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// An origin's `Content-Range: bytes first-last/total` (total may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// The bytes this response carries.
    pub span: Span,
    /// The whole object's length, when the origin says.
    pub total: Option<u64>,
}

impl ContentRange {
    /// Parse a `Content-Range` value of a 206 response. `None` when malformed or inconsistent.
    pub fn parse(value: &[u8]) -> Option<ContentRange> {
        let s = std::str::from_utf8(value).ok()?.trim();
        let rest = s.strip_prefix("bytes")?.trim_start();
        let (range, total) = rest.split_once('/')?;
        let (a, b) = range.trim().split_once('-')?;
        let first = digits(a.trim())?;
        let last = digits(b.trim())?;
        if last < first {
            return None;
        }
        let total = match total.trim() {
            "*" => None,
            t => Some(digits(t)?),
        };
        if let Some(t) = total
            && last >= t
        {
            return None;
        }
        Some(ContentRange {
            span: Span {
                start: first,
                end: last + 1,
            },
            total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<RangeRequest> {
        RangeRequest::parse(s.as_bytes())
    }

    #[test]
    fn parses_single_ranges() {
        assert_eq!(
            p("bytes=0-499"),
            Some(RangeRequest::FromTo {
                first: 0,
                last: Some(499)
            })
        );
        assert_eq!(
            p("bytes=9500-"),
            Some(RangeRequest::FromTo {
                first: 9500,
                last: None
            })
        );
        assert_eq!(p("bytes=-500"), Some(RangeRequest::Suffix(500)));
        assert_eq!(
            p(" Bytes = 1 - 2 "),
            Some(RangeRequest::FromTo {
                first: 1,
                last: Some(2)
            })
        );
    }

    #[test]
    fn rejects_what_it_does_not_serve() {
        for bad in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "items=0-1",
            "bytes=5-1",
            "bytes=0-1,3-4",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn resolves_against_a_length() {
        let len = 10_000;
        let r = |s: &str| p(s).unwrap().resolve(len);
        assert_eq!(
            r("bytes=0-499"),
            Resolved::Partial(Span { start: 0, end: 500 })
        );
        assert_eq!(
            r("bytes=9500-"),
            Resolved::Partial(Span {
                start: 9500,
                end: 10_000
            })
        );
        assert_eq!(
            r("bytes=-500"),
            Resolved::Partial(Span {
                start: 9500,
                end: 10_000
            })
        );
        // Past the end is clipped; a suffix longer than the object is the whole object.
        assert_eq!(
            r("bytes=9000-20000"),
            Resolved::Partial(Span {
                start: 9000,
                end: 10_000
            })
        );
        assert_eq!(
            r("bytes=-20000"),
            Resolved::Partial(Span {
                start: 0,
                end: 10_000
            })
        );
        assert_eq!(r("bytes=10000-"), Resolved::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Resolved::Unsatisfiable);
        assert_eq!(p("bytes=0-").unwrap().resolve(0), Resolved::Unsatisfiable);
    }

    #[test]
    fn content_range_strings() {
        assert_eq!(
            Span { start: 0, end: 500 }.content_range(1000),
            "bytes 0-499/1000"
        );
    }

    #[test]
    fn parses_content_range() {
        assert_eq!(
            ContentRange::parse(b"bytes 0-499/1234"),
            Some(ContentRange {
                span: Span { start: 0, end: 500 },
                total: Some(1234)
            })
        );
        assert_eq!(ContentRange::parse(b"bytes 10-19/*").unwrap().total, None);
        for bad in [
            "bytes */100",
            "bytes 5-1/100",
            "bytes 0-100/100",
            "0-1/2",
            "bytes 0-1",
        ] {
            assert_eq!(ContentRange::parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
