//! The admin API end to end in one process: a real server on a temporary socket, the real
//! client, the real registry.
use std::{
    os::unix::fs::PermissionsExt as _,
    sync::{Arc, OnceLock},
    time::Duration,
};

use prometheus_client::{metrics::counter::Counter, registry::Registry};
use tokio_util::sync::CancellationToken;
use velocache_common::Service;

use super::*;
use crate::admin::{api::*, *};
use crate::{config::Config, flow::FlowTracker, rules::Rules};

struct Running {
    plane: Arc<ControlPlane>,
    client: Client,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

/// A control plane served on its admin socket: what the admin API tests of every module start.
pub(crate) struct Served {
    pub(crate) plane: Arc<ControlPlane>,
    pub(crate) client: Client,
    pub(crate) cancel: CancellationToken,
    pub(crate) server: tokio::task::JoinHandle<()>,
    pub(crate) config: Arc<Config>,
}

/// Serve a control plane whose configuration file, in `dir`, is `config_text` below a
/// `[daemon]` table with run and state directories in `dir`; with `rules`, `hub`, and the
/// metrics `register` adds before the registry is frozen.
pub(crate) async fn serve(
    dir: &std::path::Path,
    config_text: &str,
    rules: Rules,
    hub: AdminHub,
    register: impl FnOnce(&mut Registry),
) -> Served {
    let file = dir.join("velocache.toml");
    let text = format!(
        "[daemon]\nrun_dir = \"{}\"\nstate_dir = \"{}\"\n{config_text}",
        dir.join("run").display(),
        dir.join("state").display()
    );
    std::fs::write(&file, text).unwrap();
    let config = Arc::new(crate::config::load_with_env(Some(&file), Vec::new()).unwrap());
    let flows = FlowTracker::new();
    let mut registry = Registry::with_prefix("velocache");
    register(&mut registry);
    metrics::DaemonMetrics::register(
        &mut registry,
        flows.clone(),
        Arc::new(OnceLock::new()),
        rules.clone(),
    );
    let plane_metrics = PlaneMetrics::register(&mut registry);
    let plane = ControlPlane::new(PlaneParts {
        config: config.clone(),
        config_file: Some(file),
        rules,
        flows,
        hub,
        claims: crate::config::PortClaims::default(),
        registry: Arc::new(registry),
        datapath: None,
        log: None,
        metrics: plane_metrics,
    });
    let server = AdminServer::bind(&config).await.unwrap();
    let cancel = CancellationToken::new();
    let client = Client::new(
        Endpoint::Socket(socket_path(&config)),
        Duration::from_secs(10),
    );
    let server = tokio::spawn(server.serve(plane.clone(), cancel.clone()));
    Served {
        plane,
        client,
        cancel,
        server,
        config,
    }
}

/// A daemon's control plane with `config_text` as its file, serving on a temporary socket;
/// `register` may add service metrics before the registry is frozen.
async fn start(config_text: &str, register: impl FnOnce(&mut Registry)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(
        dir.path(),
        config_text,
        Rules::empty(),
        AdminHub::new(),
        register,
    )
    .await;
    Running {
        plane: s.plane,
        client: s.client,
        cancel: s.cancel,
        server: s.server,
        dir,
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.server.await.unwrap();
    }
}

#[tokio::test]
async fn a_counter_registered_in_a_service_sub_registry_is_served_at_metrics() {
    let hits: Counter = Counter::default();
    let r = start("", |registry| {
        registry
            .sub_registry_with_prefix(Service::Dns.name())
            .register("cache_hits", "DNS answers from the cache", hits.clone());
    })
    .await;
    hits.inc_by(3);
    let text = r.client.get_text(paths::METRICS).await.unwrap();
    let samples = exposition::parse(&text).unwrap();
    let hit = samples
        .iter()
        .find(|s| s.sample.name == "velocache_dns_cache_hits_total")
        .unwrap_or_else(|| panic!("not in /metrics:\n{text}"));
    assert_eq!(hit.sample.value, 3.0);
    assert_eq!(hit.kind, "counter");

    // `stats` reads the same registry: the counter is under its service.
    let stats: StatsReport = r.client.get(paths::STATS).await.unwrap();
    let dns = stats.services.iter().find(|s| s.service == "dns").unwrap();
    assert!(
        dns.metrics
            .iter()
            .any(|m| m.name == "velocache_dns_cache_hits_total" && m.value == 3.0),
        "{dns:?}"
    );
    assert_eq!(stats.warmup.state, "idle");
    r.stop().await;
}

#[tokio::test]
async fn socket_is_root_only_and_removed_at_stop() {
    let r = start("", |_| {}).await;
    let run = r.dir.path().join("run");
    let sock = run.join(SOCKET_NAME);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sock), 0o600);
    assert_eq!(mode(&run), 0o700);
    r.stop().await;
    assert!(!sock.exists(), "socket removed");
}

