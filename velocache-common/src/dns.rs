//! DNS answers in the kernel: the map the daemon fills with its hottest cache entries and the
//! XDP program (`velocache_dns`, slot [`crate::xdp::XdpSlot::Dns`]) answers from.
//!
//! A query in the plain shape (one question, an uncompressed name, at most one OPT record,
//! version 0, no Client Subnet) is looked up by [`DnsKey`]: the resolver the client asked, the
//! question's type and class, the DO/CD bits, whether the query carried an OPT record, and the
//! name in wire form, lower-cased. The value ([`DnsAnswer`]) is what the daemon's own hit path
//! would answer after the question: the answer, authority and additional sections as rendered
//! for that query shape, with each TTL as stored and the offset of every TTL field. The program
//! keeps the client's header ID, RD bit and question spelling, lowers every TTL by the entry's
//! age and sends the frame back; after `fresh_until_ns` it leaves the query to the daemon.
//!
//! The arithmetic both sides need (response flags, checksum folding) is here so that host unit
//! tests run the same code the kernel does.

/// Longest name in wire form (labels and the final zero), RFC 1035 §3.1.
pub const DNS_NAME_MAX: usize = 255;
/// Longest answer (header, question and sections) the kernel sends: fits any client, EDNS or
/// not (RFC 1035's 512 bytes), with room for the checksum's 4-byte rounding.
pub const DNS_ANSWER_MAX: usize = 508;
/// Most TTL fields one kernel answer may carry.
pub const DNS_MAX_TTLS: usize = 32;
/// Entries of the `DNS_ANSWERS` map (allocated as they are used).
pub const DNS_MAX_ANSWERS: u32 = 16_384;
/// Name of the program in the `velocache-xdp` object (slot `Dns`).
pub const DNS_PROGRAM: &str = "velocache_dns";

/// [`DnsKey::flags`]: the query's DO bit.
pub const KEY_DO: u16 = 1;
/// [`DnsKey::flags`]: the query's CD bit.
pub const KEY_CD: u16 = 2;
/// [`DnsKey::flags`]: the query carried an OPT record (the answer then carries one too).
pub const KEY_EDNS: u16 = 4;

/// Header flag bits the program reads and writes (RFC 1035 §4.1.1, RFC 4035 §3.2).
pub const FLAG_QR: u16 = 0x8000;
/// Recursion desired: echoed from the query.
pub const FLAG_RD: u16 = 0x0100;
/// Authentic data.
pub const FLAG_AD: u16 = 0x0020;
/// Checking disabled: echoed from the query.
pub const FLAG_CD: u16 = 0x0010;
/// Truncated.
pub const FLAG_TC: u16 = 0x0200;

/// Slots of the per-CPU `DNS_COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsCounter {
    /// Queries answered in the kernel.
    Answered = 0,
    /// Queries whose entry was found but no longer fresh (left to the daemon).
    Expired = 1,
    /// Answers that could not be written (the frame could not grow): left to the daemon.
    Failed = 2,
}

/// Entries of `DNS_COUNTERS`.
pub const DNS_COUNTER_COUNT: u32 = 3;

/// The lookup key. Every byte is written (the name is zero-padded), so equal queries make
/// equal keys.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsKey {
    /// The resolver the client asked: IPv6, or IPv4 mapped (`::ffff:a.b.c.d`).
    pub resolver: [u8; 16],
    /// Question type (host order).
    pub qtype: u16,
    /// Question class (host order).
    pub qclass: u16,
    /// [`KEY_DO`] | [`KEY_CD`] | [`KEY_EDNS`].
    pub flags: u16,
    /// Length of the name in wire form, final zero included.
    pub name_len: u16,
    /// The name in wire form, ASCII lower-cased, zero-padded.
    pub name: [u8; 256],
}

/// One answer the kernel may send.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsAnswer {
    /// `CLOCK_MONOTONIC` (ns) at which the TTLs in `tail` were true.
    pub stored_ns: u64,
    /// `CLOCK_MONOTONIC` (ns) from which the kernel no longer answers.
    pub fresh_until_ns: u64,
    /// Queries answered from this entry (the program adds atomically; the daemon reads).
    pub hits: u64,
    /// Response flags without RD, CD, AD and TC (QR set).
    pub flags: u16,
    /// 1: the stored answer had AD, given to clients that set AD or DO (RFC 6840 §5.7).
    pub ad: u16,
    /// ANCOUNT, NSCOUNT, ARCOUNT of `tail`.
    pub counts: [u16; 3],
    /// Bytes of `tail` in use.
    pub len: u16,
    /// TTL fields in use in `ttl_offsets`.
    pub ttl_count: u16,
    /// Offset of each TTL field in `tail`.
    pub ttl_offsets: [u16; DNS_MAX_TTLS],
    /// The sections after the question, as the daemon renders them.
    pub tail: [u8; 512],
    /// Explicit padding to the struct's alignment.
    pub _pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<DnsKey>() == 280);
