//! Let steered packets through the gateway's own input firewall.
//!
//! A steered packet is delivered locally, so it traverses netfilter's INPUT hook; a router
//! whose input policy drops new connections would drop every intercepted flow. For each input
//! base chain in the nftables ruleset (that includes iptables-nft's `INPUT`) we insert, first,
//! `meta mark <mark> accept` tagged with a `velocache` comment, and remove exactly those rules
//! on stop. Rules a killed daemon left are found by their comment and replaced, never stacked.
//! Without `nft` on the box there is nothing to do (and nothing of ours is filtered by nft).
use std::process::{Command, Stdio};

use serde_json::Value;
use tracing::{debug, info, warn};

/// Comment that marks our rules.
const TAG: &str = "velocache";

/// An input base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chain {
    family: String,
    table: String,
    name: String,
}

/// Our accept rules, installed; [`FirewallAccept::remove`] takes them out.
pub struct FirewallAccept {
    installed: Vec<Chain>,
}

fn nft(args: &[&str]) -> Result<String, String> {
    let out = Command::new("nft")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The ruleset as JSON objects (`{"chain": …}`, `{"rule": …}`, …).
fn ruleset() -> Result<Vec<Value>, String> {
    let text = nft(&["-j", "-a", "list", "ruleset"])?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("nft JSON: {e}"))?;
    Ok(v["nftables"].as_array().cloned().unwrap_or_default())
}

fn input_chains(items: &[Value]) -> Vec<Chain> {
    items
        .iter()
        .filter_map(|i| i.get("chain"))
        .filter(|c| c["hook"] == "input" && c["type"] == "filter")
        .filter(|c| matches!(c["family"].as_str(), Some("ip" | "ip6" | "inet")))
        .filter_map(|c| {
            Some(Chain {
                family: c["family"].as_str()?.to_string(),
                table: c["table"].as_str()?.to_string(),
                name: c["name"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// (chain, handle) of every rule carrying our comment.
fn our_rules(items: &[Value]) -> Vec<(Chain, u64)> {
    items
        .iter()
        .filter_map(|i| i.get("rule"))
        .filter(|r| r["comment"] == TAG)
        .filter_map(|r| {
            Some((
                Chain {
                    family: r["family"].as_str()?.to_string(),
                    table: r["table"].as_str()?.to_string(),
                    name: r["chain"].as_str()?.to_string(),
                },
                r["handle"].as_u64()?,
            ))
        })
        .collect()
}

fn delete_ours() {
    let Ok(items) = ruleset() else { return };
    for (chain, handle) in our_rules(&items) {
        let handle = handle.to_string();
        if let Err(e) = nft(&[
            "delete",
            "rule",
            &chain.family,
            &chain.table,
            &chain.name,
            "handle",
            &handle,
        ]) {
            warn!(error = %e, "removing a firewall accept rule failed");
        }
    }
}

impl FirewallAccept {
    /// Remove stale rules of ours, then accept `mark` first in every input base chain.
    pub fn install(mark: u32) -> Self {
        let items = match ruleset() {
            Ok(items) => items,
            Err(e) => {
                debug!(error = %e, "no nftables ruleset to open for steered packets");
                return FirewallAccept {
                    installed: Vec::new(),
                };
            }
        };
        delete_ours();
        let mut installed = Vec::new();
        let mark = format!("{mark:#x}");
        for chain in input_chains(&items) {
            match nft(&[
                "insert",
                "rule",
                &chain.family,
                &chain.table,
                &chain.name,
                "meta",
                "mark",
                &mark,
                "counter",
                "accept",
                "comment",
                TAG,
            ]) {
                Ok(_) => {
                    info!(family = %chain.family, table = %chain.table, chain = %chain.name,
                        "input firewall: steered packets accepted");
                    installed.push(chain);
                }
                Err(e) => {
                    warn!(error = %e, "could not open the input firewall for steered packets; intercepted flows may be dropped")
                }
            }
        }
        FirewallAccept { installed }
    }

    /// Remove the rules we installed (and any other rule tagged as ours).
    pub fn remove(self) {
        if !self.installed.is_empty() {
            delete_ours();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_input_chains_and_our_rules_in_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "fw", "handle": 1}},
            {"chain": {"family": "inet", "table": "fw", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
            {"chain": {"family": "ip", "table": "nat", "name": "PREROUTING", "handle": 2, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
            {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 3, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
            {"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 7, "comment": "velocache", "expr": []}},
            {"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 8, "expr": []}}]}"#;
        let v: Value = serde_json::from_str(json).unwrap();
        let items = v["nftables"].as_array().unwrap().clone();
        let chains = input_chains(&items);
        assert_eq!(chains.len(), 2);
        assert_eq!(chains[0].name, "input");
        assert_eq!(chains[1].table, "filter");
        let ours = our_rules(&items);
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].1, 7);
    }
}
