//! `socks5-observer`: a VeloCache plugin for the TCP port SOCKS servers listen on (1080).
//!
//! Each stream a client opens to a SOCKS server behind the gateway comes to this plugin. It
//! connects to that very server (the stream's original destination), passes every byte on
//! unchanged in both directions, and reads the handshake as it goes (`socks`): the flow line
//! gets `socks_version`, `socks_command`, `socks_target` (`host:port`), `socks_auth` (the
//! method the server chose) and `socks_reply`. Once the server has answered the request, the
//! stream is the application's and the plugin asks the gateway to splice it: from then on the
//! bytes move in the kernel and the plugin is not called again.
//!
//! State is per stream number, dropped when the stream is spliced or closed.
mod socks;

use std::{cell::RefCell, collections::HashMap};

wit_bindgen::generate!({
    world: "tcp-plugin",
    path: "../../wit",
});

use exports::velocache::plugin::tcp::{Command, Event, Guest, Target};

thread_local! {
    /// The handshake reader of each stream in progress.
    static STREAMS: RefCell<HashMap<u64, socks::Reader>> = RefCell::new(HashMap::new());
}

struct Observer;

impl Guest for Observer {
    fn on_event(stream: u64, ev: Event) -> Vec<Command> {
        STREAMS.with(|streams| on_event(&mut streams.borrow_mut(), stream, ev))
    }
}

/// `host:port` (IPv6 bracketed) as a connection target.
fn target(addr: &str) -> Option<Target> {
    let (host, port) = addr.rsplit_once(':')?;
    Some(Target {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: port.parse().ok()?,
    })
}

fn tags(facts: Vec<socks::Fact>, out: &mut Vec<Command>) {
    out.extend(facts.iter().map(|f| Command::Tag(f.tag())));
}

fn on_event(streams: &mut HashMap<u64, socks::Reader>, stream: u64, ev: Event) -> Vec<Command> {
    let mut out = Vec::new();
    match ev {
        Event::Opened((_client, orig_dst)) => match target(&orig_dst) {
            Some(t) => {
                streams.insert(stream, socks::Reader::default());
                out.push(Command::Connect(t));
            }
            // Cannot happen (the gateway gives `addr:port`); without a server, nothing to do.
            None => out.push(Command::Close),
        },
        Event::ClientData(data) => {
            if let Some(r) = streams.get_mut(&stream) {
                tags(r.client(&data), &mut out);
            }
            out.push(Command::ToUpstream(data));
        }
        Event::UpstreamData(data) => {
            if let Some(r) = streams.get_mut(&stream) {
                tags(r.server(&data), &mut out);
            }
            out.push(Command::ToClient(data));
        }
        Event::UpstreamConnected => {}
        Event::UpstreamFailed(why) => {
            out.push(Command::Tag(("socks_error".into(), why)));
            out.push(Command::Close);
            streams.remove(&stream);
        }
        Event::ClientClosed | Event::UpstreamClosed => {
            streams.remove(&stream);
        }
    }
    if streams.get(&stream).is_some_and(socks::Reader::done) {
        streams.remove(&stream);
        out.push(Command::Splice);
    }
    out
}

export!(Observer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_to_the_server_passes_bytes_on_tags_and_splices_after_the_reply() {
        let mut s = HashMap::new();
        let out = on_event(
            &mut s,
            7,
            Event::Opened(("10.77.1.2:40000".into(), "10.77.2.2:1080".into())),
        );
        assert!(
            matches!(&out[..], [Command::Connect(t)] if t.host == "10.77.2.2" && t.port == 1080)
        );
        let out = on_event(&mut s, 7, Event::ClientData(vec![5, 1, 0]));
        assert!(
            matches!(&out[..], [Command::Tag((k, v)), Command::ToUpstream(d)]
            if k == "socks_version" && v == "5" && d == &[5, 1, 0])
        );
        on_event(&mut s, 7, Event::UpstreamData(vec![5, 0]));
        let out = on_event(
            &mut s,
            7,
            Event::ClientData(vec![5, 1, 0, 1, 10, 77, 2, 2, 0, 80]),
        );
        assert!(out.iter().any(
            |c| matches!(c, Command::Tag((k, v)) if k == "socks_target" && v == "10.77.2.2:80")
        ));
        let out = on_event(
            &mut s,
            7,
            Event::UpstreamData(vec![5, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
        );
        assert!(matches!(out.last(), Some(Command::Splice)), "{}", out.len());
        assert!(matches!(out[out.len() - 2], Command::ToClient(_)));
        assert!(s.is_empty(), "state dropped at the splice");
    }
}
