//! The WebAssembly engine every plugin runs in, the host side of the WIT interface
//! (`wit/plugin.wit`), and how one plugin's component becomes something calls can be made on.
//!
//! A plugin's `.wasm` enters [`Runtime::prepare`] as bytes: it is compiled once (Cranelift),
//! linked against the only imports a plugin gets — `host.log` and `host.config` — into an
//! `InstancePre`, and the exports its manifest's hooks need are looked up once ([`Prepared`]).
//! Instances leave [`Prepared::instantiate`] as a [`Live`]: a store of its own (the plugin's
//! name and configuration, the memory limiter) with the instance and its hook functions loaded.
//!
//! Why wasmtime: the component model and WIT are the Bytecode Alliance's, and wasmtime is their
//! reference implementation — `bindgen!` turns `plugin.wit` into typed Rust at compile time, so
//! a plugin built against another shape fails to load instead of misbehaving. It gives the three
//! limits the issue asks for without a sandbox of our own: epoch interruption (a ticker thread
//! advances the engine's epoch; once a call has run its budget on the clock it is stopped at
//! the next tick in which its thread was busy — a thread preempted on a busy machine does not
//! count against the plugin — with a hard limit of 20 budgets on the clock),
//! a `ResourceLimiter` on
//! linear memory, and nothing ambient — a component can only import what the linker defines,
//! and ours defines `host` alone (no WASI: no files, sockets or clocks). Wasmer's component
//! model support is younger and not the reference one; wasm3-style interpreters are too slow
//! for a per-query hook.
use std::{
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use wasmtime::{
    Config as EngineConfig, Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder,
    component::{Component, HasSelf, InstancePre, Linker},
};

use super::{PluginError, manifest::Hook};

/// The code `bindgen!` generates from `wit/plugin.wit` (world `full-plugin`: every hook's
/// export, the `host` import). Plugins may target a smaller world; only the exports their
/// manifest names are looked up.
#[expect(
    missing_docs,
    reason = "generated from the WIT, whose comments are the docs"
)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "full-plugin",
    });
}

use bindings::{
    exports::velocache::plugin::{dns, http, sip, tcp},
    velocache::plugin::host,
};

/// Log lines one call may write; the rest are dropped (a plugin must not flood the log).
const LOG_LINES_PER_CALL: u32 = 16;
/// Longest log message kept, bytes.
const LOG_MESSAGE_MAX: usize = 1024;

/// The limits every plugin instance runs under (`[plugins]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest one call may run.
    pub time_budget: Duration,
    /// The most linear memory one instance may have, bytes.
    pub memory_bytes: usize,
}

/// What a store holds for the host functions and the limiter.
pub struct HostState {
    plugin: Arc<str>,
    config: Arc<[(String, String)]>,
    limits: StoreLimits,
    memory_bytes: usize,
    /// Set when the instance asked for more memory than its cap allows.
    pub(super) memory_refused: bool,
    logs_left: u32,
    /// The longest a call may take on the clock however busy the machine is (its budget is
    /// the epoch deadline).
    wall_limit: Duration,
    /// When the call began.
    started: Instant,
    /// Past the budget on the clock: the thread's CPU time and the instant at the last check.
    cpu_mark: Option<(Duration, Instant)>,
}

impl HostState {
    /// Reset what is counted per call.
    pub(super) fn begin_call(&mut self) {
        self.logs_left = LOG_LINES_PER_CALL;
        self.started = Instant::now();
        self.cpu_mark = None;
    }

