//! RFC 9111 decisions, pure and synchronous: request and response headers in, verdicts out.
//!
//! - [`storable`]: may a shared cache store this response (§3)?
//! - [`lifetime`]: its freshness lifetime (§4.2.1), heuristic included (§4.2.2), or a rule's.
//! - [`initial_age`] / [`current_age`]: the `Age` arithmetic (§4.2.3).
//! - [`evaluate`]: can a stored response answer this request now — fresh, stale but usable
//!   while revalidating (RFC 5861), or must it be revalidated (§4.2.4, §5.2)?
//! - [`stale_if_error`]: may it answer when the origin fails (RFC 5861)?
//! - [`vary_capture`] / [`vary_matches`]: secondary keys (§4.1).
//! - [`conditional_headers`], [`merge_304`]: revalidation with the origin (§4.3).
//! - [`client_not_modified`]: answering the client's own conditional request (RFC 9110 §13).
//! - [`invalidates`]: unsafe methods invalidate (§4.4).
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use super::{cache_control::CacheControl, meta::ObjectMeta};

/// Tunables of the heuristic freshness (§4.2.2).
#[derive(Debug, Clone, Copy)]
pub struct Heuristic {
    /// Fraction of the time since `Last-Modified`, in percent (10 is the customary value).
    pub percent: u64,
    /// Upper bound, seconds.
    pub max_secs: u64,
}

impl Default for Heuristic {
    fn default() -> Self {
        Heuristic {
            percent: 10,
            max_secs: 86_400,
        }
    }
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// Only GET responses are stored.
    Method,
    /// The request said `no-store`.
    RequestNoStore,
    /// The response said `no-store`.
    NoStore,
    /// The response is `private`.
    Private,
    /// The request carried `Authorization` and the response did not allow sharing.
    Authorization,
    /// `Vary: *`.
    VaryStar,
    /// `Set-Cookie` without `public` or a rule: one client's cookie must not reach others.
    SetCookie,
    /// A status code this cache does not store.
    Status,
    /// No freshness, no validator, no rule: it could never be reused.
    Unusable,
}

impl NotStorable {
    /// Reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::RequestNoStore => "request no-store",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::VaryStar => "vary *",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::Status => "status",
            NotStorable::Unusable => "no freshness or validator",
        }
    }
}

/// Status codes cacheable by default (RFC 9110 §15.1), 206 excepted: partial responses are
/// stored only as slices the cache asked for itself.
fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether the response has explicit freshness (§4.2.1).
fn explicit_freshness(cc: &CacheControl, headers: &HeaderMap) -> bool {
    cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(header::EXPIRES)
}

