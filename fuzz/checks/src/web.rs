//! The dashboard's and the admin API's small parsers: query-string values (percent-decoding,
//! the inverse of the CLI's encoder), the session cookie in a `Cookie` header, and the RTP
//! capture ring's records as the kernel writes them.

use velocache::{
    control::{percent_decode, query_escape},
    rtp::capture,
    web::session,
};

/// Query values and cookies: decoding never panics; whatever decodes, encodes back to a text
/// that decodes to the same value; a cookie found is a piece of the header.
pub fn admin_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(value) = percent_decode(&text) {
        let again = percent_decode(&query_escape(&value));
        assert_eq!(
            again.as_deref(),
            Some(value.as_str()),
            "escape/decode round trip"
        );
    }
    let plain = String::from_utf8_lossy(data).into_owned();
    assert_eq!(
        percent_decode(&query_escape(&plain)).as_deref(),
        Some(plain.as_str()),
        "any text survives being encoded for a query"
    );
    if let Some(v) = session::cookie(&text, session::COOKIE) {
        assert!(text.contains(v), "a cookie value comes from the header");
        assert!(!v.contains(';'), "a cookie value ends at its `;`");
    }
}

/// Capture ring records: a record is decoded whole or refused, never read past its end.
pub fn rtp_capture_event(data: &[u8]) {
    if let Some(frame) = capture::decode(data, 5_000_000_000, 1_700_000_000_000_000) {
        assert!(
            frame.data.len() + 16 <= data.len(),
            "the frame lies inside the record"
        );
        assert!(
            frame.ts_us <= 1_700_000_000_000_000,
            "a frame is never from the future"
        );
    }
}
