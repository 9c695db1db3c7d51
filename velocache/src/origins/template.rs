//! Path templates for ghost mode: a request's path and query in, its template out — the shape
//! it shares with requests that differ only in identifiers — plus how far apart two requests
//! of one template are.
//!
//! A path segment or query value that is a number (`123`), a UUID
//! (`0f8fad5b-d9cb-469f-a165-70867728950e`) or hash-like (16 or more hex digits, or 20 or more
//! characters of base64url with both letters and digits) becomes a variable (`{n}`, `{uuid}`,
//! `{hash}`); anything else stays literal. Query parameters are sorted by name, so their order
//! does not matter. `/users/42/orders?page=3` and `/users/7/orders?page=1` share the template
//! `/users/{n}/orders?page={n}`; `/users/42/profile` does not.

/// What kind of variable a piece of a URL is, if any (ghost mode's templates and the anomaly
/// detector's path shapes share it).
pub fn variable(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Some("{n}");
    }
    if is_uuid(s) {
        return Some("{uuid}");
    }
    let hex = s.len() >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let b64 = s.len() >= 20
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().any(|b| b.is_ascii_alphabetic());
    (hex || b64).then_some("{hash}")
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The pieces of a path and query: path segments, then `name=value` pairs sorted by name.
fn pieces(path_and_query: &str) -> (Vec<&str>, Vec<(&str, &str)>) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let segments = path.split('/').collect();
    let mut params: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    params.sort_unstable();
    (segments, params)
}

/// The template of a path and query.
pub fn template(path_and_query: &str) -> String {
    let (segments, params) = pieces(path_and_query);
    let mut out = String::with_capacity(path_and_query.len() + 8);
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(variable(seg).unwrap_or(seg));
    }
    for (i, (name, value)) in params.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        out.push('=');
        out.push_str(variable(value).unwrap_or(value));
    }
    out
}

/// How many pieces two requests of the same template differ in (smaller is nearer).
pub fn distance(a: &str, b: &str) -> usize {
    let (sa, pa) = pieces(a);
    let (sb, pb) = pieces(b);
    let segs = sa.iter().zip(&sb).filter(|(x, y)| x != y).count();
    let params = pa.iter().zip(&pb).filter(|(x, y)| x != y).count();
    segs + params + sa.len().abs_diff(sb.len()) + pa.len().abs_diff(pb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_uuids_and_hashes_become_variables_and_words_stay() {
        assert_eq!(template("/users/42/orders"), "/users/{n}/orders");
        assert_eq!(
            template("/items/0f8fad5b-d9cb-469f-a165-70867728950e"),
            "/items/{uuid}"
        );
        assert_eq!(
            template("/blobs/3f786850e387550fdab836ed7e6dc881de23001b"),
            "/blobs/{hash}"
        );
        assert_eq!(
            template("/t/dGhpcyBpcyBhIHRva2VuMTIz"),
            "/t/{hash}",
            "base64url with letters and digits"
        );
        assert_eq!(template("/about/team"), "/about/team");
        assert_eq!(
            template("/v2/library"),
            "/v2/library",
            "short words with digits stay"
        );
        assert_eq!(template("/deadbeef"), "/deadbeef", "short hex is a word");
        assert_eq!(template("/"), "/");
    }

    #[test]
    fn query_values_become_variables_and_parameter_order_does_not_matter() {
        assert_eq!(
            template("/search?q=shoes&page=3"),
            "/search?page={n}&q=shoes"
        );
        assert_eq!(
            template("/search?page=9&q=shoes"),
            template("/search?q=shoes&page=1")
        );
        assert_ne!(
            template("/search?q=boots&page=1"),
            template("/search?q=shoes&page=1")
        );
        assert_eq!(template("/x?flag"), "/x?flag=");
    }

    #[test]
    fn distance_counts_the_pieces_that_differ() {
        assert_eq!(distance("/u/1/o/2", "/u/1/o/2"), 0);
        assert_eq!(distance("/u/1/o/2", "/u/1/o/3"), 1);
        assert_eq!(distance("/u/1/o/2", "/u/9/o/3"), 2);
        assert_eq!(distance("/s?page=1&q=a", "/s?q=a&page=2"), 1);
    }
}