/// RFC 9111 §3: may this response to a GET be stored by a shared cache? `rule_ttl` is a
/// rule's `ttl_override` (it supplies freshness, never overrides `no-store` or `private`).
pub fn storable(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
    rule_ttl: Option<u64>,
) -> Result<(), NotStorable> {
    if method != Method::GET {
        return Err(NotStorable::Method);
    }
    if CacheControl::from_headers(req).no_store {
        return Err(NotStorable::RequestNoStore);
    }
    let cc = CacheControl::from_headers(resp);
    if cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if cc.private {
        return Err(NotStorable::Private);
    }
    if req.contains_key(header::AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    if vary_names(resp).is_none() {
        return Err(NotStorable::VaryStar);
    }
    // RFC 9111 would allow it; nginx and Varnish refuse it by default, and so do we: a stored
    // Set-Cookie is one client's session handed to the next.
    if resp.contains_key(header::SET_COOKIE) && !cc.public && rule_ttl.is_none() {
        return Err(NotStorable::SetCookie);
    }
    let s = status.as_u16();
    let explicit = explicit_freshness(&cc, resp);
    // §3: any final status may be stored when the origin gave it explicit freshness (a
    // `max-age` on a 403 or a 503 is the origin's word). 206 and 304 are not representations
    // of their own here: slices and revalidations are handled apart. A rule's `ttl_override`
    // supplies freshness only to what a cache stores without being told (and to 302/307),
    // so a rule for a host never turns its error pages into cached answers.
    let final_status = (200..600).contains(&s) && s != 206 && s != 304;
    let by_rule = rule_ttl.is_some() && matches!(s, 302 | 307);
    if !final_status || !(heuristically_cacheable(s) || explicit || by_rule) {
        return Err(NotStorable::Status);
    }
    let validator = resp.contains_key(header::ETAG) || resp.contains_key(header::LAST_MODIFIED);
    if !explicit && !validator && rule_ttl.is_none() {
        return Err(NotStorable::Unusable);
    }
    Ok(())
}

/// Parse an HTTP date header as unix seconds.
pub fn date_secs(headers: &HeaderMap, name: HeaderName) -> Option<u64> {
    let v = headers.get(name)?.to_str().ok()?;
    let t = httpdate::parse_http_date(v.trim()).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// Freshness lifetime in seconds (§4.2.1): a rule's override, `s-maxage`, `max-age`,
/// `Expires - Date`, or the heuristic from `Last-Modified`; 0 when nothing applies.
pub fn lifetime(
    status: StatusCode,
    resp: &HeaderMap,
    response_time: u64,
    heuristic: Heuristic,
    rule_ttl: Option<u64>,
) -> u64 {
    if let Some(ttl) = rule_ttl {
        return ttl;
    }
    let cc = CacheControl::from_headers(resp);
    if let Some(s) = cc.s_maxage {
        return s;
    }
    if let Some(m) = cc.max_age {
        return m;
    }
    let date = date_secs(resp, header::DATE).unwrap_or(response_time);
    if resp.contains_key(header::EXPIRES) {
        // An invalid Expires means "already expired" (§5.3).
        return date_secs(resp, header::EXPIRES).map_or(0, |e| e.saturating_sub(date));
    }
    if heuristically_cacheable(status.as_u16())
        && let Some(lm) = date_secs(resp, header::LAST_MODIFIED)
    {
        return (date.saturating_sub(lm) * heuristic.percent / 100).min(heuristic.max_secs);
    }
    0
}

/// RFC 9111 §4.2.3 corrected initial age of a response received at `response_time` for a
/// request sent at `request_time`.
pub fn initial_age(resp: &HeaderMap, request_time: u64, response_time: u64) -> u64 {
    let date = date_secs(resp, header::DATE).unwrap_or(response_time);
    let apparent = response_time.saturating_sub(date);
    // §5.1: a list-valued `Age` (or several `Age` fields) counts by its first member
    // (`Age: 7200, 0` is two hours old, not unparseable and so new).
    let age_value = resp
        .get(header::AGE)
        .and_then(|v| {
            let first = v.as_bytes().split(|&b| b == b',').next()?;
            super::cache_control::parse_delta(first.trim_ascii())
        })
        .unwrap_or(0);
    let delay = response_time.saturating_sub(request_time);
    apparent.max(age_value.saturating_add(delay))
}

/// The stored response's age now (`now` in unix seconds).
pub fn current_age(meta: &ObjectMeta, now: u64) -> u64 {
    meta.initial_age
        .saturating_add(now.saturating_sub(meta.response_time))
}

/// What a stored response may do for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    /// Serve it.
    Fresh,
    /// Serve it now and revalidate in the background (`stale-while-revalidate`, or the
    /// client's `max-stale`).
    StaleWhileRevalidate,
    /// Revalidate with the origin before using it.
    Revalidate,
}

/// RFC 9111 §4.2 and §5.2: can `meta` answer a request with headers `req` at `now`?
pub fn evaluate(meta: &ObjectMeta, req: &HeaderMap, now: u64) -> Usable {
    let req_cc = CacheControl::from_headers(req);
    let resp_cc = CacheControl::from_headers(&meta.headers);
    if req_cc.no_cache || (resp_cc.no_cache && !meta.ttl_override) {
        return Usable::Revalidate;
    }
    let age = current_age(meta, now);
    if let Some(max_age) = req_cc.max_age
        && age > max_age
    {
        return Usable::Revalidate;
    }
    let min_fresh = req_cc.min_fresh.unwrap_or(0);
    if age.saturating_add(min_fresh) < meta.lifetime {
        return Usable::Fresh;
    }
    // Stale from here on.
    let strict = resp_cc.must_revalidate || resp_cc.proxy_revalidate || resp_cc.s_maxage.is_some();
    if strict && !meta.ttl_override {
        return Usable::Revalidate;
    }
    let staleness = age.saturating_sub(meta.lifetime);
    if let Some(swr) = resp_cc.stale_while_revalidate
        && staleness < swr
    {
        return Usable::StaleWhileRevalidate;
    }
    if let Some(ms) = req_cc.max_stale
        && staleness <= ms
    {
        return Usable::StaleWhileRevalidate;
    }
    Usable::Revalidate
}

/// RFC 5861 `stale-if-error`: may a stale stored response answer when the origin fails
/// (errors, or answers 5xx)? Never for `must-revalidate`, `proxy-revalidate` or `no-cache`.
pub fn stale_if_error(meta: &ObjectMeta, now: u64) -> bool {
    let cc = CacheControl::from_headers(&meta.headers);
    if cc.must_revalidate || cc.proxy_revalidate || cc.no_cache {
        return false;
    }
    let staleness = current_age(meta, now).saturating_sub(meta.lifetime);
    cc.stale_if_error.is_some_and(|window| staleness <= window)
}

/// The header names a response varies on, lower-case; `None` for `Vary: *`.
fn vary_names(resp: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for v in resp.get_all(header::VARY) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = std::str::from_utf8(part).unwrap_or("").trim();
            if part.is_empty() {
                continue;
            }
            if part == "*" {
                return None;
            }
            if let Ok(n) = HeaderName::from_bytes(part.to_ascii_lowercase().as_bytes())
                && !names.contains(&n)
            {
                names.push(n);
            }
        }
    }
    Some(names)
}

