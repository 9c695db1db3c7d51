//! The plugin set as the admin API sees it: `velocache plugins ls` (each plugin's hooks, what
//! it applies to, live / disabled / refused and why, its calls and errors) and `velocache
//! plugins reload` (the directory re-read on a blocking thread, the set swapped).
use futures::future::BoxFuture;

use super::{Hook, Plugins, Refused};
use crate::admin::{
    AdminError, PluginsAdmin,
    api::{PluginRefusal, PluginView, PluginsReloadReport, PluginsReport},
};

fn refusal(r: &Refused) -> PluginRefusal {
    PluginRefusal {
        plugin: r.plugin.clone(),
        error: r.error.to_string(),
        kept_previous: r.kept_previous,
    }
}

impl PluginsAdmin for Plugins {
    fn list(&self) -> PluginsReport {
        let set = self.current();
        let mut plugins: Vec<PluginView> = set
            .all
            .iter()
            .map(|p| {
                let m = &p.manifest;
                let (calls, errors) = Hook::ALL
                    .iter()
                    .map(|h| p.counts(*h))
                    .fold((0, 0), |(c, e), (c2, e2)| (c + c2, e + e2));
                PluginView {
                    name: m.name.clone(),
                    file: m.file.display().to_string(),
                    hooks: m.hooks.iter().map(|h| h.name().to_string()).collect(),
                    hosts: m.hosts.iter().map(|h| h.as_str().to_string()).collect(),
                    ports: m.ports.clone(),
                    see_hits: m.see_hits,
                    state: if p.live() { "live" } else { "disabled" }.to_string(),
                    reason: p.reason(),
                    calls,
                    errors,
                }
            })
            .collect();
        for r in set.refused.iter().filter(|r| !r.kept_previous) {
            plugins.push(PluginView {
                name: r.plugin.clone(),
                file: String::new(),
                hooks: Vec::new(),
                hosts: Vec::new(),
                ports: Vec::new(),
                see_hits: false,
                state: "refused".to_string(),
                reason: Some(r.error.to_string()),
                calls: 0,
                errors: 0,
            });
        }
        PluginsReport {
            dir: self.dir().map(|d| d.display().to_string()),
            plugins,
        }
    }

    fn reload(&self) -> BoxFuture<'_, Result<PluginsReloadReport, AdminError>> {
        let plugins = self.clone();
        Box::pin(async move {
            let report = tokio::task::spawn_blocking(move || plugins.reload())
                .await
                .map_err(|e| AdminError::Failed(format!("the reload did not finish: {e}")))?
                .map_err(|e| match e {
                    super::PluginError::NotConfigured => AdminError::BadRequest(e.to_string()),
                    e => AdminError::Failed(e.to_string()),
                })?;
            Ok(PluginsReloadReport {
                loaded: report.loaded,
                refused: report.refused.iter().map(refusal).collect(),
            })
        })
    }

    fn tcp_ports(&self) -> Vec<(String, u16)> {
        Plugins::tcp_ports(self)
    }
}
