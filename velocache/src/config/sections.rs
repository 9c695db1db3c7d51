//! The configuration sections, their defaults and `validate()`.
//!
//! Defaults are what a gateway with no configuration file would want: every service on, the
//! standard ports intercepted, listeners on high ports that clients never address directly.
use std::{collections::HashMap, path::PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Process-wide settings.
    pub daemon: DaemonConfig,
    /// Logging.
    pub log: LogConfig,
    /// Kernel programs, interfaces, bypass lists, policy routing.
    pub datapath: DatapathConfig,
    /// Plain HTTP interception (TCP 80).
    pub http: HttpConfig,
    /// TLS interception (TCP 443).
    pub https: HttpsConfig,
    /// DNS interception (UDP and TCP 53).
    pub dns: DnsConfig,
    /// SIP interception (UDP and TCP 5060).
    pub sip: SipConfig,
    /// The operator's rules file.
    pub rules: RulesConfig,
    /// TLS interception: the local CA, generated certificates, upstream trust.
    pub tls: TlsConfig,
    /// The admin API (Unix socket, optional TCP listener) and the metrics endpoint.
    pub admin: AdminConfig,
}

/// `[admin]`
///
/// The admin API always listens on `<daemon.run_dir>/admin.sock` (mode 0600: root only). A TCP
/// listener is off by default: it exposes the same API to the network, so it requires a bearer
/// token read from `token_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Also serve the admin API on this TCP address (e.g. `127.0.0.1:9180`). Off when unset.
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token TCP clients must send (`Authorization: Bearer …`); required
    /// with `tcp_listen`. Keep it 0600; surrounding whitespace is ignored.
    pub token_file: Option<PathBuf>,
    /// Serve `/metrics` (and nothing else, without a token) on this TCP address for Prometheus,
    /// e.g. `0.0.0.0:9181`. Off when unset; `/metrics` is always on the admin socket.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// `[tls]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Where the local CA's certificate and key live (default `<state_dir>/ca`). The key file is
    /// created with mode 0600 and never logged.
    pub ca_dir: Option<PathBuf>,
    /// Extra PEM files of CA certificates trusted for upstream connections, on top of the
    /// system's and the Mozilla (webpki) roots.
    pub extra_roots: Vec<PathBuf>,
    /// Generated leaf certificates kept in memory (one per SNI).
    pub leaf_cache_entries: u64,
    /// Validity of generated leaf certificates, in days.
    pub leaf_validity_days: u32,
    /// How long to wait for a client's ClientHello before splicing whatever came.
    pub hello_timeout_ms: u64,
    /// Hosts whose clients pin their certificates: never intercepted unless a rule names the
    /// host exactly. Globs allowed.
    pub pinned_hosts: Vec<String>,
    /// Learn pinning: a client that aborts the handshake with our certificate gets that host
    /// spliced (not intercepted) for `pinning_memory_secs`.
    pub learn_pinning: bool,
    /// How long a learned pinning is remembered.
    pub pinning_memory_secs: u64,
    /// The host name under which intercepted plain HTTP serves the CA certificate and install
    /// instructions (like mitmproxy's mitm.it).
    pub ca_page_host: String,
    /// The address the DNS service answers for `ca_page_host`: any address the LAN routes
    /// through the gateway will do (the HTTP proxy answers the page by name, whatever the
    /// destination); the default is from the benchmarking range 198.18.0.0/15, which no
    /// network serves.
    pub ca_page_address: std::net::Ipv4Addr,
    /// Destinations whose TLS connections are always steered to the daemon (then spliced or
    /// decrypted by the rules). Other connections are steered only when their address came from
    /// a DNS answer (through the gateway) for a name a rule could act on; the rest are forwarded
    /// by the kernel and observed. `["0.0.0.0/0", "::/0"]` steers every TLS connection.
    pub steer_prefixes: Vec<IpNet>,
    /// An observed (not steered) TLS connection with no packet for this long is reported and
    /// forgotten; later packets still pass.
    pub observed_idle_timeout_secs: u64,
    /// Join the two sockets of a spliced connection in the kernel (sockmap): its bytes never
    /// reach the daemon. Off: `splice(2)` through a pipe (no copies either, more wake-ups).
    pub kernel_relay: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_dir: None,
            extra_roots: Vec::new(),
            leaf_cache_entries: 10_000,
            leaf_validity_days: 30,
            hello_timeout_ms: 5_000,
            // Platforms and apps known to pin: intercepting them only breaks them.
            pinned_hosts: [
                "*.apple.com",
                "*.icloud.com",
                "*.mzstatic.com",
                "*.push.apple.com",
                "*.googleapis.com",
                "*.gvt1.com",
                "*.whatsapp.net",
                "*.signal.org",
                "*.dropbox.com",
                "*.windowsupdate.com",
                "*.update.microsoft.com",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            learn_pinning: true,
            pinning_memory_secs: 86_400,
            ca_page_host: "velocache.ca".into(),
            ca_page_address: std::net::Ipv4Addr::new(198, 18, 0, 80),
            steer_prefixes: Vec::new(),
            observed_idle_timeout_secs: 300,
            kernel_relay: true,
        }
    }
}

