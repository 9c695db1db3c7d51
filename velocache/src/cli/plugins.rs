//! `velocache plugins ls|reload`: the admin API's plugin endpoints, as tables or JSON.
use std::fmt::Write as _;

use super::{CliError, PluginsCommand, exit};
use crate::{
    admin::api::{PluginsReloadReport, PluginsReport, paths},
    control::Client,
};

pub(super) async fn run(
    client: &Client,
    command: PluginsCommand,
    json: bool,
) -> Result<u8, CliError> {
    match command {
        PluginsCommand::Ls => {
            let report: PluginsReport = client.get(paths::PLUGINS).await?;
            if json {
                print_json(&report);
            } else {
                print!("{}", render_ls(&report));
            }
            Ok(exit::OK)
        }
        PluginsCommand::Reload => {
            let report: PluginsReloadReport = client.post(paths::PLUGINS_RELOAD, &()).await?;
            if json {
                print_json(&report);
            } else {
                print!("{}", render_reload(&report));
            }
            Ok(if report.refused.is_empty() {
                exit::OK
            } else {
                exit::FAILED
            })
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("velocache: error: rendering JSON: {e}"),
    }
}

/// The `plugins ls` table.
pub(super) fn render_ls(r: &PluginsReport) -> String {
    let mut out = String::new();
    let Some(dir) = &r.dir else {
        return "plugins are off ([plugins] dir is not set)\n".to_string();
    };
    let _ = writeln!(out, "plugins from {dir}");
    if r.plugins.is_empty() {
        out.push_str("  (none)\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<20} {:<14} {:<24} {:<9} {:>10} {:>7}  reason",
        "name", "hooks", "hosts/ports", "state", "calls", "errors"
    );
    for p in &r.plugins {
        let mut applies: Vec<String> = p.hosts.clone();
        applies.extend(p.ports.iter().map(|port| format!(":{port}")));
        if p.see_hits {
            applies.push("+hits".to_string());
        }
        let applies = if applies.is_empty() {
            "*".to_string()
        } else {
            applies.join(",")
        };
        let _ = writeln!(
            out,
            "{:<20} {:<14} {:<24} {:<9} {:>10} {:>7}  {}",
            p.name,
            p.hooks.join(","),
            applies,
            p.state,
            p.calls,
            p.errors,
            p.reason.as_deref().unwrap_or("")
        );
    }
    out
}

/// The `plugins reload` summary.
pub(super) fn render_reload(r: &PluginsReloadReport) -> String {
    let mut out = format!(
        "loaded {} plugin(s): {}\n",
        r.loaded.len(),
        r.loaded.join(", ")
    );
    for f in &r.refused {
        let kept = if f.kept_previous {
            " (the previous version runs on)"
        } else {
            ""
        };
        let _ = writeln!(out, "refused {}: {}{kept}", f.plugin, f.error);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::api::{PluginRefusal, PluginView};

    #[test]
    fn ls_shows_state_reason_and_counts() {
        let r = PluginsReport {
            dir: Some("/etc/velocache/plugins".into()),
            plugins: vec![PluginView {
                name: "trap".into(),
                file: "/p/trap/plugin.toml".into(),
                hooks: vec!["dns".into(), "http".into()],
                hosts: vec![],
                ports: vec![],
                see_hits: false,
                state: "disabled".into(),
                reason: Some("dns: trapped: wasm `unreachable` instruction executed".into()),
                calls: 1,
                errors: 1,
            }],
        };
        let text = render_ls(&r);
        assert!(text.contains("trap"), "{text}");
        assert!(text.contains("disabled"), "{text}");
        assert!(text.contains("unreachable"), "{text}");
        let reload = render_reload(&PluginsReloadReport {
            loaded: vec!["a".into()],
            refused: vec![PluginRefusal {
                plugin: "b".into(),
                error: "bad".into(),
                kept_previous: true,
            }],
        });
        assert!(reload.contains("refused b: bad (the previous"), "{reload}");
    }
}
