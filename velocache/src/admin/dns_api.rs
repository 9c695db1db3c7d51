//! The wire types of `GET /v1/dns/show` (`velocache dns show`, the dashboard's DNS
//! inspector): what the DNS cache holds for one name and type. The DNS service fills them
//! (`DnsAdmin::show`); the CLI and the page read them.
use serde::{Deserialize, Serialize};

/// `GET /v1/dns/show?name=…&type=…`: what the DNS cache holds for one name and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsShowReport {
    /// The name asked about.
    pub name: String,
    /// The query type.
    pub qtype: String,
    /// One per stored variant (class, DO/CD flags, resolver asked).
    pub entries: Vec<DnsEntryView>,
}

/// One stored DNS answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsEntryView {
    /// Its response code.
    pub rcode: String,
    /// `positive`, `negative` (NXDOMAIN/NODATA, RFC 2308).
    pub kind: String,
    /// Seconds since it was stored.
    pub age_secs: u32,
    /// Seconds it stays fresh (0: stale, served only while the upstream fails).
    pub ttl_remaining_secs: u32,
    /// The upstream it came from.
    pub upstream: String,
    /// Hits so far.
    pub hits: u32,
    /// The answer, authority and additional records as a client would get them now (TTLs
    /// aged), in zone-file form.
    pub records: Vec<String>,
}
