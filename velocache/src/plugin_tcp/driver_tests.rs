//! The stream driver with sessions written in Rust: what the plugin asks for is done, in order,
//! a failing plugin leaves the stream as if it were absent, and queues stay bounded.
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use velocache_common::Service;

use super::*;
use crate::{
    flow::FlowTracker,
    net::{ClientAddr, OrigDstAddr},
    plugin_tcp::session::SessionError,
};

type Script = Box<dyn FnMut(&Event) -> Result<Vec<Command>, SessionError> + Send>;

/// A session answering each event with what `script` says, remembering the events.
struct Scripted {
    script: Script,
    events: Arc<Mutex<Vec<Event>>>,
}

impl StreamSession for Scripted {
    fn plugin(&self) -> &str {
        "scripted"
    }

    fn event(&mut self, ev: Event) -> Result<Vec<Command>, SessionError> {
        let out = (self.script)(&ev);
        self.events.lock().unwrap().push(ev);
        out
    }
}

fn session(
    script: impl FnMut(&Event) -> Result<Vec<Command>, SessionError> + Send + 'static,
) -> (Box<dyn StreamSession>, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let s = Scripted {
        script: Box::new(script),
        events: events.clone(),
    };
    (Box::new(s), events)
}

fn disabled() -> SessionError {
    SessionError::Disabled {
        plugin: "scripted".into(),
        reason: "wasm trap: unreachable".into(),
    }
}

fn target(addr: SocketAddr) -> Target {
    Target {
        host: addr.ip().to_string(),
        port: addr.port(),
    }
}

/// A connection as the transparent listener hands it over: the test's client end, and the
/// daemon's end, whose original destination is `orig_dst`.
async fn intercepted(orig_dst: SocketAddr) -> (TcpStream, InterceptedTcp) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (stream, peer) = l.accept().await.unwrap();
    let conn = InterceptedTcp {
        stream,
        client: ClientAddr(peer),
        orig_dst: OrigDstAddr(orig_dst),
    };
    (client, conn)
}

/// An origin echoing what each connection sends.
async fn echo_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

fn flow(orig_dst: SocketAddr) -> crate::flow::FlowGuard {
    FlowTracker::new().open(
        Service::Plugin,
        ClientAddr("127.0.0.1:40000".parse().unwrap()),
        OrigDstAddr(orig_dst),
        "tcp",
    )
}

const T: Duration = Duration::from_secs(5);

async fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(T, s.read_exact(&mut buf))
        .await
        .expect("read in time")
        .unwrap();
    buf
}

#[tokio::test]
async fn the_plugin_connects_forwards_then_splices_and_sees_nothing_after() {
    let origin = echo_origin().await;
    let (mut client, conn) = intercepted(origin).await;
    let (s, events) = session(move |ev| {
        Ok(match ev {
            Event::Opened { .. } => vec![
                Command::Connect(target(origin)),
                Command::Tag("seen".into(), "opened".into()),
            ],
            Event::ClientData(d) => vec![Command::ToUpstream(d.clone())],
            Event::UpstreamData(d) => vec![Command::ToClient(d.clone()), Command::Splice],
            _ => vec![],
        })
    });
    let f = flow(origin);
    let counts = f.counts();
    let task = tokio::spawn(async move { drive(s, conn, &f, T).await });
    client.write_all(b"hello").await.unwrap();
    assert_eq!(read_exactly(&mut client, 5).await, b"hello");
    // Spliced now: the plugin is not told about these.
    client.write_all(b"world").await.unwrap();
    assert_eq!(read_exactly(&mut client, 5).await, b"world");
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(
        tokio::time::timeout(T, task).await.unwrap().unwrap(),
        End::Spliced
    );
    let events = events.lock().unwrap().clone();
    assert!(
        matches!(&events[0], Event::Opened { orig_dst, .. } if *orig_dst == origin.to_string())
    );
    assert!(events.contains(&Event::UpstreamConnected), "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| *e == Event::ClientData(b"world".to_vec())),
        "{events:?}"
    );
    assert_eq!(counts.up.load(Ordering::Relaxed), 10);
    assert_eq!(counts.down.load(Ordering::Relaxed), 10);
}

#[tokio::test]
async fn a_plugin_that_fails_at_once_is_absent_and_the_stream_reaches_its_destination() {
    let origin = echo_origin().await;
    let (mut client, conn) = intercepted(origin).await;
    let (s, _) = session(|_| Err(disabled()));
    let f = flow(origin);
    let task = tokio::spawn(async move { drive(s, conn, &f, T).await });
    client.write_all(b"ping").await.unwrap();
    assert_eq!(read_exactly(&mut client, 4).await, b"ping");
    client.shutdown().await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, task).await.unwrap().unwrap(),
        End::Fallback
    );
}