/// `[rules]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Path of `rules.toml` (spec B-1). None: no rules, every service does its default.
    pub file: Option<PathBuf>,
}

/// `[daemon]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Where persistent state (cache index, CA) lives.
    pub state_dir: PathBuf,
    /// Where runtime files (admin socket) live.
    pub run_dir: PathBuf,
    /// On SIGTERM, how long in-flight flows may finish after new flows stop being intercepted.
    pub shutdown_grace_secs: u64,
    /// How often kernel counters are logged (0 = never).
    pub stats_interval_secs: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            state_dir: PathBuf::from("/var/lib/velocache"),
            run_dir: PathBuf::from("/run/velocache"),
            shutdown_grace_secs: 10,
            stats_interval_secs: 60,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (JSON when `VELOCACHE_ENV=production`, pretty otherwise), `json` or `pretty`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,velocache::dns=debug`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON in production (`VELOCACHE_ENV=production`), pretty otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// `[datapath]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatapathConfig {
    /// LAN interfaces the classifier is attached to. Empty: nothing is intercepted.
    pub lan_interfaces: Vec<String>,
    /// Client prefixes never intercepted.
    pub bypass_clients: Vec<IpNet>,
    /// Destination prefixes never intercepted.
    pub bypass_destinations: Vec<IpNet>,
    /// Also intercept packets addressed to the gateway's own addresses (off: a service running on
    /// the gateway itself keeps its clients).
    pub intercept_gateway_addresses: bool,
    /// Mark the classifier sets on steered packets.
    pub mark: u32,
    /// Routing table holding the `local` default routes for marked packets.
    pub route_table: u32,
    /// Priority of the `fwmark` policy rule.
    pub rule_priority: u32,
    /// `auto` (TCX where the kernel has it), `tcx` or `netlink` (clsact).
    pub attach: AttachMode,
    /// A UDP pass-through session with no datagram for this long is closed and logged.
    pub udp_idle_timeout_secs: u64,
    /// Insert `meta mark <mark> accept` first in every nftables input chain (iptables-nft's
    /// INPUT included), so a router whose input policy drops does not drop steered packets.
    pub firewall_accept: bool,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            lan_interfaces: Vec::new(),
            bypass_clients: Vec::new(),
            bypass_destinations: Vec::new(),
            intercept_gateway_addresses: false,
            mark: 0x5643,
            route_table: 0x5643,
            rule_priority: 90,
            attach: AttachMode::Auto,
            udp_idle_timeout_secs: 30,
            firewall_accept: true,
        }
    }
}

/// How the classifier is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// TCX links where the kernel supports them (≥ 6.6), netlink clsact otherwise.
    Auto,
    /// TCX links only.
    Tcx,
    /// Netlink `cls_bpf` on a clsact qdisc.
    Netlink,
}

