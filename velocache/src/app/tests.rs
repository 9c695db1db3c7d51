//! The daemon's start, reload and shutdown order, without privileges: a plain loopback listener
//! stands for the transparent ones, an echo service for the real services, and a kernel side
//! that records what it is asked stands for the datapath. Everything else — the control plane,
//! the admin socket, reloads through it, the flow tracker, the grace period — is the real thing.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::oneshot,
};
use velocache_common::Service;

use super::*;
use crate::{
    admin::api::{ReloadReport, paths},
    config::{DatapathConfig, Intercept},
    control::{Client, Endpoint, socket_path},
    datapath::{Counters, DatapathError, Kernel},
    flow::FlowTracker,
    net::{InterceptedTcp, TcpHandler, TransparentListener},
    service::{Handlers, ServiceError, ServiceFactory},
};

/// What happened, in order.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    fn push(&self, e: impl Into<String>) {
        self.0.lock().unwrap().push(e.into());
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn contains(&self, e: &str) -> bool {
        self.all().iter().any(|x| x == e)
    }
}

/// Echoes each connection until the client closes it; a flow while it lasts.
struct Echo {
    flows: FlowTracker,
    events: Events,
}

impl TcpHandler for Echo {
    fn on_connection(&self, conn: InterceptedTcp) {
        let guard = self.flows.start();
        let events = self.events.clone();
        tokio::spawn(async move {
            let InterceptedTcp { mut stream, .. } = conn;
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            events.push("flow ended");
            drop(guard);
        });
    }
}

struct EchoFactory(Events);

impl ServiceFactory for EchoFactory {
    fn service(&self) -> Service {
        Service::Http
    }

    fn build(
        self: Box<Self>,
        ctx: &ServiceContext,
        _registry: &mut Registry,
    ) -> Result<Handlers, ServiceError> {
        Ok(Handlers {
            tcp: Arc::new(Echo {
                flows: ctx.flows.clone(),
                events: self.0,
            }),
            udp: ctx.passthrough(Service::Http).udp,
        })
    }
}

/// Stands for the datapath: records reconfigurations and the stop.
struct FakeKernel(Events);

impl Kernel for FakeKernel {
    fn counters(&self) -> Option<Counters> {
        None
    }

    fn reconfigure(
        &mut self,
        cfg: &DatapathConfig,
        _intercepts: &[Intercept],
    ) -> Result<(), DatapathError> {
        let bypass: Vec<String> = cfg.bypass_clients.iter().map(|n| n.to_string()).collect();
        self.0
            .push(format!("reconfigured bypass={}", bypass.join(",")));
        Ok(())
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.0.push("kernel stopped") })
    }
}

/// One echo round trip on a new connection to `addr`.
async fn echo_once(addr: SocketAddr, what: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(what).await?;
    let mut got = vec![0u8; what.len()];
    s.read_exact(&mut got).await?;
    Ok(got)
}

struct Daemon {
    events: Events,
    listener: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), AppError>>,
    config_file: std::path::PathBuf,
    run_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn config_text(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "[daemon]\nrun_dir = \"{}\"\nstate_dir = \"{}\"\nshutdown_grace_secs = 30\n{extra}",
        dir.join("run").display(),
        dir.join("state").display()
    )
}

/// Start `run` with the echo service on a loopback listener and the recording kernel; the
/// kernel's start checks that the listener is already served.
async fn start(kernel_fails: bool) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("velocache.toml");
    std::fs::write(&config_file, config_text(dir.path(), "")).unwrap();
    let config = crate::config::load_with_env(Some(&config_file), Vec::new()).unwrap();
    let run_dir = config.daemon.run_dir.clone();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listener = std_listener.local_addr().unwrap();
    let events = Events::default();
    let (e1, e2) = (events.clone(), events.clone());
    let parts = Parts {
        listeners: vec![Bound {
            service: Service::Http,
            ports: vec![80],
            listen_port: 80,
            tcp: vec![TransparentListener::from_std(std_listener).unwrap()],
            udp: Vec::new(),
        }],
        services: Box::new(move |_, _, _, _, _| Ok(vec![Box::new(EchoFactory(e1)) as _])),
        // Nothing claims a slot here, so nothing is loaded: no privileges needed.
        xdp: crate::datapath::XdpOwner::new(crate::datapath::XdpSettings::default()),
        kernel: Box::new(move |_config, _intercepts, _sockets| {
            Box::pin(async move {
                // The first steered packet must find its socket: the service is already served.
                let served = echo_once(listener, b"up").await.is_ok();
                e2.push(format!("kernel started, listener served: {served}"));
                if kernel_fails {
                    return Err(DatapathError::NoSuchInterface("lan9".into()));
                }
                Ok(Some(Box::new(FakeKernel(e2)) as Box<dyn Kernel>))
            })
        }),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let launch = Launch {
        config_file: Some(config_file.clone()),
        log: None,
    };
    let done = tokio::spawn(run(config, launch, parts, async move {
        let _ = stopped.await;
    }));
    Daemon {
        events,
        listener,
        stop: Some(stop),
        done,
        config_file,
        run_dir,
        _dir: dir,
    }
}

