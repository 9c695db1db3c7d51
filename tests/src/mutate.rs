//! A seeded, deterministic SIP mutator: the same seed gives the same mutants on every run, so a
//! lab failure names an input that can be made again (`mutants(seed, n)[i]`).
//!
//! It starts from a well-formed INVITE with SDP and applies one to four edits that real
//! implementations and attackers produce: folded and compact headers, CRLFs before the start
//! line, Content-Length too large, too small, negative, repeated or missing, duplicated and
//! dropped lines, bare LF line ends, flipped and inserted bytes, truncation, NULs and non-UTF-8
//! in the head, an oversized header, SDP lines broken or exotic (`udptl`, `a=crypto`,
//! `rtpmap` without a clock rate).

/// xorshift64*: small, seedable, the same everywhere.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The INVITE every mutant starts from (`i` makes its Call-ID unique).
pub fn base_invite(i: usize) -> Vec<u8> {
    let sdp = "v=0\r\no=user1 53655765 2353687637 IN IP4 10.77.1.2\r\ns=-\r\nc=IN IP4 10.77.1.2\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";
    format!(
        "INVITE sip:torture@10.77.2.3:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.77.1.2:5062;branch=z9hG4bK-mut-{i}\r\n\
From: torture <sip:torture@10.77.1.2:5062>;tag=mut{i}\r\n\
To: <sip:torture@10.77.2.3:5060>\r\n\
Call-ID: mutant-{i}@10.77.1.2\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:torture@10.77.1.2:5062>\r\n\
Max-Forwards: 70\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn lines(msg: &[u8]) -> Vec<Vec<u8>> {
    msg.split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// Index of the first line starting with `prefix` (case-insensitive).
fn find_line(ls: &[Vec<u8>], prefix: &[u8]) -> Option<usize> {
    ls.iter()
        .position(|l| l.len() >= prefix.len() && l[..prefix.len()].eq_ignore_ascii_case(prefix))
}

fn set_length(ls: &mut [Vec<u8>], value: &str) {
    if let Some(i) = find_line(ls, b"Content-Length:") {
        ls[i] = format!("Content-Length: {value}\r\n").into_bytes();
    }
}

/// One edit of `msg`.
fn mutate_once(msg: Vec<u8>, rng: &mut Rng) -> Vec<u8> {
    let mut ls = lines(&msg);
    let n = ls.len().max(1);
    match rng.below(20) {
        0 => {
            // Fold a header after its colon.
            let i = 1 + rng.below(n.saturating_sub(1).max(1));
            if let Some(l) = ls.get_mut(i)
                && let Some(c) = l.iter().position(|b| *b == b':')
            {
                let rest = l.split_off(c + 1);
                l.extend_from_slice(b"\r\n   ");
                l.extend_from_slice(rest.trim_ascii_start());
            }
        }
        1 => {
            let lead = ["\r\n", "\r\n\r\n", "\n"][rng.below(3)];
            ls.insert(0, lead.as_bytes().to_vec());
        }
        2 => set_length(&mut ls, &(rng.below(100_000) + 200).to_string()),
        3 => set_length(&mut ls, &rng.below(40).to_string()),
        4 => set_length(&mut ls, "-1"),
        5 => {
            if let Some(i) = find_line(&ls, b"Content-Length:") {
                let dup = format!("Content-Length: {}\r\n", rng.below(300)).into_bytes();
                ls.insert(i, dup);
            }
        }
        6 => {
            if let Some(i) = find_line(&ls, b"Content-Length:") {
                ls.remove(i);
            }
        }
        7 => {
            let i = rng.below(n);
            let dup = ls.get(i).cloned().unwrap_or_default();
            ls.insert(i, dup);
        }
        8 => {
            if ls.len() > 1 {
                ls.remove(1 + rng.below(ls.len() - 1));
            }
        }
        9 => {
            for l in ls.iter_mut() {
                if l.ends_with(b"\r\n") {
                    l.remove(l.len() - 2);
                }
            }
        }
        10 | 11 => {
            let mut flat: Vec<u8> = ls.concat();
            for _ in 0..=rng.below(4) {
                if !flat.is_empty() {
                    let at = rng.below(flat.len());
                    flat[at] ^= 1 << rng.below(8);
                }
            }
            return flat;
        }
        12 => {
            let mut flat: Vec<u8> = ls.concat();
            let at = rng.below(flat.len() + 1);
            let junk: Vec<u8> = (0..1 + rng.below(16))
                .map(|_| [0u8, 0xff, b':', b'\r', b'\n', b' ', b';', 0xc3][rng.below(8)])
                .collect();
            flat.splice(at..at, junk);
            return flat;
        }
        13 => {
            let mut flat: Vec<u8> = ls.concat();
            flat.truncate(rng.below(flat.len() + 1));
            return flat;
        }
        14 => {
            let compact = [
                (&b"Call-ID:"[..], "i:"),
                (b"From:", "f:"),
                (b"To:", "t:"),
                (b"Via:", "v:"),
                (b"Content-Length:", "l:"),
                (b"Content-Type:", "c:"),
                (b"Contact:", "m:"),
            ];
            let (long, short) = compact[rng.below(compact.len())];
            if let Some(i) = find_line(&ls, long) {
                let rest = ls[i].split_off(long.len());
                ls[i] = [short.as_bytes(), &rest].concat();
            }
        }
        15 => {
            let long = format!("X-Long: {}\r\n", "a".repeat(rng.below(70_000)));
            ls.insert(1, long.into_bytes());
        }
        16 => {
            // Exotic but valid SDP lines, or broken ones.
            let extra = [
                "m=image 49170 udptl t38\r\na=T38FaxVersion:0\r\n",
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n",
                "a=rtpmap:31 LPC\r\n",
                "m=application 5070 UDP/BFCP *\r\n",
                "m=audio banana\r\n",
                "c=IN\r\n",
                "garbage without equals\r\n",
            ][rng.below(7)];
            ls.push(extra.as_bytes().to_vec());
            let body_len = ls
                .iter()
                .skip_while(|l| l.as_slice() != b"\r\n")
                .skip(1)
                .map(Vec::len)
                .sum::<usize>();
            set_length(&mut ls, &body_len.to_string());
        }
        17 => {
            if ls.len() > 2 {
                let a = 1 + rng.below(ls.len() - 1);
                let b = 1 + rng.below(ls.len() - 1);
                ls.swap(a, b);
            }
        }
        18 => {
            let methods = [
                "BYE", "CANCEL", "ACK", "OPTIONS", "PUBLISH2", "INV%49TE", "  INVITE",
            ];
            let m = methods[rng.below(methods.len())];
            if let Some(first) = ls.first_mut()
                && let Some(sp) = first.iter().position(|b| *b == b' ')
            {
                let rest = first.split_off(sp);
                *first = [m.as_bytes(), &rest].concat();
            }
        }
        _ => {
            // A status line instead of the request line.
            let codes = [
                "SIP/2.0 200 OK",
                "SIP/2.0 4294967301 big",
                "SIP/7.0 180 Ringing",
            ];
            if let Some(first) = ls.first_mut() {
                *first = format!("{}\r\n", codes[rng.below(codes.len())]).into_bytes();
            }
        }
    }
    ls.concat()
}

/// `n` mutants for `seed`: mutant `i` is `base_invite(i)` with one to four edits, at most
/// 65 000 bytes (one UDP datagram).
pub fn mutants(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let mut m = base_invite(i);
            for _ in 0..=rng.below(4) {
                m = mutate_once(m, &mut rng);
            }
            m.truncate(65_000);
            m
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutants_and_they_differ() {
        let a = mutants(4475, 300);
        assert_eq!(a, mutants(4475, 300));
        assert_ne!(a, mutants(4476, 300));
        let distinct: std::collections::HashSet<&Vec<u8>> = a.iter().collect();
        assert!(distinct.len() > 290, "{}", distinct.len());
        assert!(a.iter().all(|m| m.len() <= 65_000));
    }
}