/// Transport of an intercepted port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// What every service section shares: whether it is on, which destination ports are
/// intercepted, and the port of the daemon's own listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intercept {
    /// Service name for logs and the kernel map.
    pub service: velocache_common::Service,
    /// Off: the service's ports are not intercepted at all.
    pub enabled: bool,
    /// Intercepted destination ports.
    pub ports: Vec<u16>,
    /// The daemon's transparent listener port.
    pub listen_port: u16,
    /// Transports this service uses.
    pub transports: &'static [Transport],
}

macro_rules! service_section {
    ($(#[$doc:meta])* $name:ident, $svc:ident, [$($tr:ident),+], $port:expr, $listen:expr,
     { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $default:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// Off: this service's ports are not intercepted.
            pub enabled: bool,
            /// Intercepted destination ports.
            pub ports: Vec<u16>,
            /// Port of the daemon's transparent listener (clients never address it).
            pub listen_port: u16,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    enabled: true,
                    ports: vec![$port],
                    listen_port: $listen,
                    $($field: $default,)*
                }
            }
        }

        impl $name {
            /// The interception part of this section.
            pub fn intercept(&self) -> Intercept {
                Intercept {
                    service: velocache_common::Service::$svc,
                    enabled: self.enabled,
                    ports: self.ports.clone(),
                    listen_port: self.listen_port,
                    transports: &[$(Transport::$tr),+],
                }
            }
        }
    };
}

service_section!(
    /// `[http]`
    HttpConfig, Http, [Tcp], 80, 15080, {
        /// Store responses (off: a transparent proxy that never stores).
        cache: bool = true,
        /// Where the disk cache lives (default `<state_dir>/http-cache`).
        cache_dir: Option<PathBuf> = None,
        /// Size limit of the disk cache; least recently used objects are evicted past it.
        cache_max_bytes: u64 = 10 << 30,
        /// Larger objects are passed through, not stored.
        max_object_bytes: u64 = 8 << 30,
        /// Objects are stored in slices of this size; a Range request is a hit once its
        /// slices are stored, and a Range miss fetches only the slices it lacks.
        slice_bytes: u64 = 1 << 20,
        /// RAM kept for small, complete objects (answered without touching the disk).
        memory_cache_bytes: u64 = 64 << 20,
        /// Objects up to this size are eligible for the RAM tier.
        memory_object_max_bytes: u64 = 256 << 10,
        /// A download that makes no progress for this long no longer blocks other clients
        /// asking for the same object (they get their own fetch).
        lock_age_ms: u64 = 30_000,
        /// How long a client waits for another client's download of the same object to
        /// produce headers or more bytes before going to the origin itself.
        lock_wait_ms: u64 = 10_000,
        /// Connecting to an origin.
        connect_timeout_ms: u64 = 10_000,
        /// Waiting for an origin's response headers.
        response_timeout_ms: u64 = 60_000,
        /// Idle keep-alive connections to origins are closed after this long.
        upstream_idle_secs: u64 = 90,
        /// A client connection must send a request's headers within this long.
        header_read_timeout_ms: u64 = 30_000,
        /// Heuristic freshness: this percentage of the time since `Last-Modified`.
        heuristic_percent: u64 = 10,
        /// Upper bound of heuristic freshness, seconds.
        heuristic_max_secs: u64 = 86_400,
        /// `fdatasync` slices and metadata before they become visible (survives power loss,
        /// not only a crash of the daemon).
        fsync: bool = true,
        /// io_uring submission queue size of the disk thread.
        uring_entries: u32 = 256,
        /// The pseudonym in `Via` headers.
        via: String = "velocache".into(),
    }
);
service_section!(
    /// `[https]`
    HttpsConfig, Https, [Tcp], 443, 15443, {}
);
service_section!(
    /// `[dns]`
    DnsConfig, Dns, [Udp, Tcp], 53, 15053, {
        /// Where misses go, tried in order with failover: `10.0.0.53`, `[2001:db8::53]:53`, or
        /// DNS-over-TLS `tls://1.1.1.1:853#cloudflare-dns.com`. Empty: each query goes to the
        /// resolver its client asked, and answers are cached per resolver.
        upstreams: Vec<String> = Vec::new(),
        /// How long one upstream may take before the next is tried, in milliseconds.
        upstream_timeout_ms: u64 = 1_500,
        /// Answers are kept at least this long (seconds), whatever their TTL says.
        min_ttl: u32 = 0,
        /// Answers are kept at most this long (seconds).
        max_ttl: u32 = 86_400,
        /// NXDOMAIN / NODATA are kept at most this long (seconds; RFC 2308 SOA minimum below).
        max_negative_ttl: u32 = 3_600,
        /// How long past its TTL an answer may still be served when no upstream answers
        /// (RFC 8767 serve-stale; 0 turns it off).
        serve_stale_secs: u64 = 86_400,
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
        tcp_idle_timeout_secs: u64 = 10,
        /// Queries waiting for an upstream at once; beyond, new misses get SERVFAIL.
        max_pending_queries: u32 = 10_000,
    }
);