#[tokio::test]
async fn services_that_registered_nothing_answer_not_available() {
    let r = start("", |_| {}).await;
    for result in [
        r.client
            .post::<_, CacheListing>(
                paths::CACHE_LIST,
                &CacheQuery {
                    pattern: None,
                    limit: 0,
                },
            )
            .await
            .map(|_| ()),
        r.client.get::<CallsReport>(paths::CALLS).await.map(|_| ()),
        r.client.get::<CaReport>(paths::CA).await.map(|_| ()),
        r.client
            .post::<_, WarmReport>(
                paths::CACHE_WARM,
                &WarmRequest {
                    urls: vec!["http://a.lab/".into()],
                    wait: true,
                },
            )
            .await
            .map(|_| ()),
    ] {
        match result {
            Err(ClientError::Api { status: 503, body }) => {
                assert_eq!(body.kind, ErrorKind::NotAvailable);
                assert!(body.error.contains("not available"), "{}", body.error);
            }
            other => panic!("expected 503 not_available, got {other:?}"),
        }
    }
    match r.client.get::<StatusReport>("/v1/nope").await {
        Err(ClientError::Api { status: 404, body }) => {
            assert_eq!(body.kind, ErrorKind::NoSuchEndpoint)
        }
        other => panic!("{other:?}"),
    }
    r.stop().await;
}

#[tokio::test]
async fn reload_applies_live_settings_lists_restart_ones_and_refuses_bad_files() {
    let r = start("[dns]\nports = [53]\n", |_| {}).await;
    let file = r.plane.config_file.clone().unwrap();
    let base = std::fs::read_to_string(&file).unwrap();
    let base = base.trim_end_matches("[dns]\nports = [53]\n").to_string();

    std::fs::write(
        &file,
        format!("{base}[dns]\nports = [53, 5353]\nlisten_port = 25053\n"),
    )
    .unwrap();
    let report: ReloadReport = r.client.post(paths::RELOAD, &()).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.config.applied, vec!["dns.ports"]);
    assert_eq!(report.config.restart_required, vec!["dns.listen_port"]);
    assert_eq!(r.plane.config().dns.ports, vec![53, 5353]);
    assert_eq!(
        r.plane.config().dns.listen_port,
        15053,
        "restart-only setting waits"
    );

    // A bad file: refused with file, line, key; the running configuration stays.
    std::fs::write(
        &file,
        format!("{base}[dns]\nports = [53]\n\n[http]\nports = \"eighty\"\n"),
    )
    .unwrap();
    let report: ReloadReport = r.client.post(paths::RELOAD, &()).await.unwrap();
    let error = report.config.error.clone().unwrap();
    assert!(
        error.starts_with(&format!("{}:", file.display())) && error.contains("http.ports"),
        "{error}"
    );
    let line = base.lines().count() + 5;
    assert!(
        error.contains(&format!(":{line}:")),
        "line {line} expected: {error}"
    );
    assert_eq!(r.plane.config().dns.ports, vec![53, 5353]);
    let status: StatusReport = r.client.get(paths::STATUS).await.unwrap();
    assert_eq!(status.restart_required, vec!["dns.listen_port"]);
    assert_eq!(status.last_reload.unwrap().config.error, Some(error));
    r.stop().await;
}

#[tokio::test]
async fn stop_through_the_api_resolves_the_stop_future() {
    let r = start("", |_| {}).await;
    let report: StopReport = r.client.post(paths::STOP, &()).await.unwrap();
    assert!(report.stopping);
    tokio::time::timeout(Duration::from_secs(10), r.plane.stop_requested())
        .await
        .unwrap();
    let status: StatusReport = r.client.get(paths::STATUS).await.unwrap();
    assert_eq!(status.state, "stopping");
    r.stop().await;
}

#[tokio::test]
async fn tcp_listener_needs_the_token_and_metrics_listener_serves_metrics_only() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-s3cret-s3cret\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Port 0 picks free ports; the status report says which.
    let r = start(
        &format!(
            "[admin]\ntcp_listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\n",
            token_file.display()
        ),
        |_| {},
    )
    .await;
    let status: StatusReport = r.client.get(paths::STATUS).await.unwrap();
    let tcp = status.admin.tcp.unwrap();
    let metrics = status.admin.metrics.unwrap();
    let with = |addr: &str, token: &str| {
        Client::new(
            Endpoint::Tcp {
                addr: addr.into(),
                token: token.into(),
            },
            Duration::from_secs(10),
        )
    };
    let ok: StatusReport = with(&tcp, "s3cret-s3cret-s3cret")
        .get(paths::STATUS)
        .await
        .unwrap();
    assert_eq!(ok.pid, std::process::id());
    match with(&tcp, "wrong-wrong-wrong-wrong")
        .get::<StatusReport>(paths::STATUS)
        .await
    {
        Err(ClientError::Api { status: 401, body }) => {
            assert_eq!(body.kind, ErrorKind::Unauthorized)
        }
        other => panic!("{other:?}"),
    }
    let text = with(&metrics, "").get_text(paths::METRICS).await.unwrap();
    assert!(text.contains("velocache_active_sessions"), "{text}");
    match with(&metrics, "").get::<StatusReport>(paths::STATUS).await {
        Err(ClientError::Api { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
    r.stop().await;
}

#[test]
fn the_example_config_documents_the_admin_section() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("deploy/velocache.toml")).unwrap();
    for key in ["[admin]", "tcp_listen", "token_file", "metrics_listen"] {
        assert!(
            text.contains(key),
            "deploy/velocache.toml does not mention {key}"
        );
    }
    // And the defaults keep the TCP listeners off.
    assert_eq!(Config::default().admin.tcp_listen, None);
    assert_eq!(Config::default().admin.metrics_listen, None);
}
