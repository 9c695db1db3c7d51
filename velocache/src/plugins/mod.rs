//! WebAssembly plugins (issue 15): sandboxed hooks on DNS queries, HTTP requests and responses,
//! SIP messages and TCP streams on ports a plugin claims, against the WIT interface in
//! `wit/plugin.wit` (`velocache:plugin@0.1.0`).
//!
//! Plugins enter from `[plugins] dir` ([`Plugins::reload`]: one manifest per plugin, compiled
//! and instantiated up front) and live in a [`PluginSet`] that a reload swaps whole — calls and
//! streams in progress finish on the instances they hold. Services ask [`Plugins`] — facts in,
//! decision out, like the rules: `dns_query` (the DNS forwarder, before its cache), `http_request`
//! / `http_response` (the HTTP proxy's plugin phase), `sip_message` (the SIP observer),
//! `tcp_session` (streams on claimed ports). A hook's answer leaves as the WIT's own types. A
//! plugin that traps, overruns its time budget or its memory cap is disabled (logged with its
//! name and reason) and every caller goes on as if it were absent: a plugin never fails a flow.
//!
//! Like `rules`, this module depends on no service: services depend on it.
//!
//! # Layout
//! - `manifest`: `plugin.toml` and the directory's layout.
//! - `runtime`: the wasmtime engine, the epoch ticker, the host functions, compiling a plugin.
//! - `pool`: one loaded plugin — its ready instances, its calls, disabling it.
//! - `dns`, `http`, `sip`, `tcp`: each hook's call, and how several plugins' answers combine.
//! - `metrics`: calls, errors and time per plugin and hook; `admin`: `plugins ls` / `reload`.

mod admin;
mod dns;
mod http;
mod manifest;
mod metrics;
mod pool;
pub mod runtime;
mod sip;
mod tcp;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::{path::PathBuf, sync::Arc};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use thiserror::Error;

pub use dns::{DnsAction, DnsDecision, DnsDenyCode, DnsQuery, DnsRecord};
pub use http::{
    HttpDenyResponse, HttpHeader, HttpRequest, HttpRequestAction, HttpRequestEdits,
    HttpRequestOutcome, HttpResponse, HttpResponseEdits,
};
pub use manifest::{Hook, Manifest};
pub use sip::{SipAction, SipMessage, SipOutcome, SipRejection};
pub use tcp::{TcpCommand, TcpEvent, TcpSession, TcpTarget};

use crate::config::PluginsConfig;
use metrics::PluginMetrics;
use pool::{Plugin, SharedPlugin};
use runtime::{Backend, Limits, Runtime, executable_memory_denied};

/// Why a plugin could not be loaded or called.
#[derive(Debug, Clone, Error)]
pub enum PluginError {
    /// The WebAssembly engine could not start.
    #[error("the plugin engine cannot start: {0}")]
    Engine(String),
    /// `[plugins] dir` cannot be read.
    #[error("plugin directory {}: {reason}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A manifest is missing, unreadable or wrong.
    #[error("plugin manifest {}: {reason}", file.display())]
    Manifest {
        /// The manifest file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A plugin's component cannot be read, compiled, linked or instantiated.
    #[error("plugin `{plugin}`: {reason}")]
    Load {
        /// The plugin.
        plugin: String,
        /// What went wrong.
        reason: String,
    },
    /// A call failed (trap, time budget, memory cap); the plugin is now disabled.
    #[error("plugin `{plugin}` failed in its {hook} hook: {reason}")]
    Failed {
        /// The plugin.
        plugin: String,
        /// The hook.
        hook: &'static str,
        /// What happened.
        reason: String,
    },
    /// The plugin was disabled by an earlier failure.
    #[error("plugin `{plugin}` is disabled")]
    Disabled {
        /// The plugin.
        plugin: String,
    },
    /// The plugin has `[plugins] max_instances` instances in use.
    #[error("plugin `{plugin}` has every instance in use")]
    Busy {
        /// The plugin.
        plugin: String,
    },
    /// `plugins reload` with no `[plugins] dir`.
    #[error("no plugin directory is configured ([plugins] dir)")]
    NotConfigured,
}

/// A plugin that a load or reload refused.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Its name, when its manifest could be read; else its manifest file.
    pub plugin: String,
    /// Why.
    pub error: PluginError,
    /// Whether the version that ran before the reload runs on.
    pub kept_previous: bool,
}

