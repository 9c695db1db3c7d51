//! Test plugins without a wasm toolchain: core modules written in WAT, given the WIT's metadata
//! and turned into components by `wit-component` — the path `cargo xtask plugins` takes for
//! the Rust guests — installed into a plugin directory for [`Plugins::reload`].
use std::path::Path;

use prometheus_client::registry::Registry;

use super::{Hook, Plugins};
use crate::config::{Millis, PluginsConfig};

/// The canonical ABI's allocator (a bump allocator, reset at each call) and a zeroed return
/// area at 64: a result read from there is `pass` / `observe([])` / no commands.
const PRELUDE: &str = r#"
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (global.get $bump) (i32.shl (memory.size) (i32.const 16)))
      (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $bump)
                  (i32.shl (memory.size) (i32.const 16))) (i32.const 16)) (i32.const 1)))
                  (i32.const -1))
        (then unreachable))))
    (local.get $p))
  ;; A DNS `deny(refused)` at 128: discriminant 2, the enum's case 1 at offset 4.
  (data (i32.const 128) "\02\00\00\00\01")
  ;; A DNS `rewrite("www.test.lab")` at 160: discriminant 3, the string (ptr 192, len 12).
  (data (i32.const 160) "\03\00\00\00\c0\00\00\00\0c\00\00\00")
  (data (i32.const 192) "www.test.lab")
  ;; A DNS `answer([{rtype 1, ttl 60, data "10.0.0.7"}])` at 224: discriminant 1, the list
  ;; (ptr 256, len 1); the record at 256 (rtype, ttl at 4, data at 8), its text at 288.
  (data (i32.const 224) "\01\00\00\00\00\01\00\00\01\00\00\00")
  (data (i32.const 256) "\01\00\00\00\3c\00\00\00\20\01\00\00\08\00\00\00")
  (data (i32.const 288) "10.0.0.7")
  ;; An HTTP `pass` at 320 with edits: add `x-plg: yes` (list at 400), remove `x-drop` (432),
  ;; cache key `key-1` (448), rule `keep` (456).
  (data (i32.const 320) "\00\00\00\00\90\01\00\00\01\00\00\00\b0\01\00\00\01\00\00\00")
  (data (i32.const 340) "\01\00\00\00\c0\01\00\00\05\00\00\00\01\00\00\00\c8\01\00\00\04\00\00\00")
  (data (i32.const 400) "\d0\01\00\00\05\00\00\00\d8\01\00\00\03\00\00\00")
  (data (i32.const 432) "\e0\01\00\00\06\00\00\00")
  (data (i32.const 448) "key-1")
  (data (i32.const 456) "keep")
  (data (i32.const 464) "x-plg")
  (data (i32.const 472) "yes")
  (data (i32.const 480) "x-drop")
  ;; HTTP response edits at 512: store = some(false), freshness = some(77), add `x-res: 1`
  ;; (560), remove `x-secret` (576).
  (data (i32.const 512) "\01\00\00\00\01\00\00\00\4d\00\00\00\30\02\00\00\01\00\00\00\40\02\00\00\01\00\00\00")
  (data (i32.const 560) "\50\02\00\00\05\00\00\00\58\02\00\00\01\00\00\00")
  (data (i32.const 576) "\60\02\00\00\08\00\00\00")
  (data (i32.const 592) "x-res")
  (data (i32.const 600) "1")
  (data (i32.const 608) "x-secret")
"#;

/// What every hook function of a test plugin does.
#[derive(Clone, Copy)]
pub enum Body {
    /// Answer from the zeroed return area (`pass`).
    Pass,
    /// DNS only: `deny(refused)`.
    DenyRefused,
    /// DNS only: `rewrite("www.test.lab")`.
    RewriteWww,
    /// DNS only: `answer` with one A record, 10.0.0.7, TTL 60.
    AnswerA,
    /// HTTP only: requests pass with edits (add `x-plg: yes`, remove `x-drop`, cache key
    /// `key-1`, rule `keep`); responses: not stored, fresh for 77 s, add `x-res: 1`, remove
    /// `x-secret`.
    HttpEdits,
    /// `unreachable`.
    Trap,
    /// Loop forever.
    Spin,
    /// Grow memory until refused, then trap (as a Rust guest aborts when an allocation fails).
    Hog,
}

