//! What a SOCKS conversation says, read from both directions as it passes (RFC 1928, RFC 1929
//! for the username/password step, and the SOCKS4/4a request its servers also accept).
//!
//! The reader is fed the client's bytes and the server's bytes in the order they travel and
//! never changes them. It yields [`Fact`]s as soon as they are known (version, the target of
//! the request, the authentication method the server chose, the server's reply) and says when
//! the handshake is over ([`Reader::done`]): from then on the stream is the application's, and
//! the plugin hands it to the gateway's splice. Credentials are skipped, never read out.

/// Something the conversation said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// `socks_version`: `4`, `5`, or `unknown` for a stream that is not SOCKS.
    Version(&'static str),
    /// `socks_command`: `connect`, `bind`, `udp_associate`.
    Command(&'static str),
    /// `socks_target`: `host:port` (IPv6 in brackets).
    Target(String),
    /// `socks_auth`: the method the server chose.
    Auth(&'static str),
    /// `socks_reply`: the server's answer to the request.
    Reply(&'static str),
}

impl Fact {
    /// The tag this fact becomes on the flow line.
    pub fn tag(&self) -> (String, String) {
        let (k, v) = match self {
            Fact::Version(v) => ("socks_version", v.to_string()),
            Fact::Command(c) => ("socks_command", c.to_string()),
            Fact::Target(t) => ("socks_target", t.clone()),
            Fact::Auth(a) => ("socks_auth", a.to_string()),
            Fact::Reply(r) => ("socks_reply", r.to_string()),
        };
        (k.to_string(), v)
    }
}

/// Where the client's side of the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// The first bytes: version and methods (5), or the whole request (4).
    Greeting,
    /// Username/password sub-negotiation (RFC 1929), skipped.
    Credentials,
    /// The request (5).
    Request,
    /// Nothing more to read.
    Done,
}

/// Where the server's side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// The method selection (5) or the request's reply (4).
    Method,
    /// The sub-negotiation's status.
    Credentials,
    /// The request's reply (5).
    Reply,
    /// Nothing more to read.
    Done,
}

/// Reads one stream's handshake.
#[derive(Debug)]
pub struct Reader {
    version: u8,
    client: Client,
    server: Server,
    up: Vec<u8>,
    down: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            version: 0,
            client: Client::Greeting,
            server: Server::Method,
            up: Vec::new(),
            down: Vec::new(),
        }
    }
}

/// The longest handshake message (a version-5 request with a 255-byte name, a SOCKS4a request
/// with its user id and name): more without a complete message is not SOCKS.
const MAX_MESSAGE: usize = 1024;

impl Reader {
    /// The handshake is over (or the stream is not SOCKS): nothing more to learn.
    pub fn done(&self) -> bool {
        self.client == Client::Done && self.server == Server::Done
    }

    /// Bytes from the client.
    pub fn client(&mut self, data: &[u8]) -> Vec<Fact> {
        let mut facts = Vec::new();
        if self.client == Client::Done {
            return facts;
        }
        self.up.extend_from_slice(data);
        while let Some(used) = self.client_step(&mut facts) {
            self.up.drain(..used);
            if self.client == Client::Done {
                break;
            }
        }
        if self.client != Client::Done && self.up.len() > MAX_MESSAGE {
            self.give_up(&mut facts);
        }
        facts
    }

    /// Bytes from the server.
    pub fn server(&mut self, data: &[u8]) -> Vec<Fact> {
        let mut facts = Vec::new();
        if self.server == Server::Done {
            return facts;
        }
        self.down.extend_from_slice(data);
        while let Some(used) = self.server_step(&mut facts) {
            self.down.drain(..used);
            if self.server == Server::Done {
                break;
            }
        }
        if self.server != Server::Done && self.down.len() > MAX_MESSAGE {
            self.give_up(&mut facts);
        }
        facts
    }

    fn give_up(&mut self, facts: &mut Vec<Fact>) {
        if self.version == 0 {
            facts.push(Fact::Version("unknown"));
        }
        self.client = Client::Done;
        self.server = Server::Done;
        self.up.clear();
        self.down.clear();
    }