    /// The epoch deadline passed: the call has run its budget on the clock. Rather than read
    /// the thread's CPU clock on every call (a system call), look at it from here on: one more
    /// tick, and if the thread ran at least half of it the plugin is busy, not preempted — stop
    /// it. A call on a thread the machine keeps waiting goes on, up to the hard limit on the
    /// clock.
    fn deadline(&mut self) -> wasmtime::UpdateDeadline {
        if self.started.elapsed() >= self.wall_limit {
            return wasmtime::UpdateDeadline::Interrupt;
        }
        let Some(cpu) = thread_cpu_time() else {
            return wasmtime::UpdateDeadline::Interrupt;
        };
        let now = Instant::now();
        match self.cpu_mark.replace((cpu, now)) {
            Some((cpu_then, then)) if cpu.saturating_sub(cpu_then) * 2 >= now - then => {
                wasmtime::UpdateDeadline::Interrupt
            }
            _ => wasmtime::UpdateDeadline::Continue(1),
        }
    }
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::new(
        u64::try_from(t.tv_sec()).ok()?,
        u32::try_from(t.tv_nsec()).ok()?,
    ))
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_refused = true;
            return Ok(false);
        }
        self.limits.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        if self.logs_left == 0 {
            return;
        }
        self.logs_left -= 1;
        let mut message = message;
        if message.len() > LOG_MESSAGE_MAX {
            let mut cut = LOG_MESSAGE_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = &*self.plugin;
        match level {
            host::Level::Debug => tracing::debug!(plugin, "{message}"),
            host::Level::Info => tracing::info!(plugin, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, "{message}"),
            host::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn config(&mut self) -> Vec<(String, String)> {
        self.config.to_vec()
    }
}

impl bindings::velocache::plugin::types::Host for HostState {}

/// How plugin code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Compiled to native code (Cranelift): the fast way, but it needs pages made executable
    /// after they are written, which `MemoryDenyWriteExecute=yes` (the shipped systemd unit)
    /// forbids.
    Native,
    /// Compiled to Pulley bytecode and run by wasmtime's interpreter: no executable memory.
    Interpreter,
}

impl Backend {
    /// Its name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Interpreter => "interpreter",
        }
    }
}

/// Whether `e` says native code could not be made executable (W^X enforced on the process:
/// systemd's `MemoryDenyWriteExecute`, `PR_SET_MDWE`): the interpreter can run the plugin.
pub fn executable_memory_denied(e: &PluginError) -> bool {
    matches!(e, PluginError::Load { reason, .. } if reason.contains("make memory executable"))
}

/// The engine, its linker and the epoch ticker; one per daemon, shared by every plugin set.
pub struct Runtime {
    engine: Engine,
    backend: Backend,
    linker: Linker<HostState>,
    limits: Limits,
    /// Epoch ticks a call may run for.
    budget_ticks: u64,
}

impl Runtime {
    /// Start the engine and its epoch ticker under `limits`, running code with `backend`.
    pub fn new(limits: Limits, backend: Backend) -> Result<Arc<Runtime>, PluginError> {
        let mut config = EngineConfig::new();
        if backend == Backend::Interpreter {
            config
                .target("pulley64")
                .map_err(|e| PluginError::Engine(format!("the interpreter: {e:#}")))?;
        }
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // Deep recursion traps rather than taking the daemon's thread stack with it.
        config.max_wasm_stack(512 * 1024);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        bindings::FullPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        // A tick of a fifth of the budget (at least 1 ms), and one tick more than the budget: a
        // call runs at least its budget and is stopped within a tick after it; the ticker wakes
        // at most 1000 times a second.
        let tick = (limits.time_budget / 5).max(Duration::from_millis(1));
        let budget_ticks = (limits.time_budget.as_nanos() / tick.as_nanos()).max(1) as u64 + 1;
        let weak = engine.weak();
        thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || ticker(weak, tick))
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Arc::new(Runtime {
            engine,
            backend,
            linker,
            limits,
            budget_ticks,
        }))
    }

    /// The limits calls run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How its code runs.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Compile `wasm` for plugin `name`, link it, and look up the exports of `hooks`.
    pub fn prepare(
        self: &Arc<Self>,
        name: &str,
        wasm: &[u8],
        hooks: &[Hook],
        config: Arc<[(String, String)]>,
    ) -> Result<Prepared, PluginError> {
        let bad = |what: &str, e: wasmtime::Error| PluginError::Load {
            plugin: name.to_string(),
            reason: format!("{what}: {e:#}"),
        };
        let component =
            Component::new(&self.engine, wasm).map_err(|e| bad("not a valid component", e))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| bad("cannot be linked (it may import more than `host`)", e))?;
        let mut indices = Indices::default();
        for hook in hooks {
            let missing = |e| bad(&format!("does not export the {} hook", hook.name()), e);
            match hook {
                Hook::Dns => indices.dns = Some(dns::GuestIndices::new(&pre).map_err(missing)?),
                Hook::Http => indices.http = Some(http::GuestIndices::new(&pre).map_err(missing)?),
                Hook::Sip => indices.sip = Some(sip::GuestIndices::new(&pre).map_err(missing)?),
                Hook::Tcp => indices.tcp = Some(tcp::GuestIndices::new(&pre).map_err(missing)?),
            }
        }
        Ok(Prepared {
            runtime: self.clone(),
            name: name.into(),
            config,
            pre,
            indices,
        })
    }
}