/// The plugins in force: in the order of their names, and per hook.
#[derive(Default)]
pub struct PluginSet {
    all: Vec<SharedPlugin>,
    by_hook: [Vec<SharedPlugin>; 4],
    /// Some DNS plugin sees cache hits.
    see_hits: bool,
    refused: Vec<Refused>,
}

impl PluginSet {
    fn new(all: Vec<SharedPlugin>, refused: Vec<Refused>) -> PluginSet {
        let by_hook = Hook::ALL.map(|h| {
            all.iter()
                .filter(|p| p.manifest.has(h))
                .cloned()
                .collect::<Vec<_>>()
        });
        let see_hits = all.iter().any(|p| p.manifest.see_hits);
        PluginSet {
            all,
            by_hook,
            see_hits,
            refused,
        }
    }

    /// The plugins implementing `hook`, in order (disabled ones included).
    fn hooked(&self, hook: Hook) -> &[SharedPlugin] {
        &self.by_hook[hook as usize]
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    /// The plugins now loaded, in order.
    pub loaded: Vec<String>,
    /// The plugins refused, with why.
    pub refused: Vec<Refused>,
}

/// The live plugin set; cheap to clone; reload swaps what it holds.
#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Inner>,
}

struct Inner {
    config: PluginsConfig,
    runtime: Mutex<Option<Arc<Runtime>>>,
    set: ArcSwap<PluginSet>,
    metrics: PluginMetrics,
    /// Counts the swaps, for those who keep derived state (DNS answers, the kernel's copies).
    generation: tokio::sync::watch::Sender<u64>,
    /// One reload at a time.
    reloading: Mutex<()>,
}

impl Plugins {
    /// No plugins, and none to load (tests; services built without a plugin set).
    pub fn none() -> Plugins {
        Plugins::new(&PluginsConfig::default(), &mut Registry::default())
    }

    /// An empty set under `config`, with its metrics in `registry` (the `plugin` sub-registry);
    /// [`Plugins::reload`] loads the directory.
    pub fn new(config: &PluginsConfig, registry: &mut Registry) -> Plugins {
        Plugins {
            inner: Arc::new(Inner {
                config: config.clone(),
                runtime: Mutex::new(None),
                set: ArcSwap::from_pointee(PluginSet::default()),
                metrics: PluginMetrics::register(registry),
                generation: tokio::sync::watch::Sender::new(0),
                reloading: Mutex::new(()),
            }),
        }
    }