/// What a DNS `deny` rule answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenyAnswer {
    /// NXDOMAIN: the name does not exist.
    Nxdomain,
    /// 0.0.0.0 for A, :: for AAAA, no records for other types.
    Zero,
}
service_section!(
    /// `[sip]`
    SipConfig, Sip, [Udp, Tcp], 5060, 15060, {
        /// Relay learned RTP/RTCP flows in the kernel (XDP) instead of the stack.
        media_fast_path: bool = true,
        /// Interfaces the RTP fast path is attached to. Empty: `[datapath] lan_interfaces`
        /// only (then media from the WAN side is forwarded by the stack). List the WAN side too.
        media_interfaces: Vec<String> = Vec::new(),
        /// Media anchoring for NAT'd clients: SDP addresses become gateway ports from the range
        /// below, and the kernel rewrites RTP/RTCP to the real peer (rtpengine's job).
        anchor_media: bool = false,
        /// First port of the anchoring range (even; RTP on even ports, RTCP on the next one).
        anchor_port_min: u16 = 30000,
        /// Last port of the anchoring range.
        anchor_port_max: u16 = 39999,
        /// A call whose media flows all saw no packet for this long is ended (`rtp_timeout`)
        /// and its kernel flows removed.
        rtp_idle_timeout_secs: u64 = 30,
        /// An INVITE that gets no final answer for this long is dropped from the call table.
        setup_timeout_secs: u64 = 180,
        /// Calls tracked at once; beyond it new calls are forwarded but not recorded.
        max_calls: usize = 10_000,
        /// bpffs directory where the fast path's maps are pinned so learned flows survive a
        /// daemon restart. Not on bpffs: no pinning (flows die with the daemon).
        pin_dir: PathBuf = PathBuf::from("/sys/fs/bpf/velocache"),
    }
);