/// Advance the engine's epoch every `tick`, until the engine is gone (the daemon dropped every
/// plugin set).
#[expect(
    clippy::disallowed_methods,
    reason = "the ticker is a thread of its own, never a runtime worker: sleeping is its job"
)]
fn ticker(engine: wasmtime::EngineWeak, tick: Duration) {
    loop {
        thread::sleep(tick);
        match engine.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
    }
}

/// Where each hook's functions are in a component.
#[derive(Default)]
struct Indices {
    dns: Option<dns::GuestIndices>,
    http: Option<http::GuestIndices>,
    sip: Option<sip::GuestIndices>,
    tcp: Option<tcp::GuestIndices>,
}

/// A compiled, linked plugin: instances are made from it without compiling or linking again.
pub struct Prepared {
    runtime: Arc<Runtime>,
    name: Arc<str>,
    config: Arc<[(String, String)]>,
    pre: InstancePre<HostState>,
    indices: Indices,
}

/// The hook functions of one instance.
pub struct Guests {
    /// `dns.on-query`.
    pub dns: Option<dns::Guest>,
    /// `http.on-request`, `http.on-response`.
    pub http: Option<http::Guest>,
    /// `sip.on-message`.
    pub sip: Option<sip::Guest>,
    /// `tcp.on-event`.
    pub tcp: Option<tcp::Guest>,
}

/// One instance of a plugin, with a store of its own.
pub struct Live {
    /// Its store (host state, limiter, epoch deadline).
    pub store: Store<HostState>,
    /// Its hook functions.
    pub guests: Guests,
}

impl Prepared {
    /// A new instance (instantiation runs the component's start code, under the time budget).
    pub fn instantiate(&self) -> Result<Live, wasmtime::Error> {
        let limits = self.runtime.limits;
        let state = HostState {
            plugin: self.name.clone(),
            config: self.config.clone(),
            limits: StoreLimitsBuilder::new()
                .instances(64)
                .tables(64)
                .memories(16)
                .table_elements(1 << 20)
                .build(),
            memory_bytes: limits.memory_bytes,
            memory_refused: false,
            logs_left: LOG_LINES_PER_CALL,
            wall_limit: (limits.time_budget * 20).max(Duration::from_millis(200)),
            started: Instant::now(),
            cpu_mark: None,
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_callback(|mut ctx| Ok(ctx.data_mut().deadline()));
        store.set_epoch_deadline(self.runtime.budget_ticks);
        let instance = self.pre.instantiate(&mut store)?;
        let load = |store: &mut Store<HostState>| -> wasmtime::Result<Guests> {
            Ok(Guests {
                dns: match &self.indices.dns {
                    Some(i) => Some(i.load(&mut *store, &instance)?),
                    None => None,
                },
                http: match &self.indices.http {
                    Some(i) => Some(i.load(&mut *store, &instance)?),
                    None => None,
                },
                sip: match &self.indices.sip {
                    Some(i) => Some(i.load(&mut *store, &instance)?),
                    None => None,
                },
                tcp: match &self.indices.tcp {
                    Some(i) => Some(i.load(&mut *store, &instance)?),
                    None => None,
                },
            })
        };
        let guests = load(&mut store)?;
        Ok(Live { store, guests })
    }

    /// Arm `live` for one call: a fresh deadline, fresh per-call counters; returns when the
    /// call began.
    pub fn arm(&self, live: &mut Live) -> Instant {
        live.store.set_epoch_deadline(self.runtime.budget_ticks);
        live.store.data_mut().begin_call();
        live.store.data().started
    }
}

/// Why a call failed, in the words of the `plugin disabled` line and the errors metric.
pub fn failure_reason(e: &wasmtime::Error, live: &Live) -> (&'static str, String) {
    if live.store.data().memory_refused {
        return ("memory", format!("grew past its memory limit: {e}"));
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => ("time", "ran past its time budget".to_string()),
        Some(wasmtime::Trap::StackOverflow) => ("trap", "stack overflow".to_string()),
        Some(t) => ("trap", format!("trapped: {t}")),
        None => ("error", format!("{e:#}")),
    }
}
