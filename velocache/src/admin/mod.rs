//! What services offer the admin API, and the API's wire types — the contract between the
//! services (below) and the control plane and CLI (above).
//!
//! A service that owns an admin capability (the HTTP cache's objects, SIP calls, the local CA)
//! implements its trait from [`seams`] and registers it in the [`AdminHub`] it finds in its
//! `ServiceContext`; the control plane (`crate::control`) answers API requests through the hub,
//! and both it and the CLI (`crate::cli`) speak the request and response types of [`api`].
//! Nothing here depends on a concrete service, so services never import the control plane.

pub mod api;
pub mod calls_api;
mod dns_api;
mod plugin_api;
pub mod rules_api;
pub mod seams;

pub use seams::{
    AdminError, AdminHub, CaAdmin, CacheAdmin, CallsAdmin, DnsAdmin, OriginsAdmin, PluginsAdmin,
    RecordAdmin, UrlPattern,
};