    /// One complete client message, if buffered: its length.
    fn client_step(&mut self, facts: &mut Vec<Fact>) -> Option<usize> {
        let b = &self.up;
        match self.client {
            Client::Greeting => match *b.first()? {
                5 => {
                    let n = usize::from(*b.get(1)?);
                    if b.len() < 2 + n {
                        return None;
                    }
                    self.version = 5;
                    facts.push(Fact::Version("5"));
                    self.client = Client::Request;
                    Some(2 + n)
                }
                4 => {
                    // VN CD DSTPORT(2) DSTIP(4) USERID NUL [HOST NUL when DSTIP is 0.0.0.x]
                    if b.len() < 9 {
                        return None;
                    }
                    let user_end = 8 + b[8..].iter().position(|c| *c == 0)?;
                    let port = u16::from_be_bytes([b[2], b[3]]);
                    let ip = [b[4], b[5], b[6], b[7]];
                    let (host, used) = if ip[..3] == [0, 0, 0] && ip[3] != 0 {
                        let start = user_end + 1;
                        let end = start + b.get(start..)?.iter().position(|c| *c == 0)?;
                        (
                            String::from_utf8_lossy(&b[start..end]).into_owned(),
                            end + 1,
                        )
                    } else {
                        (
                            format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]),
                            user_end + 1,
                        )
                    };
                    self.version = 4;
                    facts.push(Fact::Version("4"));
                    facts.push(Fact::Command(command(b[1])));
                    facts.push(Fact::Target(format!("{host}:{port}")));
                    self.client = Client::Done;
                    Some(used)
                }
                _ => {
                    facts.push(Fact::Version("unknown"));
                    self.client = Client::Done;
                    self.server = Server::Done;
                    Some(b.len())
                }
            },
            Client::Credentials => {
                // VER ULEN UNAME PLEN PASSWD
                let ulen = usize::from(*b.get(1)?);
                let plen = usize::from(*b.get(2 + ulen)?);
                let total = 3 + ulen + plen;
                if b.len() < total {
                    return None;
                }
                self.client = Client::Request;
                Some(total)
            }
            Client::Request => {
                // VER CMD RSV ATYP DST.ADDR DST.PORT
                if b.len() < 5 {
                    return None;
                }
                let (host, at) = address(b, 3)?;
                let port = u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]);
                facts.push(Fact::Command(command(b[1])));
                facts.push(Fact::Target(format!("{host}:{port}")));
                self.client = Client::Done;
                Some(at + 2)
            }
            Client::Done => None,
        }
    }

    /// One complete server message, if buffered: its length.
    fn server_step(&mut self, facts: &mut Vec<Fact>) -> Option<usize> {
        let b = &self.down;
        match self.server {
            Server::Method if self.version == 4 => {
                // VN CD DSTPORT DSTIP: the request's reply.
                if b.len() < 8 {
                    return None;
                }
                facts.push(Fact::Reply(if b[1] == 90 {
                    "succeeded"
                } else {
                    "refused"
                }));
                self.server = Server::Done;
                Some(8)
            }
            Server::Method => {
                let method = *b.get(1)?;
                facts.push(Fact::Auth(match method {
                    0x00 => "none",
                    0x01 => "gssapi",
                    0x02 => "username",
                    0xff => "no_acceptable_method",
                    _ => "other",
                }));
                match method {
                    0x02 => {
                        self.client = Client::Credentials;
                        self.server = Server::Credentials;
                    }
                    0xff => {
                        self.client = Client::Done;
                        self.server = Server::Done;
                    }
                    _ => self.server = Server::Reply,
                }
                Some(2)
            }
            Server::Credentials => {
                let status = *b.get(1)?;
                if status != 0 {
                    facts.push(Fact::Reply("auth_failed"));
                    self.client = Client::Done;
                    self.server = Server::Done;
                } else {
                    self.server = Server::Reply;
                }
                Some(2)
            }
            Server::Reply => {
                // VER REP RSV ATYP BND.ADDR BND.PORT
                if b.len() < 5 {
                    return None;
                }
                let (_, at) = address(b, 3)?;
                if b.len() < at + 2 {
                    return None;
                }
                facts.push(Fact::Reply(reply(b[1])));
                self.server = Server::Done;
                self.client = Client::Done;
                Some(at + 2)
            }
            Server::Done => None,
        }
    }
}

