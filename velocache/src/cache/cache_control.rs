//! `Cache-Control` (RFC 9111 §5.2) and `Pragma: no-cache`: header values in, directives out.
//!
//! Parsing is lenient the way caches must be: unknown directives are kept (and ignored),
//! a malformed delta-seconds makes its directive count as present with the most conservative
//! value (0 — RFC 9111 §1.2.2), quoted strings may carry commas, and several header lines are
//! merged. Nothing here allocates per directive beyond the field-name lists of `no-cache` /
//! `private`, which RFC 9111 lets a shared cache treat as the unqualified directive anyway.
use http::HeaderMap;

/// The directives a shared cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age=N` (seconds).
    pub max_age: Option<u64>,
    /// `s-maxage=N` (seconds; shared caches only, wins over `max-age`).
    pub s_maxage: Option<u64>,
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (with or without field names: a shared cache revalidates either way).
    pub no_cache: bool,
    /// `private` (with or without field names: a shared cache never stores it).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate` (must-revalidate for shared caches).
    pub proxy_revalidate: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `stale-while-revalidate=N` (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (RFC 5861).
    pub stale_if_error: Option<u64>,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// Request only: `max-stale` (`Some(u64::MAX)` without a value: any staleness).
    pub max_stale: Option<u64>,
    /// Request only: `min-fresh=N`.
    pub min_fresh: Option<u64>,
    /// Request only: `only-if-cached`.
    pub only_if_cached: bool,
}

/// The largest delta-seconds kept: 2^31 (RFC 9111 §1.2.2 "greater than 2147483648 … as if
/// it were 2147483648").
const DELTA_MAX: u64 = 2_147_483_648;

impl CacheControl {
    /// All `Cache-Control` lines of `headers` (and `Pragma: no-cache` when there is no
    /// `Cache-Control`, RFC 9111 §5.4).
    pub fn from_headers(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        let mut any = false;
        for v in headers.get_all(http::header::CACHE_CONTROL) {
            any = true;
            cc.merge(v.as_bytes());
        }
        if !any
            && headers
                .get_all(http::header::PRAGMA)
                .iter()
                .any(|v| contains_token(v.as_bytes(), b"no-cache"))
        {
            cc.no_cache = true;
        }
        cc
    }

    /// Parse one header value.
    pub fn parse(value: &[u8]) -> CacheControl {
        let mut cc = CacheControl::default();
        cc.merge(value);
        cc
    }

    fn merge(&mut self, value: &[u8]) {
        for (name, arg) in Directives::new(value) {
            let secs = || arg.map(parse_delta).unwrap_or(Some(0)).unwrap_or(0);
            match name.to_ascii_lowercase().as_slice() {
                b"max-age" => self.max_age = Some(min_opt(self.max_age, secs())),
                b"s-maxage" => self.s_maxage = Some(min_opt(self.s_maxage, secs())),
                b"no-store" => self.no_store = true,
                b"no-cache" => self.no_cache = true,
                b"private" => self.private = true,
                b"public" => self.public = true,
                b"must-revalidate" => self.must_revalidate = true,
                b"proxy-revalidate" => self.proxy_revalidate = true,
                b"no-transform" => self.no_transform = true,
                b"immutable" => self.immutable = true,
                b"only-if-cached" => self.only_if_cached = true,
                b"stale-while-revalidate" => self.stale_while_revalidate = Some(secs()),
                b"stale-if-error" => self.stale_if_error = Some(secs()),
                b"min-fresh" => self.min_fresh = Some(secs()),
                b"max-stale" => {
                    self.max_stale = Some(match arg {
                        None => u64::MAX,
                        Some(a) => parse_delta(a).unwrap_or(0),
                    })
                }
                _ => {}
            }
        }
    }
}

/// Conflicting duplicates resolve to the most conservative (smallest) value.
fn min_opt(old: Option<u64>, new: u64) -> u64 {
    old.map_or(new, |o| o.min(new))
}

/// delta-seconds: digits only (a quoted value is tolerated), clamped at 2^31.
pub fn parse_delta(arg: &[u8]) -> Option<u64> {
    let arg = arg.strip_prefix(b"\"").unwrap_or(arg);
    let arg = arg.strip_suffix(b"\"").unwrap_or(arg);
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in arg {
        n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
        if n > DELTA_MAX {
            return Some(DELTA_MAX);
        }
    }
    Some(n)
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
pub fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Iterator over `name[=arg]` items of a directive list, honouring quoted strings.
struct Directives<'a> {
    rest: &'a [u8],
}

impl<'a> Directives<'a> {
    fn new(value: &'a [u8]) -> Self {
        Directives { rest: value }
    }
}