    /// The directory plugins are read from.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.inner.config.dir.as_deref()
    }

    /// Told of every swap of the set.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<PluginSet>> {
        self.inner.set.load()
    }

    /// Whether any plugin implements `hook` (one atomic load: what hot paths ask first).
    pub fn has(&self, hook: Hook) -> bool {
        !self.current().hooked(hook).is_empty()
    }

    /// (Re)load every plugin in `[plugins] dir` and swap the set in. Blocks while components
    /// compile: call it from a blocking thread. A plugin that fails to load is refused with its
    /// error while the others load; if a plugin of that name ran before, that version runs on.
    pub fn reload(&self) -> Result<ReloadReport, PluginError> {
        let _one = self.inner.reloading.lock();
        let Some(dir) = self.inner.config.dir.clone() else {
            return Err(PluginError::NotConfigured);
        };
        let found = manifest::discover(&dir)?;
        let old = self.inner.set.load_full();
        let mut all: Vec<SharedPlugin> = Vec::new();
        let mut refused = Vec::new();
        for f in found {
            let (name, result) = match f.manifest {
                Ok(m) => (m.name.clone(), self.load_one(m, &all)),
                Err(e) => (f.file.display().to_string(), Err(e)),
            };
            match result {
                Ok(p) => all.push(p),
                Err(error) => {
                    let previous = old
                        .all
                        .iter()
                        .find(|p| p.name() == name && !all.iter().any(|q| q.name() == name));
                    tracing::warn!(plugin = %name, error = %error, kept_previous = previous.is_some(), "plugin refused");
                    if let Some(p) = previous {
                        all.push(p.clone());
                    }
                    refused.push(Refused {
                        plugin: name,
                        error,
                        kept_previous: previous.is_some(),
                    });
                }
            }
        }
        let report = ReloadReport {
            loaded: all.iter().map(|p| p.name().to_string()).collect(),
            refused: refused.clone(),
        };
        for p in &all {
            tracing::info!(
                plugin = %p.name(),
                hooks = ?p.manifest.hooks.iter().map(|h| h.name()).collect::<Vec<_>>(),
                file = %p.manifest.file.display(),
                "plugin loaded"
            );
        }
        self.inner.set.store(Arc::new(PluginSet::new(all, refused)));
        self.inner.generation.send_modify(|g| *g += 1);
        Ok(report)
    }

    fn runtime(&self) -> Result<Arc<Runtime>, PluginError> {
        let mut slot = self.inner.runtime.lock();
        if let Some(rt) = slot.as_ref() {
            return Ok(rt.clone());
        }
        let rt = Runtime::new(self.limits(), Backend::Native)?;
        *slot = Some(rt.clone());
        Ok(rt)
    }

    /// Run plugins in the interpreter from now on (tests: the fallback's backend, without a
    /// process that forbids executable memory).
    #[cfg(test)]
    pub(crate) fn use_interpreter(&self) -> Result<(), PluginError> {
        *self.inner.runtime.lock() = Some(Runtime::new(self.limits(), Backend::Interpreter)?);
        Ok(())
    }

    fn limits(&self) -> Limits {
        Limits {
            time_budget: self.inner.config.time_budget_ms.get(),
            memory_bytes: self.inner.config.memory_limit_mb as usize * 1024 * 1024,
        }
    }

    /// Native code cannot be made executable here: from now on plugins are compiled for
    /// wasmtime's interpreter (Pulley). Slower per call, the same limits and containment.
    fn fall_back_to_the_interpreter(
        &self,
        native: &Arc<Runtime>,
    ) -> Result<Arc<Runtime>, PluginError> {
        let mut slot = self.inner.runtime.lock();
        if let Some(rt) = slot.as_ref()
            && !Arc::ptr_eq(rt, native)
        {
            return Ok(rt.clone());
        }
        tracing::warn!(
            backend = Backend::Interpreter.name(),
            "native code cannot be made executable in this process (MemoryDenyWriteExecute?): \
             plugins run in wasmtime's interpreter"
        );
        let rt = Runtime::new(self.limits(), Backend::Interpreter)?;
        *slot = Some(rt.clone());
        Ok(rt)
    }

    /// Compile `wasm` for `m`, on the interpreter if native code is denied.
    fn prepare(&self, m: &Manifest, wasm: &[u8]) -> Result<runtime::Prepared, PluginError> {
        let config: Arc<[(String, String)]> = m.config.clone().into();
        let runtime = self.runtime()?;
        match runtime.prepare(&m.name, wasm, &m.hooks, config.clone()) {
            Err(e) if runtime.backend() == Backend::Native && executable_memory_denied(&e) => self
                .fall_back_to_the_interpreter(&runtime)?
                .prepare(&m.name, wasm, &m.hooks, config),
            other => other,
        }
    }

    fn load_one(&self, m: Manifest, loaded: &[SharedPlugin]) -> Result<SharedPlugin, PluginError> {
        if let Some(other) = loaded.iter().find(|p| p.name() == m.name) {
            return Err(PluginError::Manifest {
                file: m.file.clone(),
                reason: format!(
                    "name `{}` is already taken by {}",
                    m.name,
                    other.manifest.file.display()
                ),
            });
        }
        for port in &m.ports {
            if let Some(other) = loaded.iter().find(|p| p.manifest.ports.contains(port)) {
                return Err(PluginError::Manifest {
                    file: m.file.clone(),
                    reason: format!("port {port} is already claimed by `{}`", other.name()),
                });
            }
        }
        let wasm = std::fs::read(&m.wasm).map_err(|e| PluginError::Load {
            plugin: m.name.clone(),
            reason: format!("reading {}: {e}", m.wasm.display()),
        })?;
        let prepared = self.prepare(&m, &wasm).map_err(|e| match e {
            // Say which file: the manifest may name any `.wasm`.
            PluginError::Load { plugin, reason } => PluginError::Load {
                plugin,
                reason: format!("{}: {reason}", m.wasm.display()),
            },
            e => e,
        })?;
        let plugin = Plugin::new(
            m,
            prepared,
            self.inner.config.instances,
            self.inner.config.max_instances,
            &self.inner.metrics,
        )?;
        Ok(Arc::new(plugin))
    }
}