const _: () = assert!(core::mem::size_of::<DnsAnswer>() == 616);
const _: () = assert!(DNS_NAME_MAX < 256);

/// The header flags of an answer from `entry` to a query with flags `qflags` and DO bit
/// `dnssec_ok`: the stored flags, the query's RD and CD, and AD only for clients that said
/// they understand it (what the daemon's own hit path does).
#[inline(always)]
pub fn answer_flags(stored: u16, ad: bool, qflags: u16, dnssec_ok: bool) -> u16 {
    let mut flags = (stored & !(FLAG_RD | FLAG_CD | FLAG_TC | FLAG_AD)) | FLAG_QR;
    flags |= qflags & (FLAG_RD | FLAG_CD);
    if ad && (qflags & FLAG_AD != 0 || dnssec_ok) {
        flags |= FLAG_AD;
    }
    flags
}

/// Fold a one's-complement sum to 16 bits (four rounds are enough for any `u64`).
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// A TTL lowered by `age` seconds, never below zero.
#[inline(always)]
pub fn aged(ttl: u32, age: u64) -> u32 {
    if age >= ttl as u64 {
        0
    } else {
        ttl - age as u32
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY (for both impls): `#[repr(C)]`, only integers and byte arrays, no implicit padding
    // (checked by the size assertions above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::DnsKey {}
    unsafe impl aya::Pod for super::DnsAnswer {}
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Eight bytes of a name (as a word read from memory) lower-cased as `u8::to_ascii_lowercase`
/// does, all at once — the XDP program builds its key a word at a time. After each addition a
/// byte's high bit says whether its low seven bits reach `A`, or pass `Z` (no addition carries
/// into the next byte); bytes with the high bit set are not ASCII and stay; `0x80 >> 2` is the
/// case bit.
#[inline(always)]
pub fn lower_word(word: u64) -> u64 {
    let low7 = word & !HIGHS;
    let from_a = low7 + ONES * (0x80 - b'A' as u64);
    let past_z = low7 + ONES * (0x7f - b'Z' as u64);
    let upper = from_a & !past_z & !word & HIGHS;
    word | (upper >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_word_lowers_every_byte_as_to_ascii_lowercase_does() {
        // Every byte value in every position, beside neighbours that could carry into it.
        for b in 0..=255u8 {
            for pos in 0..8 {
                for fill in [0u8, b'Z', b'a', 0x7f, 0xff, b'@', b'['] {
                    let mut bytes = [fill; 8];
                    bytes[pos] = b;
                    let want = bytes.map(|x| x.to_ascii_lowercase());
                    let got = lower_word(u64::from_ne_bytes(bytes)).to_ne_bytes();
                    assert_eq!(got, want, "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn answer_flags_echo_rd_cd_and_give_ad_only_to_clients_that_ask() {
        let stored = FLAG_QR | FLAG_RD | 0x0080 | FLAG_AD; // QR RD RA AD as the upstream sent
        assert_eq!(answer_flags(stored, true, 0, false), FLAG_QR | 0x0080);
        assert_eq!(
            answer_flags(stored, true, FLAG_RD, true),
            FLAG_QR | FLAG_RD | 0x0080 | FLAG_AD
        );
        assert_eq!(
            answer_flags(stored, true, FLAG_AD | FLAG_CD, false),
            FLAG_QR | 0x0080 | FLAG_AD | FLAG_CD
        );
        assert_eq!(answer_flags(stored, false, FLAG_AD, true), FLAG_QR | 0x0080);
        assert_eq!(
            answer_flags(stored | FLAG_TC, false, 0, false),
            FLAG_QR | 0x0080
        );
    }

    #[test]
    fn fold_carries_every_overflow() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0x1_fffe), 0xffff);
        assert_eq!(fold(0xffff_ffff_ffff_ffff), 0xffff);
        assert_eq!(fold(0x0001_0000_0000), 1);
    }

    #[test]
    fn ttls_age_down_to_zero() {
        assert_eq!(aged(300, 0), 300);
        assert_eq!(aged(300, 299), 1);
        assert_eq!(aged(300, 300), 0);
        assert_eq!(aged(3, u64::MAX), 0);
    }
}