/// The request's values of every header `resp` varies on (`None` for `Vary: *`), each
/// normalised: several lines joined by `", "`, surrounding whitespace removed.
pub fn vary_capture(
    resp: &HeaderMap,
    req: &HeaderMap,
) -> Option<Vec<(HeaderName, Option<HeaderValue>)>> {
    let names = vary_names(resp)?;
    Some(
        names
            .into_iter()
            .map(|n| {
                let v = normalised(req, &n);
                (n, v)
            })
            .collect(),
    )
}

fn normalised(req: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let parts: Vec<&[u8]> = req
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes().trim_ascii())
        .collect();
    match parts.as_slice() {
        [] => None,
        [one] => HeaderValue::from_bytes(one).ok(),
        many => HeaderValue::from_bytes(&many.join(&b", "[..])).ok(),
    }
}

/// Whether a request selects the stored variant (§4.1).
pub fn vary_matches(meta: &ObjectMeta, req: &HeaderMap) -> bool {
    meta.vary
        .iter()
        .all(|(name, stored)| normalised(req, name).as_ref() == stored.as_ref())
}

/// `If-None-Match` / `If-Modified-Since` for revalidating `meta` with its origin.
pub fn conditional_headers(meta: &ObjectMeta) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(etag) = meta.headers.get(header::ETAG) {
        out.push((header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(lm) = meta.headers.get(header::LAST_MODIFIED) {
        out.push((header::IF_MODIFIED_SINCE, lm.clone()));
    }
    out
}

/// Whether `meta` has a validator at all.
pub fn has_validator(meta: &ObjectMeta) -> bool {
    meta.headers.contains_key(header::ETAG) || meta.headers.contains_key(header::LAST_MODIFIED)
}

/// Headers a 304 must not change in the stored response (§3.2): the body's framing.
fn kept_on_304(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::CONTENT_RANGE
        || name == header::TRANSFER_ENCODING
        || name == header::AGE
}

/// Stored headers updated with a 304's (§3.2, §4.3.4): every header the 304 carries replaces
/// the stored one of that name, except the body's framing.
pub fn merge_304(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut out = stored.clone();
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in not_modified {
        if kept_on_304(name) || is_hop_by_hop(name) {
            continue;
        }
        if !replaced.contains(&name) {
            out.remove(name);
            replaced.push(name);
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Whether a 304 is about the stored response (§4.3.4: strong ETag or Last-Modified agree).
pub fn not_modified_matches(meta: &ObjectMeta, not_modified: &HeaderMap) -> bool {
    match (
        not_modified.get(header::ETAG),
        meta.headers.get(header::ETAG),
    ) {
        (Some(a), Some(b)) => return weak_eq(a.as_bytes(), b.as_bytes()),
        (Some(_), None) => return false,
        _ => {}
    }
    match (
        not_modified.get(header::LAST_MODIFIED),
        meta.headers.get(header::LAST_MODIFIED),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

fn opaque(tag: &[u8]) -> &[u8] {
    tag.trim_ascii()
        .strip_prefix(b"W/")
        .unwrap_or(tag.trim_ascii())
}

/// Weak comparison of two entity tags (RFC 9110 §8.8.3.2).
fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    opaque(a) == opaque(b)
}

/// RFC 9110 §13.1.2/§13.1.3: the client's own `If-None-Match` / `If-Modified-Since` against the
/// stored response — true means answer 304.
pub fn client_not_modified(meta: &ObjectMeta, req: &HeaderMap) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH) {
        let Some(etag) = meta.headers.get(header::ETAG) else {
            return false;
        };
        let inm = inm.as_bytes();
        if inm.trim_ascii() == b"*" {
            return true;
        }
        return inm
            .split(|&b| b == b',')
            .any(|t| weak_eq(t, etag.as_bytes()));
    }
    if let (Some(ims), Some(lm)) = (
        date_secs(req, header::IF_MODIFIED_SINCE),
        date_secs(&meta.headers, header::LAST_MODIFIED),
    ) {
        return lm <= ims;
    }
    false
}

/// `If-Range` check (RFC 9110 §13.1.5): may a Range be honoured for this stored response?
pub fn if_range_allows(meta: &ObjectMeta, req: &HeaderMap) -> bool {
    let Some(v) = req.get(header::IF_RANGE) else {
        return true;
    };
    let v = v.as_bytes().trim_ascii();
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        // Strong comparison only.
        return !v.starts_with(b"W/")
            && meta
                .headers
                .get(header::ETAG)
                .is_some_and(|e| !e.as_bytes().starts_with(b"W/") && e.as_bytes() == v);
    }
    match (
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok()),
        meta.headers.get(header::LAST_MODIFIED),
    ) {
        (Some(_), Some(lm)) => lm.as_bytes() == v,
        _ => false,
    }
}

/// Hop-by-hop header fields (RFC 9110 §7.6.1) that a proxy never forwards or stores; the
/// names listed in `Connection` are checked separately by the proxy.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// §4.4: a non-error response to an unsafe method invalidates the stored target URI.
pub fn invalidates(method: &Method, status: StatusCode) -> bool {
    let safe = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    !safe && (status.is_success() || status.is_redirection())
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
