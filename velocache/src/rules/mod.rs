//! The operator's rules (`rules.toml`, spec B-1): pure and synchronous — request facts in,
//! decision out.
//!
//! A rules file is a list of `[[rule]]` tables evaluated first-match, plus `warmup_urls`.
//! It is parsed and validated as a whole ([`RuleSet::parse`]); any problem is reported with the
//! file, line and reason, and a running daemon keeps its previous rules ([`Rules::reload`]).
//! Services ask [`RuleSet::evaluate`] with what they know ([`Facts`]); `None` from it means "no
//! rule matched: do the service's default".
//!
//! ```toml
//! warmup_urls = ["http://deb.example.org/dists/stable/Release"]
//!
//! [[rule]]
//! name = "docker-layers"
//! match_host = ["registry-1.docker.io", "*.cloudfront.net"]
//! match_path = "/v2/*/blobs/sha256:*"
//! action = "cache"
//! ttl_override = "30d"
//!
//! [[rule]]
//! name = "ads"
//! match_host = "*.ads.example"
//! action = "deny"
//! ```
//!
//! # Layout
//! - `model`: the rule types and their matching.
//! - `parse`: TOML → [`RuleSet`], or every [`Problem`] with its line and key
//!   ([`RuleSet::check`]); `check_rule`: one `[[rule]]` table's keys.
//! - `fault`: a rule's `fault = { … }` (chaos testing) and its checks.

mod check_rule;
mod fault;
mod model;
mod parse;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::{ArcSwap, ArcSwapOption};

pub use fault::{Abort, Fault};
pub use model::{
    Action, CacheKeyOptions, Decision, Digest, Facts, HealthCheck, HostPattern, Rule, RuleSet,
    TlsDecision,
};
pub use parse::{Problem, RulesError};

/// The live rule set, shared by every service; reads are lock-free, a reload swaps it whole.
/// The file it comes from can change too (a configuration reload that names another file).
#[derive(Clone)]
pub struct Rules {
    current: Arc<ArcSwap<RuleSet>>,
    file: Arc<ArcSwapOption<PathBuf>>,
    /// Counts the swaps, for those who keep derived state (the kernel's DNS answers).
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Rules {
    /// No rules at all (every service does its default).
    pub fn empty() -> Self {
        Self::from_set(RuleSet::default())
    }

    /// Load `file`; an error here stops start-up.
    pub fn load(file: &Path) -> Result<Self, RulesError> {
        let set = RuleSet::load(file)?;
        Ok(Rules {
            current: Arc::new(ArcSwap::from_pointee(set)),
            file: Arc::new(ArcSwapOption::from_pointee(file.to_path_buf())),
            generation: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// From an already-parsed set (tests).
    pub fn from_set(set: RuleSet) -> Self {
        Rules {
            current: Arc::new(ArcSwap::from_pointee(set)),
            file: Arc::new(ArcSwapOption::empty()),
            generation: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// Told of every swap (a reload, another file): for state derived from the rules in force.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The file the rules come from, if any.
    pub fn file(&self) -> Option<PathBuf> {
        self.file.load_full().map(|f| f.as_ref().clone())
    }

    /// Re-read the file. On error the rules in force stay as they are and the error is
    /// returned for the caller to log; on success the new set replaces the old one atomically.
    pub fn reload(&self) -> Result<Arc<RuleSet>, RulesError> {
        let Some(file) = self.file.load_full() else {
            return Ok(self.current());
        };
        let set = Arc::new(RuleSet::load(&file)?);
        self.current.store(set.clone());
        self.generation.send_modify(|g| *g += 1);
        Ok(set)
    }

    /// Take the rules from another file (or none). Like [`Rules::reload`], a file that does not
    /// load changes nothing: neither the rules in force nor the file they come from.
    pub fn switch_file(&self, file: Option<&Path>) -> Result<Arc<RuleSet>, RulesError> {
        let set = Arc::new(match file {
            Some(f) => RuleSet::load(f)?,
            None => RuleSet::default(),
        });
        self.file.store(file.map(|f| Arc::new(f.to_path_buf())));
        self.current.store(set.clone());
        self.generation.send_modify(|g| *g += 1);
        Ok(set)
    }
}

#[cfg(test)]
mod check_tests;
#[cfg(test)]
mod tests;