impl Body {
    fn wat(self) -> &'static str {
        match self {
            Body::Pass => "(global.set $bump (i32.const 1024)) (i32.const 64)",
            Body::DenyRefused => "(global.set $bump (i32.const 1024)) (i32.const 128)",
            Body::RewriteWww => "(global.set $bump (i32.const 1024)) (i32.const 160)",
            Body::AnswerA => "(global.set $bump (i32.const 1024)) (i32.const 224)",
            Body::HttpEdits => "(global.set $bump (i32.const 1024)) (i32.const 320)",
            Body::Trap => "unreachable",
            Body::Spin => "(loop $l (br $l)) unreachable",
            Body::Hog => {
                "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable"
            }
        }
    }
}

fn exports(hooks: &[Hook], body: Body) -> String {
    let b = body.wat();
    let response = match body {
        Body::HttpEdits => "(global.set $bump (i32.const 1024)) (i32.const 512)",
        other => other.wat(),
    };
    let i32s = |n: usize| vec!["i32"; n].join(" ");
    let mut out = String::new();
    for hook in hooks {
        out.push_str(&match hook {
            Hook::Dns => format!(
                "(func (export \"velocache:plugin/dns@0.1.0#on-query\") (param {}) (result i32) {b})\n",
                i32s(9)
            ),
            Hook::Http => format!(
                "(func (export \"velocache:plugin/http@0.1.0#on-request\") (param {}) (result i32) {b})\n\
                 (func (export \"velocache:plugin/http@0.1.0#on-response\") (param {}) (result i32) {response})\n",
                i32s(12),
                i32s(15)
            ),
            Hook::Sip => format!(
                "(func (export \"velocache:plugin/sip@0.1.0#on-message\") (param i32) (result i32) {b})\n"
            ),
            Hook::Tcp => format!(
                "(func (export \"velocache:plugin/tcp@0.1.0#on-event\") (param i64 {}) (result i32) {b})\n",
                i32s(5)
            ),
        });
    }
    out
}

fn world_of(hooks: &[Hook]) -> &'static str {
    match hooks {
        [Hook::Dns] => "dns-plugin",
        [Hook::Http] => "http-plugin",
        [Hook::Sip] => "sip-plugin",
        [Hook::Tcp] => "tcp-plugin",
        _ => "full-plugin",
    }
}

/// A component exporting `hooks` (all of them for more than one: the `full-plugin` world).
pub fn component(hooks: &[Hook], body: Body) -> Vec<u8> {
    let hooks: Vec<Hook> = if hooks.len() > 1 {
        Hook::ALL.to_vec()
    } else {
        hooks.to_vec()
    };
    let wat = format!("(module {PRELUDE} {})", exports(&hooks, body));
    let mut module = wat::parse_str(&wat).unwrap();
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve
        .push_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit"))
        .unwrap();
    let world = resolve
        .select_world(&[pkg], Some(world_of(&hooks)))
        .unwrap();
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// Write plugin `name` (its manifest `extra` lines after `name` and `hooks`) into `dir`.
pub fn install(dir: &Path, name: &str, hooks: &[Hook], body: Body, extra: &str) {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let names: Vec<String> = hooks.iter().map(|h| format!("\"{}\"", h.name())).collect();
    std::fs::write(
        sub.join("plugin.toml"),
        format!("name = \"{name}\"\nhooks = [{}]\n{extra}", names.join(", ")),
    )
    .unwrap();
    std::fs::write(sub.join(format!("{name}.wasm")), component(hooks, body)).unwrap();
}

pub fn plugins_in(dir: &Path) -> Plugins {
    let config = PluginsConfig {
        dir: Some(dir.to_path_buf()),
        time_budget_ms: Millis(20),
        memory_limit_mb: 2,
        instances: 1,
        max_instances: 4,
        ..PluginsConfig::default()
    };
    Plugins::new(&config, &mut Registry::default())
}
