//! Which services the daemon runs, built from the configuration: the shared parts several
//! services use (the TLS layer, the one HTTP proxy and its cache) are made here once, registered
//! with the admin hub, and handed to the factories that need them.
//!
//! This is the one place that names every concrete service; `app::run` only iterates over what
//! it returns.
use std::sync::Arc;

use prometheus_client::registry::Registry;
use velocache_common::Service;

use super::AppError;
use crate::{
    admin::AdminHub,
    cache::shared::Tier,
    config::Config,
    http::{AnomalyPhase, HttpsOrigins, Phase, PluginPhase, ProxyCacheAdmin, Recorder},
    origins::{Origins, spawn_checks},
    plugins::Plugins,
    rules::Rules,
    service::ServiceFactory,
    tls::{CaPage, OriginTimeouts, TlsShared},
};

/// One factory per service, in service order.
pub fn factories(
    config: &Config,
    rules: &Rules,
    plugins: &Plugins,
    hub: &AdminHub,
    registry: &mut Registry,
) -> Result<Vec<Box<dyn ServiceFactory>>, AppError> {
    let tls = if config.https.enabled {
        let shared = Arc::new(TlsShared::new(config)?);
        hub.register_ca(shared.clone());
        Some(shared)
    } else {
        None
    };
    // One registry of origin health and breakers, shared by plain and decrypted HTTP.
    let origins = Origins::new(
        &config.origins,
        registry.sub_registry_with_prefix("origins"),
    );
    hub.register_origins(origins.clone());
    spawn_checks(&origins, rules.clone());
    // Plain HTTP and decrypted HTTPS go through the same proxy, so an object is stored once.
    let proxy = (config.http.enabled || config.https.enabled).then(|| {
        let mut phases: Vec<Arc<dyn Phase>> = Vec::new();
        // The dashboard's capture: the first sees heads as received, the second places itself
        // last in the chain and sees them as sent.
        if let Some(live) = hub.live() {
            let (first, last) = crate::http::live_phase::phases(live);
            phases.push(Arc::new(first));
            phases.push(Arc::new(last));
        }
        if let Some(tls) = &tls {
            phases.push(Arc::new(CaPage::new(tls.clone(), &config.tls.ca_page_host)));
        }
        let recorder = Recorder::new(&config.daemon.state_dir);
        hub.register_record(Arc::new(recorder.clone()));
        phases.push(Arc::new(recorder));
        if config.anomaly.enabled {
            phases.push(Arc::new(AnomalyPhase::new(
                &config.anomaly,
                registry.sub_registry_with_prefix(Service::Http.name()),
            )));
        }
        // Last before the rules: a plugin may name the rule that decides.
        phases.push(Arc::new(PluginPhase::new(plugins.clone())));
        let tier = Tier::start(&config.shared, registry.sub_registry_with_prefix("shared"));
        crate::http::build_proxy(
            &config.http,
            &config.daemon.state_dir,
            rules.clone(),
            origins.clone(),
            registry.sub_registry_with_prefix(Service::Http.name()),
            phases,
            tier,
        )
    });
    if let Some(proxy) = &proxy {
        let https: Option<HttpsOrigins> = tls.clone().map(|shared| {
            let timeouts = OriginTimeouts::from_config(&config.http);
            let make: HttpsOrigins = Arc::new(move |dst, sni: &str| {
                crate::tls::origin_client(shared.clone(), dst, sni, timeouts)
            });
            make
        });
        hub.register_cache(Arc::new(ProxyCacheAdmin::new(proxy.clone(), https)));
    }
    Ok(vec![
        crate::http::factory(proxy.clone()),
        crate::tls::factory(tls, proxy),
        crate::dns::factory(),
        crate::sip::factory(plugins.dir().is_some().then(|| {
            let hook: Arc<dyn crate::sip::SipHook> = Arc::new(plugins.clone());
            hook
        })),
        crate::plugin_tcp::factory(plugins.dir().is_some().then(|| {
            let streams: Arc<dyn crate::plugin_tcp::StreamPlugins> = Arc::new(plugins.clone());
            streams
        })),
    ])
}