/// A validation failure: the dotted key it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted key, e.g. `dns.listen_port`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl Invalid {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl Config {
    /// The interception settings of every service, in service order.
    pub fn intercepts(&self) -> Vec<Intercept> {
        vec![
            self.http.intercept(),
            self.https.intercept(),
            self.dns.intercept(),
            self.sip.intercept(),
        ]
    }

    /// Checks that types cannot express. The first problem found is returned.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .map_err(|e| Invalid::new("log.level", format!("not a valid filter: {e}")))?;
        let dp = &self.datapath;
        if dp.mark == 0 {
            return Err(Invalid::new("datapath.mark", "must not be 0"));
        }
        // 253..=255 are the kernel's default, main and local tables.
        if dp.route_table == 0 || (253..=255).contains(&dp.route_table) {
            return Err(Invalid::new(
                "datapath.route_table",
                "must not be 0 or a reserved table (253 default, 254 main, 255 local)",
            ));
        }
        if dp.rule_priority == 0 {
            return Err(Invalid::new(
                "datapath.rule_priority",
                "0 is the kernel's `local` rule; choose 1..32765",
            ));
        }
        for (i, name) in dp.lan_interfaces.iter().enumerate() {
            if name.is_empty() || name.len() > 15 || name.contains('/') {
                return Err(Invalid::new(
                    format!("datapath.lan_interfaces[{i}]"),
                    format!("`{name}` is not a valid interface name"),
                ));
            }
        }
        let tls = &self.tls;
        for (i, h) in tls.pinned_hosts.iter().enumerate() {
            if let Err(e) = crate::rules::HostPattern::new(h) {
                return Err(Invalid::new(format!("tls.pinned_hosts[{i}]"), e));
            }
        }
        if tls.leaf_validity_days == 0 || tls.leaf_validity_days > 397 {
            // Browsers refuse leaf certificates valid for more than 397 days.
            return Err(Invalid::new("tls.leaf_validity_days", "must be 1..=397"));
        }
        if tls.leaf_cache_entries == 0 {
            return Err(Invalid::new("tls.leaf_cache_entries", "must be at least 1"));
        }
        if tls.ca_page_host.is_empty() || tls.ca_page_host.contains(['/', ' ', ':']) {
            return Err(Invalid::new(
                "tls.ca_page_host",
                "must be a plain host name",
            ));
        }
        if tls.observed_idle_timeout_secs == 0 {
            return Err(Invalid::new(
                "tls.observed_idle_timeout_secs",
                "must be at least 1",
            ));
        }
        if tls.steer_prefixes.len() > velocache_common::tls::MAX_STEER_PREFIXES as usize / 2 {
            return Err(Invalid::new(
                "tls.steer_prefixes",
                format!(
                    "at most {} prefixes",
                    velocache_common::tls::MAX_STEER_PREFIXES / 2
                ),
            ));
        }
        self.http.check()?;
        let dns = &self.dns;
        for (i, u) in dns.upstreams.iter().enumerate() {
            crate::dns::UpstreamSpec::parse(u)
                .map_err(|e| Invalid::new(format!("dns.upstreams[{i}]"), e))?;
        }
        if dns.max_ttl == 0 || dns.min_ttl > dns.max_ttl {
            return Err(Invalid::new(
                "dns.min_ttl",
                "needs 0 <= min_ttl <= max_ttl and max_ttl >= 1",
            ));
        }
        if !(1..=60_000).contains(&dns.upstream_timeout_ms) {
            return Err(Invalid::new("dns.upstream_timeout_ms", "must be 1..=60000"));
        }
        if dns.stale_answer_ttl == 0 {
            return Err(Invalid::new("dns.stale_answer_ttl", "must be at least 1"));
        }
        if !(1..=50).contains(&dns.prefetch_percent) {
            return Err(Invalid::new("dns.prefetch_percent", "must be 1..=50"));
        }
        if dns.cache_max_entries == 0 {
            return Err(Invalid::new("dns.cache_max_entries", "must be at least 1"));
        }
        if dns.cache_max_bytes < 64 * 1024 {
            return Err(Invalid::new(
                "dns.cache_max_bytes",
                "must be at least 65536",
            ));
        }
        if dns.tcp_idle_timeout_secs == 0 {
            return Err(Invalid::new(
                "dns.tcp_idle_timeout_secs",
                "must be at least 1",
            ));
        }
        if dns.max_pending_queries == 0 {
            return Err(Invalid::new(
                "dns.max_pending_queries",
                "must be at least 1",
            ));
        }
        if dp.udp_idle_timeout_secs == 0 {
            return Err(Invalid::new(
                "datapath.udp_idle_timeout_secs",
                "must be at least 1",
            ));
        }

        let sip = &self.sip;
        if sip.anchor_port_min == 0
            || !sip.anchor_port_min.is_multiple_of(2)
            || sip.anchor_port_max <= sip.anchor_port_min
        {
            return Err(Invalid::new(
                "sip.anchor_port_min",
                "must be an even, non-zero port below `anchor_port_max`",
            ));
        }
        if sip.rtp_idle_timeout_secs == 0 {
            return Err(Invalid::new(
                "sip.rtp_idle_timeout_secs",
                "must be at least 1",
            ));
        }
        if sip.setup_timeout_secs == 0 {
            return Err(Invalid::new("sip.setup_timeout_secs", "must be at least 1"));
        }
        for (i, name) in sip.media_interfaces.iter().enumerate() {
            if name.is_empty() || name.len() > 15 || name.contains('/') {
                return Err(Invalid::new(
                    format!("sip.media_interfaces[{i}]"),
                    format!("`{name}` is not a valid interface name"),
                ));
            }
        }
        let admin = &self.admin;
        if admin.tcp_listen.is_some() && admin.token_file.is_none() {
            return Err(Invalid::new(
                "admin.token_file",
                "is required when admin.tcp_listen is set (the TCP admin API needs a token)",
            ));
        }
        if admin.tcp_listen.is_some_and(|a| a.port() != 0)
            && admin.tcp_listen == admin.metrics_listen
        {
            return Err(Invalid::new(
                "admin.metrics_listen",
                "must differ from admin.tcp_listen",
            ));
        }

        // One owner per (transport, port) and per listener port.
        let mut owners: HashMap<(Transport, u16), &'static str> = HashMap::new();
        let mut listeners: HashMap<u16, &'static str> = HashMap::new();
        for ic in self.intercepts().into_iter().filter(|i| i.enabled) {
            let name = ic.service.name();
            if ic.ports.is_empty() {
                return Err(Invalid::new(
                    format!("{name}.ports"),
                    "is empty; set `enabled = false` to turn the service off",
                ));
            }
            if ic.listen_port == 0 {
                return Err(Invalid::new(format!("{name}.listen_port"), "must not be 0"));
            }
            if let Some(other) = listeners.insert(ic.listen_port, name) {
                return Err(Invalid::new(
                    format!("{name}.listen_port"),
                    format!(
                        "port {} is already the listener of `{other}`",
                        ic.listen_port
                    ),
                ));
            }
            for &port in &ic.ports {
                if port == 0 {
                    return Err(Invalid::new(format!("{name}.ports"), "port 0 is not valid"));
                }
                for &tr in ic.transports {
                    if let Some(other) = owners.insert((tr, port), name)
                        && other != name
                    {
                        return Err(Invalid::new(
                            format!("{name}.ports"),
                            format!("{tr:?} port {port} is already intercepted by `{other}`"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl HttpConfig {
    /// The `[http]` checks of [`Config::validate`].
    fn check(&self) -> Result<(), Invalid> {
        if !(64 << 10..=64 << 20).contains(&self.slice_bytes) {
            return Err(Invalid::new(
                "http.slice_bytes",
                "must be between 64 KiB (65536) and 64 MiB (67108864)",
            ));
        }
        if self.cache_max_bytes < self.slice_bytes {
            return Err(Invalid::new(
                "http.cache_max_bytes",
                "must hold at least one slice (http.slice_bytes)",
            ));
        }
        if self.max_object_bytes == 0 || self.max_object_bytes > self.cache_max_bytes {
            return Err(Invalid::new(
                "http.max_object_bytes",
                "must be at least 1 and at most http.cache_max_bytes",
            ));
        }
        if self.memory_object_max_bytes > self.memory_cache_bytes {
            return Err(Invalid::new(
                "http.memory_object_max_bytes",
                "must not exceed http.memory_cache_bytes",
            ));
        }
        for (key, v) in [
            ("http.lock_age_ms", self.lock_age_ms),
            ("http.lock_wait_ms", self.lock_wait_ms),
            ("http.connect_timeout_ms", self.connect_timeout_ms),
            ("http.response_timeout_ms", self.response_timeout_ms),
            ("http.header_read_timeout_ms", self.header_read_timeout_ms),
        ] {
            if v == 0 {
                return Err(Invalid::new(key, "must be at least 1"));
            }
        }
        if self.heuristic_percent > 100 {
            return Err(Invalid::new("http.heuristic_percent", "must be 0..=100"));
        }
        if !(8..=4096).contains(&self.uring_entries) || !self.uring_entries.is_power_of_two() {
            return Err(Invalid::new(
                "http.uring_entries",
                "must be a power of two between 8 and 4096",
            ));
        }
        if self.via.is_empty()
            || !self
                .via
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(Invalid::new(
                "http.via",
                "must be a token (letters, digits, - . _)",
            ));
        }
        Ok(())
    }
}
