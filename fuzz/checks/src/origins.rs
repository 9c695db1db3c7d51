//! Ghost mode's path templates (`velocache::origins::template`): any path and query in, a
//! template out that never depends on the order of query parameters and keeps the path's
//! segments; a request is at distance 0 from itself.
use velocache::origins::template::{distance, template};

/// The `origins_template` check.
pub fn origins_template(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let t = template(s);
    assert_eq!(distance(s, s), 0, "{s:?} is not at distance 0 from itself");
    let path = |x: &str| x.split('?').next().unwrap_or("").split('/').count();
    assert_eq!(
        path(&t),
        path(s),
        "{s:?} -> {t:?} changed the path's segments"
    );
    if let Some((p, query)) = s.split_once('?') {
        let mut params: Vec<&str> = query.split('&').collect();
        params.reverse();
        let reordered = format!("{p}?{}", params.join("&"));
        assert_eq!(
            template(&reordered),
            t,
            "{s:?} and {reordered:?} differ only in parameter order"
        );
    }
}
