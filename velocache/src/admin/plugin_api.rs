//! The admin API's plugin types (`velocache plugins ls|reload`), re-exported by [`super::api`].
use serde::{Deserialize, Serialize};

/// `plugins ls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginsReport {
    /// `[plugins] dir` (none: plugins are off).
    pub dir: Option<String>,
    /// Every plugin loaded or refused, in order.
    pub plugins: Vec<PluginView>,
}

/// One plugin in `plugins ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginView {
    /// Its name (its manifest file when the manifest could not be read).
    pub name: String,
    /// Its manifest.
    pub file: String,
    /// The hooks it is called for.
    pub hooks: Vec<String>,
    /// The names or hosts it applies to (empty: all).
    pub hosts: Vec<String>,
    /// The TCP ports it claims.
    pub ports: Vec<u16>,
    /// DNS: called for cache hits too.
    pub see_hits: bool,
    /// `live`, `disabled` (a call failed) or `refused` (it did not load).
    pub state: String,
    /// Why it is disabled or refused.
    pub reason: Option<String>,
    /// Hook calls (every hook; counted across reloads).
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
}

/// `plugins reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginsReloadReport {
    /// The plugins in force now, in order.
    pub loaded: Vec<String>,
    /// The plugins that did not load.
    pub refused: Vec<PluginRefusal>,
}

/// A plugin a reload refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRefusal {
    /// Its name (or its manifest file).
    pub plugin: String,
    /// Why.
    pub error: String,
    /// The version loaded before runs on.
    pub kept_previous: bool,
}
