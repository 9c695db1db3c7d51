//! The operator's rules (`rules.toml`) as a phase of the proxy.
//!
//! The request's facts (service, host, path, method) enter in `request_filter`: the first rule
//! that matches decides, and its decision leaves in the [`Ctx`] — the rule's name and action,
//! its `ttl_override`, its cache-key options (which the cache-key step derives the key with) —
//! or, for `deny`, as the 403 answer. When a rule on the response's content type could still
//! match, the decision waits for `response_cache_filter`, where the origin's `Content-Type`
//! enters and a verdict leaves: store, do not store (`passthrough`, `intercept_no_cache`), or
//! answer 403 instead (`deny`). A phase before it may name the rule that decides ([`RulePick`]:
//! a plugin's `rule` edit).
use http::{Response, header, request, response};

use super::{
    Body, ProxyError,
    answer::deny_response,
    ctx::Ctx,
    phase::{Phase, Step, Verdict},
};
use crate::rules::{Action, Facts, Rules};

/// A phase before the rules (a plugin) named the rule that decides this request, by its
/// `name`; an unknown name is logged and the rules decide as usual.
#[derive(Debug, Clone)]
pub struct RulePick(pub String);

/// The rules phase.
pub struct RulesPhase {
    rules: Rules,
}

impl RulesPhase {
    /// A phase deciding by `rules` (reloads take effect on the next request).
    pub fn new(rules: Rules) -> RulesPhase {
        RulesPhase { rules }
    }

    fn on_request(&self, ctx: &mut Ctx) -> Option<Response<Body>> {
        let rules = self.rules.current();
        let facts = Facts {
            service: ctx.conn.scheme.service(),
            host: &ctx.host,
            path: Some(&ctx.path),
            method: Some(ctx.method.as_str()),
            content_type: None,
        };
        let picked = ctx.extensions.get::<RulePick>().and_then(|RulePick(name)| {
            let rule = rules.rules.iter().find(|r| &r.name == name);
            if rule.is_none() {
                tracing::info!(trace_id = %ctx.trace_id, rule = %name, "a plugin named a rule that does not exist: ignored");
            }
            rule.map(|rule| crate::rules::Decision {
                rule,
                action: rule.action,
                ttl_override: rule.ttl_override,
            })
        });
        if let Some(d) = picked.or_else(|| rules.evaluate(&facts)) {
            ctx.rule = Some(d.rule.name.clone());
            ctx.action = Some(d.action);
            ctx.ttl_override = d.ttl_override.map(|t| t.as_secs());
            ctx.key_options = d.rule.cache_key.clone();
            ctx.ghost = d.rule.ghost;
            if d.action == Action::Deny {
                return Some(deny_response(&d.rule.name));
            }
        } else if rules.undecided_until_response(&facts) {
            ctx.content_type_pending = true;
        }
        None
    }

    /// Rules that look at the response's content type, once it is known.
    fn on_response(&self, ctx: &mut Ctx, resp: &http::HeaderMap) -> Verdict {
        if !ctx.content_type_pending {
            return Verdict::Store;
        }
        let ct = resp
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let rules = self.rules.current();
        let facts = Facts {
            service: ctx.conn.scheme.service(),
            host: &ctx.host,
            path: Some(&ctx.path),
            method: Some(ctx.method.as_str()),
            content_type: Some(ct),
        };
        let Some(d) = rules.evaluate(&facts) else {
            return Verdict::Store;
        };
        ctx.rule = Some(d.rule.name.clone());
        ctx.action = Some(d.action);
        ctx.ttl_override = d.ttl_override.map(|t| t.as_secs());
        match d.action {
            Action::Deny => Verdict::Answer(deny_response(&d.rule.name)),
            Action::Cache => Verdict::Store,
            Action::Passthrough | Action::InterceptNoCache => Verdict::DontStore("rule"),
        }
    }
}

impl Phase for RulesPhase {
    fn name(&self) -> &str {
        "rules"
    }

    fn request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        _req: &'a mut request::Parts,
    ) -> Step<'a, Result<Option<Response<Body>>, ProxyError>> {
        Step::Ready(Ok(self.on_request(ctx)))
    }

    fn response_cache_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        resp: &'a mut response::Parts,
    ) -> Step<'a, Result<Verdict, ProxyError>> {
        Step::Ready(Ok(self.on_response(ctx, &resp.headers)))
    }
}
