//! What every service section shares — on/off, intercepted ports, the daemon's listener port —
//! and the macro that gives each service section those three keys.
use serde::{Deserialize, Serialize};

/// Transport of an intercepted port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// The interception part of a service section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intercept {
    /// Service name for logs and the kernel map.
    pub service: velocache_common::Service,
    /// Off: the service's ports are not intercepted at all.
    pub enabled: bool,
    /// Intercepted destination ports.
    pub ports: Vec<u16>,
    /// The daemon's transparent listener port.
    pub listen_port: u16,
    /// Transports this service uses.
    pub transports: &'static [Transport],
}

/// A service section: `enabled`, `ports`, `listen_port` and the service's own keys.
macro_rules! service_section {
    ($(#[$doc:meta])* $name:ident, $svc:ident, [$($tr:ident),+], $port:expr, $listen:expr,
     { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $default:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// Off: this service's ports are not intercepted.
            pub enabled: bool,
            /// Intercepted destination ports.
            pub ports: Vec<u16>,
            /// Port of the daemon's transparent listener (clients never address it).
            pub listen_port: u16,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    enabled: true,
                    ports: vec![$port],
                    listen_port: $listen,
                    $($field: $default,)*
                }
            }
        }

        impl $name {
            /// The interception part of this section.
            pub fn intercept(&self) -> $crate::config::Intercept {
                $crate::config::Intercept {
                    service: velocache_common::Service::$svc,
                    enabled: self.enabled,
                    ports: self.ports.clone(),
                    listen_port: self.listen_port,
                    transports: &[$($crate::config::Transport::$tr),+],
                }
            }
        }
    };
}
pub(super) use service_section;
