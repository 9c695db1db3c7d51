//! `stats` and `service status`, assembled from the metrics registry and the control plane.
//!
//! Statistics are read from the registry's own OpenMetrics rendering ([`super::exposition`]),
//! so `velocache stats` and a Prometheus scrape can never disagree, and a counter a service
//! registers shows up in `stats` with no code here knowing its name.
use std::collections::BTreeMap;

use velocache_common::Service;

use super::{
    exposition::{self, TypedSample},
    metrics,
    plane::ControlPlane,
};
use crate::admin::api::{Sample, ServiceStats, ServiceStatus, StatsReport, StatusReport};

/// Prefix of every metric the daemon exports.
const PREFIX: &str = "velocache_";

impl ControlPlane {
    /// `GET /metrics`.
    pub fn metrics_text(&self) -> String {
        metrics::encode(&self.registry)
    }

    /// `GET /v1/stats`.
    pub fn stats(&self) -> Result<StatsReport, exposition::ExpositionError> {
        let samples = exposition::parse(&self.metrics_text())?;
        let config = self.config();
        let enabled: BTreeMap<&str, bool> = config
            .intercepts_with(&self.claims)
            .iter()
            .map(|i| (i.service.name(), i.enabled))
            .collect();
        let mut services = Vec::new();
        for service in Service::ALL {
            let name = service.name();
            let own_prefix = format!("{PREFIX}{name}_");
            let with_service = |metric: &str| {
                samples.iter().find(|s| {
                    s.sample.name == metric
                        && s.sample.labels.get("service").map(String::as_str) == Some(name)
                })
            };
            let value = |metric: &str| with_service(metric).map_or(0, |s| s.sample.value as u64);
            let kernel = samples
                .iter()
                .filter(|s| {
                    s.sample.name == "velocache_datapath_packets_total"
                        && s.sample.labels.get("service").map(String::as_str) == Some(name)
                        && s.sample.value > 0.0
                })
                .filter_map(|s| {
                    Some((
                        s.sample.labels.get("verdict")?.clone(),
                        s.sample.value as u64,
                    ))
                })
                .collect();
            let own = samples
                .iter()
                .filter(|s| s.sample.name.starts_with(&own_prefix) && shown(s))
                .map(|s| s.sample.clone())
                .collect();
            services.push(ServiceStats {
                service: name.to_string(),
                enabled: enabled.get(name).copied().unwrap_or(false),
                active_sessions: value("velocache_active_sessions"),
                flows: value("velocache_flows_total"),
                kernel,
                metrics: own,
            });
        }
        let service_prefixes: Vec<String> = Service::ALL
            .iter()
            .map(|s| format!("{PREFIX}{}_", s.name()))
            .collect();
        let daemon: Vec<Sample> = samples
            .iter()
            .filter(|s| {
                shown(s)
                    && !service_prefixes
                        .iter()
                        .any(|p| s.sample.name.starts_with(p))
                    && !matches!(
                        s.sample.name.as_str(),
                        "velocache_active_sessions"
                            | "velocache_flows_total"
                            | "velocache_datapath_packets_total"
                    )
            })
            .map(|s| s.sample.clone())
            .collect();
        Ok(StatsReport {
            uptime_secs: self.started.elapsed().as_secs(),
            services,
            warmup: self.warmup.progress(),
            daemon,
        })
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> StatusReport {
        let config = self.config();
        let interfaces = if self.datapath.lock().await.is_some() {
            config.datapath.lan_interfaces.clone()
        } else {
            Vec::new()
        };
        StatusReport {
            state: if self.stopping() {
                "stopping"
            } else {
                "running"
            }
            .into(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            config_file: self.config_file.as_ref().map(|f| f.display().to_string()),
            rules_file: self.rules.file().map(|f| f.display().to_string()),
            rules: self.rules.current().rules.len(),
            services: config
                .intercepts_with(&self.claims)
                .into_iter()
                .map(|i| ServiceStatus {
                    service: i.service.name().into(),
                    enabled: i.enabled,
                    ports: i.ports,
                    listen_port: i.listen_port,
                })
                .collect(),
            interfaces,
            active_sessions: self.flows.active() as u64,
            restart_required: self.restart_required_now(),
            last_reload: self
                .last_reload
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            admin: self.listeners.get().cloned().unwrap_or_else(|| {
                crate::admin::api::AdminListeners {
                    socket: String::new(),
                    tcp: None,
                    metrics: None,
                }
            }),
        }
    }
}

/// Histogram buckets are for Prometheus; `stats` keeps their count and sum.
fn shown(s: &TypedSample) -> bool {
    !s.sample.name.ends_with("_bucket") && !s.sample.name.ends_with("_created")
}
