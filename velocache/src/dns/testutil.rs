//! Test helpers: DNS messages built by hand or with hickory-proto, and a real UDP/TCP DNS
//! server on loopback whose answers a test decides.
use std::{
    net::{Ipv4Addr, SocketAddr},
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{
        Name, RData, Record,
        rdata::{A, SOA},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
};

/// A query as a stub resolver sends it: RD, one question, an OPT with `dnssec_ok` (and a
/// cookie option, as dig sends) unless `edns` is None.
pub fn query(id: u16, name: &str, qtype: u16, edns: Option<bool>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    if let Some(dnssec_ok) = edns {
        out.extend_from_slice(&[
            0,
            0,
            41,
            0x04,
            0xd0,
            0,
            0,
            if dnssec_ok { 0x80 } else { 0 },
            0,
        ]);
        out.extend_from_slice(&[0, 12, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    }
    out
}

/// An A record.
pub fn a(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(
        Name::from_str(name).unwrap(),
        ttl,
        RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
    )
}

/// An SOA record for `zone` with `minimum`.
pub fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    let z = Name::from_str(zone).unwrap();
    Record::from_rdata(
        z.clone(),
        ttl,
        RData::SOA(SOA::new(
            Name::from_str("ns.test.lab.").unwrap(),
            Name::from_str("admin.test.lab.").unwrap(),
            1,
            3600,
            600,
            86400,
            minimum,
        )),
    )
}

/// The response to `query` (hickory-encoded, with name compression) carrying `answers` and
/// `authorities`, `rcode`, and an OPT when the query had one.
pub fn response(
    query: &[u8],
    rcode: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
) -> Vec<u8> {
    let q = Message::from_vec(query).unwrap();
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.add_queries(q.queries.clone());
    m.add_answers(answers);
    m.add_authorities(authorities);
    if let Some(e) = &q.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.set_dnssec_ok(e.flags().dnssec_ok);
        m.set_edns(edns);
    }
    m.to_vec().unwrap()
}

type Answerer = dyn Fn(&[u8], SocketAddr) -> Vec<Vec<u8>> + Send + Sync;

/// A DNS server on 127.0.0.1 (UDP and TCP on the same port) that answers each query with
/// whatever datagrams `answer` returns for it, and counts queries.
pub struct TestServer {
    /// Its address.
    pub addr: SocketAddr,
    /// Queries received (UDP and TCP).
    pub queries: Arc<AtomicUsize>,
    /// Where the last UDP query came from.
    pub last_from: Arc<Mutex<SocketAddr>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Start a server; `answer` maps a query to the datagrams to send back (TCP sends the last
    /// one only).
    pub async fn start(
        answer: impl Fn(&[u8], SocketAddr) -> Vec<Vec<u8>> + Send + Sync + 'static,
    ) -> TestServer {
        Self::start_delayed(std::time::Duration::ZERO, answer).await
    }

    /// Like [`TestServer::start`], answering UDP queries only after `delay`.
    pub async fn start_delayed(
        delay: std::time::Duration,
        answer: impl Fn(&[u8], SocketAddr) -> Vec<Vec<u8>> + Send + Sync + 'static,
    ) -> TestServer {
        let answer: Arc<Answerer> = Arc::new(answer);
        let udp = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap());
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let last_from = Arc::new(Mutex::new(addr));
        let (a1, q1, f1) = (answer.clone(), queries.clone(), last_from.clone());
        let t1 = tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    return;
                };
                q1.fetch_add(1, Ordering::SeqCst);
                *f1.lock().unwrap() = from;
                let out = a1(&buf[..n], from);
                let udp = udp.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    for d in out {
                        let _ = udp.send_to(&d, from).await;
                    }
                });
            }
        });
        let (a2, q2) = (answer, queries.clone());
        let t2 = tokio::spawn(async move {
            loop {
                let Ok((mut s, from)) = tcp.accept().await else {
                    return;
                };
                let a = a2.clone();
                let q = q2.clone();
                tokio::spawn(async move {
                    while let Ok(len) = s.read_u16().await {
                        let mut msg = vec![0u8; len as usize];
                        if s.read_exact(&mut msg).await.is_err() {
                            return;
                        }
                        q.fetch_add(1, Ordering::SeqCst);
                        if let Some(d) = a(&msg, from).pop() {
                            let mut framed = (d.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&d);
                            let _ = s.write_all(&framed).await;
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            queries,
            last_from,
            tasks: vec![t1, t2],
        }
    }

    /// Queries received so far.
    pub fn count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Set the TC bit of a message.
pub fn with_tc(mut msg: Vec<u8>) -> Vec<u8> {
    msg[2] |= 0x02;
    msg
}
