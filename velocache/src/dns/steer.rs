//! Steering TLS by what the DNS service answers: a request handler around the forwarder that,
//! for a query whose name a rule could act on (`observe::Steering::steers`), hands the
//! answer's A/AAAA addresses and TTLs to the steering table, so the client's connection to
//! them is steered to the daemon. Every other answer passes untouched, and with no such rule
//! in force nothing is looked at (one pointer comparison per query).
use std::{net::IpAddr, sync::Arc};

use hickory_proto::{op::Message, rr::RData};

use super::{
    handler::{Request, RequestHandler, Response},
    wire::{self, HEADER_LEN},
};
use crate::observe::Steering;

/// The forwarder with steering.
pub struct SteeringHandler {
    inner: Arc<dyn RequestHandler>,
    steering: Steering,
}

impl SteeringHandler {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn RequestHandler>, steering: Steering) -> Self {
        SteeringHandler { inner, steering }
    }
}

impl RequestHandler for SteeringHandler {
    fn handle(&self, req: Request) -> Response {
        if !self.steering.could_steer() {
            return self.inner.handle(req);
        }
        let name = wire::name_text(&req.bytes, HEADER_LEN);
        if !self.steering.steers(&name) {
            return self.inner.handle(req);
        }
        match self.inner.handle(req) {
            Response::Ready(answer) => {
                learn(&self.steering, &name, &answer);
                Response::Ready(answer)
            }
            Response::Pending(answer) => {
                let steering = self.steering.clone();
                Response::Pending(Box::pin(async move {
                    let answer = answer.await;
                    if let Some(a) = &answer {
                        learn(&steering, &name, a);
                    }
                    answer
                }))
            }
            Response::Drop => Response::Drop,
        }
    }
}

/// The A/AAAA addresses of an answer, with their TTLs (CNAME chains included: every address
/// in the answer section is one the client may connect to for this name).
pub fn answer_addresses(answer: &[u8]) -> Vec<(IpAddr, u32)> {
    let Ok(m) = Message::from_vec(answer) else {
        return Vec::new();
    };
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((IpAddr::V4(a.0), r.ttl)),
            RData::AAAA(a) => Some((IpAddr::V6(a.0), r.ttl)),
            _ => None,
        })
        .collect()
}

fn learn(steering: &Steering, name: &str, answer: &[u8]) {
    let addrs = answer_addresses(answer);
    if !addrs.is_empty() {
        steering.learn(name, &addrs);
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Message, MessageType, Query},
        rr::{Name, Record, RecordType, rdata},
    };

    use super::*;

    #[test]
    fn addresses_and_ttls_come_from_the_answer_section_cnames_included() {
        let name = Name::from_ascii("www.lab.").unwrap();
        let cdn = Name::from_ascii("edge.cdn.").unwrap();
        let mut m = Message::new(7, MessageType::Response, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            name,
            300,
            RData::CNAME(rdata::CNAME(cdn.clone())),
        ));
        m.add_answer(Record::from_rdata(
            cdn.clone(),
            60,
            RData::A(rdata::A("10.77.2.2".parse().unwrap())),
        ));
        m.add_answer(Record::from_rdata(
            cdn,
            30,
            RData::AAAA(rdata::AAAA("fd77:2::2".parse().unwrap())),
        ));
        let bytes = m.to_vec().unwrap();
        assert_eq!(
            answer_addresses(&bytes),
            vec![
                ("10.77.2.2".parse().unwrap(), 60),
                ("fd77:2::2".parse().unwrap(), 30)
            ]
        );
        assert!(answer_addresses(b"not dns").is_empty());
    }
}