/// The address at `b[at]` (ATYP then the address): its text and where the port starts.
fn address(b: &[u8], at: usize) -> Option<(String, usize)> {
    match *b.get(at)? {
        1 => {
            let a = b.get(at + 1..at + 5)?;
            Some((format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]), at + 5))
        }
        3 => {
            let n = usize::from(*b.get(at + 1)?);
            let name = b.get(at + 2..at + 2 + n)?;
            Some((String::from_utf8_lossy(name).into_owned(), at + 2 + n))
        }
        4 => {
            let a: [u8; 16] = b.get(at + 1..at + 17)?.try_into().ok()?;
            Some((format!("[{}]", std::net::Ipv6Addr::from(a)), at + 17))
        }
        // Not an address type of RFC 1928: the reader waits, then gives up at MAX_MESSAGE.
        _ => None,
    }
}

fn command(c: u8) -> &'static str {
    match c {
        1 => "connect",
        2 => "bind",
        3 => "udp_associate",
        _ => "other",
    }
}

fn reply(r: u8) -> &'static str {
    match r {
        0 => "succeeded",
        1 => "general_failure",
        2 => "not_allowed",
        3 => "network_unreachable",
        4 => "host_unreachable",
        5 => "connection_refused",
        6 => "ttl_expired",
        7 => "command_not_supported",
        8 => "address_type_not_supported",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_5_connect_by_name_without_authentication() {
        let mut r = Reader::default();
        // Split anywhere: facts come when a message is whole.
        assert_eq!(r.client(&[5]), vec![]);
        assert_eq!(r.client(&[1, 0]), vec![Fact::Version("5")]);
        assert_eq!(r.server(&[5, 0]), vec![Fact::Auth("none")]);
        let mut req = vec![5, 1, 0, 3, 11];
        req.extend_from_slice(b"example.org");
        req.extend_from_slice(&80u16.to_be_bytes());
        assert_eq!(
            r.client(&req),
            vec![
                Fact::Command("connect"),
                Fact::Target("example.org:80".into())
            ]
        );
        assert!(!r.done());
        assert_eq!(
            r.server(&[5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90]),
            vec![Fact::Reply("succeeded")]
        );
        assert!(r.done());
        assert_eq!(r.client(b"GET / HTTP/1.1\r\n"), vec![]);
    }

    #[test]
    fn username_authentication_is_skipped_and_addresses_read() {
        let mut r = Reader::default();
        r.client(&[5, 2, 0, 2]);
        assert_eq!(r.server(&[5, 2]), vec![Fact::Auth("username")]);
        let mut creds = vec![1, 4];
        creds.extend_from_slice(b"user");
        creds.push(6);
        creds.extend_from_slice(b"secret");
        let mut req = vec![5, 1, 0, 4];
        req.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        req.extend_from_slice(&443u16.to_be_bytes());
        creds.extend_from_slice(&req);
        assert_eq!(
            r.client(&creds),
            vec![Fact::Command("connect"), Fact::Target("[::1]:443".into())]
        );
        assert_eq!(r.server(&[1, 0]), vec![]);
        assert_eq!(
            r.server(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
            vec![Fact::Reply("connection_refused")]
        );
        assert!(r.done());
    }

    #[test]
    fn socks4a_and_streams_that_are_not_socks() {
        let mut r = Reader::default();
        let mut req = vec![4, 1, 0, 80, 0, 0, 0, 1];
        req.extend_from_slice(b"me\0lab.example\0");
        assert_eq!(
            r.client(&req),
            vec![
                Fact::Version("4"),
                Fact::Command("connect"),
                Fact::Target("lab.example:80".into())
            ]
        );
        assert_eq!(
            r.server(&[0, 90, 0, 0, 0, 0, 0, 0]),
            vec![Fact::Reply("succeeded")]
        );
        assert!(r.done());

        let mut r = Reader::default();
        assert_eq!(
            r.client(b"GET / HTTP/1.1\r\n"),
            vec![Fact::Version("unknown")]
        );
        assert!(r.done());
    }

    #[test]
    fn a_handshake_that_never_completes_is_given_up() {
        let mut r = Reader::default();
        r.client(&[5, 255]);
        // The greeting takes 257 bytes; the rest (no address type) is no request.
        r.client(&[0u8; 2000]);
        assert!(r.done());
    }
}
