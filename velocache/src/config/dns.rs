//! `[dns]`: DNS interception (UDP and TCP 53), the answer cache and the upstreams.
use std::net::SocketAddr;

use rustls::pki_types::ServerName;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Invalid, Millis, Secs, intercept::service_section};

service_section!(
    /// `[dns]`
    DnsConfig, Dns, [Udp, Tcp], 53, 15053, {
        /// Where misses go, tried in order with failover: `10.0.0.53`, `[2001:db8::53]:53`, or
        /// DNS-over-TLS `tls://1.1.1.1:853#cloudflare-dns.com`. Empty: each query goes to the
        /// resolver its client asked, and answers are cached per resolver.
        upstreams: Vec<UpstreamSpec> = Vec::new(),
        /// How long one upstream may take before the next is tried, in milliseconds.
        upstream_timeout_ms: Millis = Millis(1_500),
        /// Answers are kept at least this long (seconds), whatever their TTL says.
        min_ttl: u32 = 0,
        /// Answers are kept at most this long (seconds).
        max_ttl: u32 = 86_400,
        /// NXDOMAIN / NODATA are kept at most this long (seconds; RFC 2308 SOA minimum below).
        max_negative_ttl: u32 = 3_600,
        /// How long past its TTL an answer may still be served when no upstream answers
        /// (RFC 8767 serve-stale; 0 turns it off).
        serve_stale_secs: Secs = Secs(86_400),
        /// TTL written into stale answers.
        stale_answer_ttl: u32 = 30,
        /// Refresh popular answers shortly before they expire.
        prefetch: bool = true,
        /// Hits an answer needs before it is prefetched.
        prefetch_min_hits: u32 = 3,
        /// Prefetch once less than this percentage of the TTL is left.
        prefetch_percent: u8 = 10,
        /// Most answers kept.
        cache_max_entries: u64 = 100_000,
        /// Most bytes kept (answers, keys and bookkeeping).
        cache_max_bytes: u64 = 64 * 1024 * 1024,
        /// What a `deny` rule answers: `nxdomain`, or `zero` (0.0.0.0 / ::).
        deny_answer: DenyAnswer = DenyAnswer::Nxdomain,
        /// A client TCP connection with no query for this long is closed (seconds).
        tcp_idle_timeout_secs: Secs = Secs(10),
        /// Queries waiting for an upstream at once; beyond, new misses get SERVFAIL. Without
        /// configured upstreams, one resolver may hold at most a quarter of them (a slow one
        /// cannot starve the others).
        max_pending_queries: u32 = 10_000,
        /// Answer the hottest cache entries in the kernel (XDP on `[datapath] lan_interfaces`):
        /// a plain UDP query whose answer sits there never reaches the daemon. Off by default:
        /// on a veth LAN the client-side peer needs GRO on to take the frames sent back.
        kernel_answers: bool = false,
        /// Hits a cache entry needs before it is answered in the kernel.
        kernel_min_hits: u32 = 2,
    }
);

impl DnsConfig {
    /// The `[dns]` checks.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.max_ttl == 0 || self.min_ttl > self.max_ttl {
            return Err(Invalid::new(
                "dns.min_ttl",
                "needs 0 <= min_ttl <= max_ttl and max_ttl >= 1",
            ));
        }
        if !(1..=60_000).contains(&self.upstream_timeout_ms.0) {
            return Err(Invalid::new("dns.upstream_timeout_ms", "must be 1..=60000"));
        }
        if self.stale_answer_ttl == 0 {
            return Err(Invalid::new("dns.stale_answer_ttl", "must be at least 1"));
        }
        if !(1..=50).contains(&self.prefetch_percent) {
            return Err(Invalid::new("dns.prefetch_percent", "must be 1..=50"));
        }
        if self.kernel_min_hits == 0 {
            return Err(Invalid::new("dns.kernel_min_hits", "must be at least 1"));
        }
        if self.cache_max_entries == 0 {
            return Err(Invalid::new("dns.cache_max_entries", "must be at least 1"));
        }
        if self.cache_max_bytes < 64 * 1024 {
            return Err(Invalid::new(
                "dns.cache_max_bytes",
                "must be at least 65536",
            ));
        }
        self.tcp_idle_timeout_secs
            .at_least_one("dns.tcp_idle_timeout_secs")?;
        if self.max_pending_queries == 0 {
            return Err(Invalid::new(
                "dns.max_pending_queries",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// What a DNS `deny` rule answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenyAnswer {
    /// NXDOMAIN: the name does not exist.
    Nxdomain,
    /// 0.0.0.0 for A, :: for AAAA, no records for other types.
    Zero,
}

/// One upstream resolver, as written in `[dns] upstreams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamSpec {
    /// Plain DNS: UDP, TCP when the answer is truncated. `1.2.3.4`, `1.2.3.4:53`, `[::1]:53`.
    Plain(SocketAddr),
    /// DNS-over-TLS (RFC 7858): `tls://1.1.1.1:853#cloudflare-dns.com` (the name after `#`
    /// is what the certificate must be valid for; without it, the address).
    Tls {
        /// Address.
        addr: SocketAddr,
        /// Name the certificate is checked against.
        server_name: String,
    },
}

impl UpstreamSpec {
    /// Parse one `upstreams` entry.
    pub fn parse(text: &str) -> Result<UpstreamSpec, String> {
        let text = text.trim();
        let (tls, rest) = match text.split_once("://") {
            Some(("tls", r)) => (true, r),
            Some(("udp" | "dns", r)) => (false, r),
            Some((scheme, _)) => {
                return Err(format!(
                    "`{text}`: unknown scheme `{scheme}` (use an address, or tls://ADDR#NAME)"
                ));
            }
            None => (false, text),
        };
        let (addr, name) = match rest.split_once('#') {
            Some((a, n)) if tls && !n.is_empty() => (a, Some(n.to_string())),
            Some(_) => return Err(format!("`{text}`: `#NAME` is only for tls:// upstreams")),
            None => (rest, None),
        };
        let port = if tls { 853 } else { 53 };
        let addr = parse_addr(addr, port)
            .ok_or_else(|| format!("`{text}`: not an IP address with an optional port"))?;
        if addr.port() == 0 {
            return Err(format!("`{text}`: port 0"));
        }
        if tls {
            let server_name = name.unwrap_or_else(|| addr.ip().to_string());
            ServerName::try_from(server_name.clone())
                .map_err(|e| format!("`{text}`: bad TLS name `{server_name}`: {e}"))?;
            Ok(UpstreamSpec::Tls { addr, server_name })
        } else {
            Ok(UpstreamSpec::Plain(addr))
        }
    }

    /// The upstream's address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            UpstreamSpec::Plain(a) | UpstreamSpec::Tls { addr: a, .. } => *a,
        }
    }

    /// How logs name it (also how it is written back, e.g. in `service status`).
    pub fn label(&self) -> String {
        match self {
            UpstreamSpec::Plain(a) => a.to_string(),
            UpstreamSpec::Tls { addr, server_name } => format!("tls://{addr}#{server_name}"),
        }
    }
}

impl Serialize for UpstreamSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.label())
    }
}

impl<'de> Deserialize<'de> for UpstreamSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        UpstreamSpec::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn parse_addr(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}
