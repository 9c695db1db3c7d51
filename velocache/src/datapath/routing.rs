//! Policy routing that turns a steered packet into a local one.
//!
//! `ip rule add fwmark MARK lookup TABLE priority PRIO` plus `ip route add local default dev lo
//! table TABLE`, for IPv4 and IPv6, over rtnetlink. Install first removes anything a killed
//! daemon left behind (rules pointing at our table or carrying our mark at our priority, and
//! our table's default routes), so a restart converges instead of stacking duplicates. IPv6 is
//! optional: a host without it gets a warning, not a failure.
use std::net::{Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, IpVersion, RouteMessageBuilder,
    packet_route::{
        route::{RouteMessage, RouteScope, RouteType},
        rule::{RuleAction, RuleAttribute, RuleMessage},
    },
};
use thiserror::Error;
use tracing::{debug, warn};

/// A routing operation failed.
#[derive(Debug, Error)]
pub enum RoutingError {
    /// The rtnetlink socket could not be opened.
    #[error("cannot open rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// A netlink request failed.
    #[error("{op} failed: {source}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// Netlink's error.
        #[source]
        source: rtnetlink::Error,
    },
    /// The loopback interface is missing.
    #[error("loopback interface `lo` not found")]
    NoLoopback,
}

/// What the policy routing is keyed on.
#[derive(Debug, Clone, Copy)]
pub struct RoutingSpec {
    /// fwmark set by the classifier.
    pub mark: u32,
    /// Table with the local default routes.
    pub table: u32,
    /// Rule priority.
    pub priority: u32,
}

/// Installed policy routing; [`PolicyRouting::remove`] takes it down again.
pub struct PolicyRouting {
    handle: Handle,
    spec: RoutingSpec,
    lo_index: u32,
    v6: bool,
}

async fn connect() -> Result<Handle, RoutingError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(RoutingError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

impl PolicyRouting {
    /// Remove stale state, then install the rules and routes.
    pub async fn install(spec: RoutingSpec) -> Result<Self, RoutingError> {
        let handle = connect().await?;
        let lo_index = loopback_index(&handle).await?;
        let mut routing = PolicyRouting {
            handle,
            spec,
            lo_index,
            v6: true,
        };
        routing.remove_all().await;

        routing.add_rule(IpVersion::V4).await?;
        routing
            .add_route(v4_route(spec.table, lo_index))
            .await
            .map_err(|source| RoutingError::Netlink {
                op: "adding IPv4 local route",
                source,
            })?;
        if let Err(e) = routing.add_rule(IpVersion::V6).await {
            warn!(error = %e, "IPv6 policy rule not installed; IPv6 will not be intercepted");
            routing.v6 = false;
        } else if let Err(e) = routing.add_route(v6_route(spec.table, lo_index)).await {
            warn!(error = %e, "IPv6 local route not installed; IPv6 will not be intercepted");
            routing.v6 = false;
        }
        debug!(
            mark = spec.mark,
            table = spec.table,
            "policy routing installed"
        );
        Ok(routing)
    }

    /// Whether IPv6 routing is in place.
    pub fn ipv6(&self) -> bool {
        self.v6
    }

    /// Take down every rule and route of ours. Errors are logged, not returned: on shutdown
    /// there is nothing better to do than try everything.
    pub async fn remove(self) {
        self.remove_all().await;
        debug!("policy routing removed");
    }

    async fn remove_all(&self) {
        for version in [IpVersion::V4, IpVersion::V6] {
            let family = if matches!(version, IpVersion::V4) {
                "ipv4"
            } else {
                "ipv6"
            };
            match self.our_rules(version).await {
                Ok(rules) => {
                    for rule in rules {
                        if let Err(e) = self.handle.rule().del(rule).execute().await {
                            warn!(error = %e, "removing policy rule failed");
                        }
                    }
                }
                Err(e) => debug!(error = %e, family, "listing policy rules failed"),
            }
        }
        for route in [
            v4_route(self.spec.table, self.lo_index),
            v6_route(self.spec.table, self.lo_index),
        ] {
            // ENOENT (nothing to remove) is the normal case on a clean start.
            let _ = self.handle.route().del(route).execute().await;
        }
    }

    async fn our_rules(&self, version: IpVersion) -> Result<Vec<RuleMessage>, rtnetlink::Error> {
        let rules: Vec<RuleMessage> = self
            .handle
            .rule()
            .get(version)
            .execute()
            .try_collect()
            .await?;
        Ok(rules
            .into_iter()
            .filter(|r| {
                let table = r.attributes.iter().find_map(|a| match a {
                    RuleAttribute::Table(t) => Some(*t),
                    _ => None,
                });
                let mark = r.attributes.iter().find_map(|a| match a {
                    RuleAttribute::FwMark(m) => Some(*m),
                    _ => None,
                });
                let prio = r.attributes.iter().find_map(|a| match a {
                    RuleAttribute::Priority(p) => Some(*p),
                    _ => None,
                });
                table == Some(self.spec.table)
                    || (mark == Some(self.spec.mark) && prio == Some(self.spec.priority))
            })
            .collect())
    }

    async fn add_rule(&self, version: IpVersion) -> Result<(), RoutingError> {
        let base = self
            .handle
            .rule()
            .add()
            .fw_mark(self.spec.mark)
            .table_id(self.spec.table)
            .priority(self.spec.priority)
            .action(RuleAction::ToTable);
        let result = match version {
            IpVersion::V4 => {
                let mut req = base.v4();
                req.message_mut()
                    .attributes
                    .push(RuleAttribute::FwMask(u32::MAX));
                req.execute().await
            }
            IpVersion::V6 => {
                let mut req = base.v6();
                req.message_mut()
                    .attributes
                    .push(RuleAttribute::FwMask(u32::MAX));
                req.execute().await
            }
        };
        result.map_err(|source| RoutingError::Netlink {
            op: "adding policy rule",
            source,
        })
    }

    async fn add_route(&self, route: RouteMessage) -> Result<(), rtnetlink::Error> {
        self.handle.route().add(route).replace().execute().await
    }
}

fn v4_route(table: u32, lo: u32) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .table_id(table)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .output_interface(lo)
        .build()
}

fn v6_route(table: u32, lo: u32) -> RouteMessage {
    RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
        .table_id(table)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .output_interface(lo)
        .build()
}

async fn loopback_index(handle: &Handle) -> Result<u32, RoutingError> {
    let mut links = handle.link().get().match_name("lo").execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.header.index),
        Ok(None) => Err(RoutingError::NoLoopback),
        Err(source) => Err(RoutingError::Netlink {
            op: "looking up `lo`",
            source,
        }),
    }
}