/// Wait (bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn kernel_attaches_after_listeners_serve_and_detaches_after_flows_drain() {
    let mut d = start(false).await;
    let events = d.events.clone();
    until("the kernel side started", || {
        events.all().iter().any(|e| e.starts_with("kernel started"))
    })
    .await;
    assert_eq!(events.all()[0], "kernel started, listener served: true");

    // A flow in progress when the stop comes.
    let mut flow = TcpStream::connect(d.listener).await.unwrap();
    flow.write_all(b"a").await.unwrap();
    let mut one = [0u8; 1];
    flow.read_exact(&mut one).await.unwrap();
    let _ = d.stop.take().map(|s| s.send(()));

    // New flows find no socket (the listener is closed first) ...
    let addr = d.listener;
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener still accepts after the stop");
    // ... while the flow in progress goes on, and the kernel still steers it.
    flow.write_all(b"b").await.unwrap();
    flow.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"b");
    assert!(!events.contains("kernel stopped"), "{:?}", events.all());

    // The flow ends; only then is the kernel side detached, and the daemon returns.
    drop(flow);
    let result = tokio::time::timeout(Duration::from_secs(10), d.done)
        .await
        .expect("run returns once flows drained")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    let all = events.all();
    let ended = all.iter().rposition(|e| e == "flow ended").unwrap();
    let stopped = all.iter().position(|e| e == "kernel stopped").unwrap();
    assert!(ended < stopped, "{all:?}");
    assert!(
        !socket_path_exists(&d.run_dir),
        "the admin socket is gone once stopped"
    );
}

fn socket_path_exists(run_dir: &std::path::Path) -> bool {
    run_dir.join(crate::control::SOCKET_NAME).exists()
}

#[tokio::test]
async fn a_reload_rewrites_the_kernel_maps_and_a_bad_file_changes_nothing() {
    let mut d = start(false).await;
    let events = d.events.clone();
    until("the kernel side started", || {
        events.all().iter().any(|e| e.starts_with("kernel started"))
    })
    .await;
    let dir = d.config_file.parent().unwrap().to_path_buf();
    let config = crate::config::load_with_env(Some(&d.config_file), Vec::new()).unwrap();
    let client = Client::new(
        Endpoint::Socket(socket_path(&config)),
        Duration::from_secs(10),
    );
    std::fs::write(
        &d.config_file,
        config_text(&dir, "[datapath]\nbypass_clients = [\"10.9.0.0/16\"]\n"),
    )
    .unwrap();
    let report: ReloadReport = client.post(paths::RELOAD, &()).await.unwrap();
    assert!(report.config.error.is_none(), "{report:?}");
    assert!(
        events.contains("reconfigured bypass=10.9.0.0/16"),
        "{:?}",
        events.all()
    );
    // A file that does not load is refused; the kernel is not touched.
    std::fs::write(&d.config_file, "[datapath]\nbypass_clients = 7\n").unwrap();
    let before = events.all().len();
    let report: ReloadReport = client.post(paths::RELOAD, &()).await.unwrap();
    assert!(report.config.error.is_some(), "{report:?}");
    assert_eq!(events.all().len(), before, "{:?}", events.all());
    let _ = d.stop.take().map(|s| s.send(()));
    let result = tokio::time::timeout(Duration::from_secs(10), d.done)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(events.contains("kernel stopped"));
}

#[tokio::test]
async fn a_kernel_that_fails_to_start_stops_the_daemon_with_its_error() {
    let d = start(true).await;
    let result = tokio::time::timeout(Duration::from_secs(10), d.done)
        .await
        .unwrap()
        .unwrap();
    match result {
        Err(AppError::Datapath(DatapathError::NoSuchInterface(i))) => assert_eq!(i, "lan9"),
        other => panic!("unexpected: {other:?}"),
    }
    // Its sockets are closed with it: nothing is left to steer packets to.
    let addr = d.listener;
    let mut closed = false;
    for _ in 0..500 {
        if echo_once(addr, b"x").await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "the listener outlived the failed start");
}
