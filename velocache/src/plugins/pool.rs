//! One loaded plugin: its manifest, its pool of ready instances, its state (live or disabled
//! and why), and the one way a hook is called ([`Plugin::call`]).
//!
//! A call takes an instance from the pool (instantiating one only when every ready instance is
//! busy), arms its deadline, runs the hook synchronously and puts the instance back. A call
//! that fails — a trap, the time budget, the memory cap, a host error — drops its instance,
//! disables the plugin (one `plugin disabled` warning with `plugin`, `hook` and `reason`) and
//! returns [`PluginError::Failed`]; every later call returns [`PluginError::Disabled`] at once,
//! so the caller goes on as if the plugin were absent. A reload loads the plugin afresh.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Instant,
};

use parking_lot::Mutex;

use super::{
    PluginError,
    manifest::{Hook, Manifest},
    metrics::{HookMetrics, PluginMetrics},
    runtime::{Guests, Live, Prepared, failure_reason},
};

/// A loaded plugin.
pub struct Plugin {
    /// What its manifest says.
    pub manifest: Manifest,
    prepared: Prepared,
    idle: Mutex<Vec<Live>>,
    /// Instances in existence (idle, in a call, pinned to a stream).
    instances: AtomicU32,
    max_instances: u32,
    disabled: AtomicBool,
    reason: Mutex<Option<String>>,
    metrics: [Option<HookMetrics>; 4],
}

/// An instance taken from a plugin's pool; it goes back when dropped, unless it failed.
pub struct Lease {
    plugin: Arc<Plugin>,
    live: Option<Live>,
}

impl Lease {
    /// The plugin it belongs to.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            self.plugin.idle.lock().push(live);
        }
    }
}

impl Plugin {
    /// A plugin from its manifest and compiled component, with `ready` instances made now.
    pub fn new(
        manifest: Manifest,
        prepared: Prepared,
        ready: u32,
        max_instances: u32,
        metrics: &PluginMetrics,
    ) -> Result<Plugin, PluginError> {
        let hooks = Hook::ALL.map(|h| manifest.has(h).then(|| metrics.hook(&manifest.name, h)));
        let mut idle = Vec::with_capacity(ready as usize);
        for _ in 0..ready {
            let live = prepared.instantiate().map_err(|e| PluginError::Load {
                plugin: manifest.name.clone(),
                reason: format!("cannot be instantiated: {e:#}"),
            })?;
            idle.push(live);
        }
        Ok(Plugin {
            manifest,
            prepared,
            instances: AtomicU32::new(ready),
            idle: Mutex::new(idle),
            max_instances,
            disabled: AtomicBool::new(false),
            reason: Mutex::new(None),
            metrics: hooks,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Whether it still takes calls.
    pub fn live(&self) -> bool {
        !self.disabled.load(Ordering::Relaxed)
    }

    /// Why it was disabled.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().clone()
    }

    /// Calls and failures of `hook` so far.
    pub fn counts(&self, hook: Hook) -> (u64, u64) {
        self.metrics(hook)
            .map_or((0, 0), |m| (m.calls(), m.errors()))
    }

    /// Instances in existence.
    #[cfg(test)]
    pub fn instances(&self) -> u32 {
        self.instances.load(Ordering::Acquire)
    }

    /// Instances ready in the pool.
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.idle.lock().len()
    }

    fn metrics(&self, hook: Hook) -> Option<&HookMetrics> {
        self.metrics[hook as usize].as_ref()
    }

    /// An instance for a call or a stream: a ready one, else a new one (up to
    /// `max_instances`).
    pub fn lease(self: &Arc<Self>, hook: Hook) -> Result<Lease, PluginError> {
        if !self.live() {
            return Err(self.disabled_error());
        }
        if let Some(live) = self.idle.lock().pop() {
            return Ok(Lease {
                plugin: self.clone(),
                live: Some(live),
            });
        }
        if self.instances.fetch_add(1, Ordering::AcqRel) >= self.max_instances {
            self.instances.fetch_sub(1, Ordering::AcqRel);
            return Err(PluginError::Busy {
                plugin: self.manifest.name.clone(),
            });
        }
        match self.prepared.instantiate() {
            Ok(live) => Ok(Lease {
                plugin: self.clone(),
                live: Some(live),
            }),
            Err(e) => {
                self.instances.fetch_sub(1, Ordering::AcqRel);
                let reason = format!("cannot be instantiated: {e:#}");
                self.disable(hook, "error", reason.clone());
                Err(PluginError::Failed {
                    plugin: self.manifest.name.clone(),
                    hook: hook.name(),
                    reason,
                })
            }
        }
    }

    /// Call `hook` on a pooled instance through `f`.
    pub fn call<R>(
        self: &Arc<Self>,
        hook: Hook,
        f: impl FnOnce(&mut wasmtime::Store<super::runtime::HostState>, &Guests) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let mut lease = self.lease(hook)?;
        self.call_on(&mut lease, hook, f)
    }

    /// Call `hook` on the instance `lease` holds (a stream's pinned instance). On failure the
    /// instance is dropped and the plugin disabled.
    pub fn call_on<R>(
        &self,
        lease: &mut Lease,
        hook: Hook,
        f: impl FnOnce(&mut wasmtime::Store<super::runtime::HostState>, &Guests) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        if !self.live() {
            return Err(self.disabled_error());
        }
        let Some(live) = lease.live.as_mut() else {
            return Err(self.disabled_error());
        };
        let start: Instant = self.prepared.arm(live);
        let result = f(&mut live.store, &live.guests);
        let took = start.elapsed();
        if let Some(m) = self.metrics(hook) {
            m.call(took);
        }
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                let (kind, reason) = failure_reason(&e, live);
                // The instance's state is unknown after a trap: it never serves again.
                lease.live = None;
                self.instances.fetch_sub(1, Ordering::AcqRel);
                if let Some(m) = self.metrics(hook) {
                    m.error(kind);
                }
                self.disable(hook, kind, reason.clone());
                Err(PluginError::Failed {
                    plugin: self.manifest.name.clone(),
                    hook: hook.name(),
                    reason,
                })
            }
        }
    }

    fn disable(&self, hook: Hook, kind: &'static str, reason: String) {
        if self.disabled.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            plugin = %self.manifest.name,
            hook = hook.name(),
            kind,
            reason = %reason,
            "plugin disabled"
        );
        *self.reason.lock() = Some(format!("{}: {reason}", hook.name()));
        // Ready instances are dropped now rather than at the next reload.
        self.idle.lock().clear();
    }

    fn disabled_error(&self) -> PluginError {
        PluginError::Disabled {
            plugin: self.manifest.name.clone(),
        }
    }
}

/// A plugin shared by the set that loaded it and by every call or stream still using it (a
/// reload drops the set, not the plugin under a call in progress).
pub type SharedPlugin = Arc<Plugin>;
