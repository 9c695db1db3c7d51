//! Header handling a proxy owes both sides: hop-by-hop fields removed (RFC 9110 §7.6.1,
//! including those named in `Connection`), `Via` appended (§7.6.3), and the `Host` check.
use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, header};

use crate::cache::policy::is_hop_by_hop;

/// Remove hop-by-hop fields, and those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for n in named {
        headers.remove(n.as_str());
    }
    let hop: Vec<_> = headers
        .keys()
        .filter(|k| is_hop_by_hop(k))
        .cloned()
        .collect();
    for k in hop {
        headers.remove(k);
    }
}

/// Append our `Via` entry (`1.1 <pseudonym>`).
pub fn add_via(headers: &mut HeaderMap, version: http::Version, pseudonym: &HeaderValue) {
    let proto = match version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        _ => "1.1",
    };
    let mut v = Vec::with_capacity(4 + pseudonym.len());
    v.extend_from_slice(proto.as_bytes());
    v.push(b' ');
    v.extend_from_slice(pseudonym.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&v) {
        headers.append(header::VIA, v);
    }
}

/// How `Host` relates to the original destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCheck {
    /// `Host` is an address and it is the original destination's.
    Matches,
    /// `Host` is an address other than the original destination's.
    Mismatch,
    /// `Host` is a name (checked against DNS in the background).
    Name,
}

/// Compare a `Host` value with the original destination address.
pub fn check_host(host: &str, dst: IpAddr) -> HostCheck {
    let h = host.trim();
    let bare = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match h.rsplit_once(':') {
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => h,
        }
    };
    match bare.parse::<IpAddr>() {
        Ok(ip) => {
            let canon = |ip: IpAddr| match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            if canon(ip) == canon(dst) {
                HostCheck::Matches
            } else {
                HostCheck::Mismatch
            }
        }
        Err(_) => HostCheck::Name,
    }
}

/// Whether the request asks for a protocol upgrade (WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| crate::cache::cache_control::contains_token(v.as_bytes(), b"upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_fields() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn via_is_appended() {
        let p = HeaderValue::from_static("velocache");
        let mut h = HeaderMap::new();
        h.insert("via", HeaderValue::from_static("1.0 fred"));
        add_via(&mut h, http::Version::HTTP_11, &p);
        let all: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(all, vec!["1.0 fred", "1.1 velocache"]);
    }

    #[test]
    fn host_checks() {
        let dst: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(check_host("10.0.0.1", dst), HostCheck::Matches);
        assert_eq!(check_host("10.0.0.1:80", dst), HostCheck::Matches);
        assert_eq!(check_host("10.0.0.2", dst), HostCheck::Mismatch);
        assert_eq!(check_host("example.org", dst), HostCheck::Name);
        let dst6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(check_host("[fd00::1]:8080", dst6), HostCheck::Matches);
        assert_eq!(check_host("[fd00::2]", dst6), HostCheck::Mismatch);
    }

    #[test]
    fn upgrade_detection() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&h));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade(&h));
    }
}
