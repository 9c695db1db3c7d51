//! The request-handler seam (in the spirit of hickory-server's `RequestHandler`): a query's
//! bytes, who sent it and where it was going go in; an answer comes out — at once when it can
//! be computed without waiting (a cache hit, a FORMERR, a denied name), or as a future when an
//! upstream must be asked.
//!
//! The UDP and TCP front ends in `mod.rs` and `tcp.rs` only frame messages and call
//! [`RequestHandler::handle`]; the caching forwarder in `forwarder.rs` is the implementation.
//! Splitting "ready" from "pending" is what lets the UDP receive loop answer hits inline,
//! without spawning a task, and spawn only for misses.
use std::{future::Future, pin::Pin};

use bytes::Bytes;

use crate::net::{ClientAddr, OrigDstAddr};

/// How the query arrived (answers over UDP are bounded by what the client accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (length-prefixed).
    Tcp,
}

impl Transport {
    /// For logs.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// One DNS message from a client.
#[derive(Debug, Clone)]
pub struct Request {
    /// The message as received.
    pub bytes: Bytes,
    /// Who sent it.
    pub client: ClientAddr,
    /// The resolver address the client sent it to (we answer as that address).
    pub orig_dst: OrigDstAddr,
    /// How it arrived.
    pub transport: Transport,
}

/// A future answer (`None`: send nothing).
pub type PendingAnswer = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + 'static>>;

/// What a handler made of a request.
pub enum Response {
    /// Send these bytes now.
    Ready(Vec<u8>),
    /// Send what this future yields, when it does.
    Pending(PendingAnswer),
    /// Send nothing (responses, fragments too short to answer).
    Drop,
}

/// Answers DNS requests.
pub trait RequestHandler: Send + Sync + 'static {
    /// Handle one request. Must not block: whatever waits goes in [`Response::Pending`].
    fn handle(&self, req: Request) -> Response;
}