impl<'a> Iterator for Directives<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            // Find the end of this item: a comma outside quotes.
            let mut in_quotes = false;
            let mut escaped = false;
            let mut end = self.rest.len();
            for (i, &b) in self.rest.iter().enumerate() {
                if escaped {
                    escaped = false;
                } else if in_quotes && b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_quotes = !in_quotes;
                } else if b == b',' && !in_quotes {
                    end = i;
                    break;
                }
            }
            let item = &self.rest[..end];
            self.rest = self.rest.get(end + 1..).unwrap_or(&[]);
            let item = trim(item);
            if item.is_empty() {
                continue;
            }
            return Some(match item.iter().position(|&b| b == b'=') {
                Some(eq) => (trim(&item[..eq]), Some(trim(&item[eq + 1..]))),
                None => (item, None),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn parses_the_common_directives() {
        let cc = CacheControl::parse(b"public, max-age=3600, s-maxage=60, must-revalidate");
        assert!(cc.public && cc.must_revalidate);
        assert_eq!(cc.max_age, Some(3600));
        assert_eq!(cc.s_maxage, Some(60));
        assert!(!cc.no_store && !cc.private && !cc.no_cache);
    }

    #[test]
    fn names_are_case_insensitive_and_spaces_ignored() {
        let cc = CacheControl::parse(b"  No-Store ,PRIVATE,, Max-Age = 5 ");
        assert!(cc.no_store && cc.private);
        assert_eq!(cc.max_age, Some(5));
    }

    #[test]
    fn quoted_field_lists_do_not_split_directives() {
        let cc = CacheControl::parse(b"no-cache=\"set-cookie, x-foo\", max-age=10");
        assert!(cc.no_cache);
        assert_eq!(cc.max_age, Some(10));
        let cc = CacheControl::parse(b"private=\"a,\\\"b\", s-maxage=7");
        assert!(cc.private);
        assert_eq!(cc.s_maxage, Some(7));
    }

    #[test]
    fn an_unterminated_quoted_string_hides_only_the_rest_of_its_own_line() {
        // Within one value the open quote runs to its end, as Squid's list parser does...
        assert!(!CacheControl::parse(b"private=\"a, no-store").no_store);
        // ...but header lines are read one by one, so it never swallows the next line.
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("private=\"a"),
        );
        h.append(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        let cc = CacheControl::from_headers(&h);
        assert!(cc.no_store && cc.private);
    }

    #[test]
    fn bad_or_duplicate_numbers_are_conservative() {
        assert_eq!(CacheControl::parse(b"max-age=abc").max_age, Some(0));
        assert_eq!(CacheControl::parse(b"max-age").max_age, Some(0));
        assert_eq!(CacheControl::parse(b"max-age=-5").max_age, Some(0));
        assert_eq!(
            CacheControl::parse(b"max-age=60, max-age=10").max_age,
            Some(10)
        );
        assert_eq!(CacheControl::parse(b"max-age=\"30\"").max_age, Some(30));
        assert_eq!(
            CacheControl::parse(b"max-age=99999999999999999999999").max_age,
            Some(DELTA_MAX)
        );
    }

    #[test]
    fn request_directives() {
        let cc = CacheControl::parse(b"max-stale, min-fresh=3, only-if-cached");
        assert_eq!(cc.max_stale, Some(u64::MAX));
        assert_eq!(cc.min_fresh, Some(3));
        assert!(cc.only_if_cached);
        assert_eq!(CacheControl::parse(b"max-stale=9").max_stale, Some(9));
    }

    #[test]
    fn rfc5861_extensions() {
        let cc = CacheControl::parse(b"max-age=1, stale-while-revalidate=30, stale-if-error=60");
        assert_eq!(cc.stale_while_revalidate, Some(30));
        assert_eq!(cc.stale_if_error, Some(60));
    }

    #[test]
    fn several_lines_merge_and_pragma_applies_only_without_cache_control() {
        let mut h = HeaderMap::new();
        h.append("cache-control", HeaderValue::from_static("public"));
        h.append("cache-control", HeaderValue::from_static("max-age=9"));
        let cc = CacheControl::from_headers(&h);
        assert!(cc.public);
        assert_eq!(cc.max_age, Some(9));

        let mut h = HeaderMap::new();
        h.insert("pragma", HeaderValue::from_static("no-cache"));
        assert!(CacheControl::from_headers(&h).no_cache);
        h.insert("cache-control", HeaderValue::from_static("max-age=5"));
        assert!(!CacheControl::from_headers(&h).no_cache);
    }

    #[test]
    fn tokens() {
        assert!(contains_token(b"keep-alive, Upgrade", b"upgrade"));
        assert!(!contains_token(b"keep-alive", b"upgrade"));
    }
}