#[tokio::test]
async fn a_plugin_failing_after_reading_gets_the_clients_bytes_replayed() {
    let origin = echo_origin().await;
    let (mut client, conn) = intercepted(origin).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let (s, _) = session(move |ev| match ev {
        Event::ClientData(d) if seen2.fetch_add(d.len(), Ordering::Relaxed) + d.len() >= 4 => {
            Err(disabled())
        }
        _ => Ok(vec![]),
    });
    let f = flow(origin);
    let counts = f.counts();
    let task = tokio::spawn(async move { drive(s, conn, &f, T).await });
    client.write_all(b"ab").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.write_all(b"cd").await.unwrap();
    assert_eq!(read_exactly(&mut client, 4).await, b"abcd");
    client.write_all(b"ef").await.unwrap();
    assert_eq!(read_exactly(&mut client, 2).await, b"ef");
    client.shutdown().await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, task).await.unwrap().unwrap(),
        End::Fallback
    );
    assert_eq!(
        counts.up.load(Ordering::Relaxed),
        6,
        "replayed bytes count once"
    );
}

#[tokio::test]
async fn close_writes_the_queue_then_closes_both_sides() {
    let origin = echo_origin().await;
    let (mut client, conn) = intercepted(origin).await;
    let (s, _) = session(|ev| {
        Ok(match ev {
            Event::Opened { .. } => vec![Command::ToClient(b"bye\n".to_vec()), Command::Close],
            _ => vec![],
        })
    });
    let f = flow(origin);
    let task = tokio::spawn(async move { drive(s, conn, &f, T).await });
    let mut all = Vec::new();
    tokio::time::timeout(T, client.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all, b"bye\n");
    assert_eq!(
        tokio::time::timeout(T, task).await.unwrap().unwrap(),
        End::Closed
    );
}

#[tokio::test]
async fn a_failed_connection_is_an_event_the_plugin_answers() {
    let nowhere = closed_port().await;
    let (mut client, conn) = intercepted(nowhere).await;
    let (s, _) = session(move |ev| {
        Ok(match ev {
            Event::Opened { .. } => vec![Command::Connect(target(nowhere))],
            Event::UpstreamFailed(_) => {
                vec![Command::ToClient(b"no route".to_vec()), Command::Close]
            }
            _ => vec![],
        })
    });
    let f = flow(nowhere);
    let task = tokio::spawn(async move { drive(s, conn, &f, T).await });
    let mut all = Vec::new();
    tokio::time::timeout(T, client.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all, b"no route");
    assert_eq!(
        tokio::time::timeout(T, task).await.unwrap().unwrap(),
        End::Closed
    );
}

#[tokio::test]
async fn names_are_resolved_for_the_plugins_connection() {
    let origin = echo_origin().await;
    let (mut client, conn) = intercepted(origin).await;
    let port = origin.port();
    let (s, events) = session(move |ev| {
        Ok(match ev {
            Event::Opened { .. } => vec![Command::Connect(Target {
                host: "localhost".into(),
                port,
            })],
            // Bytes before the connection are queued for it, then the rest is spliced.
            Event::ClientData(d) => vec![Command::ToUpstream(d.clone())],
            Event::UpstreamConnected => vec![Command::Splice],
            _ => vec![],
        })
    });
    let f = flow(origin);
    let task = tokio::spawn(async move { drive(s, conn, &f, T).await });
    client.write_all(b"x").await.unwrap();
    assert_eq!(read_exactly(&mut client, 1).await, b"x");
    client.shutdown().await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, task).await.unwrap().unwrap(),
        End::Spliced
    );
    assert!(events.lock().unwrap().contains(&Event::UpstreamConnected));
}

#[tokio::test]
async fn bytes_for_an_upstream_never_opened_end_the_stream_at_the_limit() {
    let origin = echo_origin().await;
    let (mut client, conn) = intercepted(origin).await;
    let (s, _) = session(|ev| {
        Ok(match ev {
            Event::ClientData(d) => vec![Command::ToUpstream(d.clone())],
            _ => vec![],
        })
    });
    let f = flow(origin);
    let task = tokio::spawn(async move { drive(s, conn, &f, T).await });
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..(2 * QUEUE_LIMIT / chunk.len()) {
            if client.write_all(&chunk).await.is_err() {
                break;
            }
        }
        client
    });
    assert_eq!(
        tokio::time::timeout(T, task).await.unwrap().unwrap(),
        End::Error
    );
    drop(writer);
}

#[tokio::test]
async fn an_upstream_that_does_not_read_holds_the_client_back() {
    // An origin that accepts and never reads.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = l.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let (mut client, conn) = intercepted(origin).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let (s, _) = session(move |ev| {
        Ok(match ev {
            Event::Opened { .. } => vec![Command::Connect(target(origin))],
            Event::ClientData(d) => {
                seen2.fetch_add(d.len(), Ordering::Relaxed);
                vec![Command::ToUpstream(d.clone())]
            }
            _ => vec![],
        })
    });
    let f = flow(origin);
    let task = tokio::spawn(async move { drive(s, conn, &f, T).await });
    const TOTAL: usize = 64 << 20;
    let writer = tokio::spawn(async move {
        let chunk = vec![1u8; 1 << 20];
        for _ in 0..TOTAL / chunk.len() {
            client.write_all(&chunk).await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!writer.is_finished(), "the client was never held back");
    let taken = seen.load(Ordering::Relaxed);
    // What the sockets' buffers hold, plus the queue: far from everything.
    assert!(taken < TOTAL / 2, "the driver took {taken} bytes");
    writer.abort();
    task.abort();
    held.abort();
}
