//! Dashboard logins: tokens in, session cookies and CSRF tokens out.
//!
//! A person logs in with the admin token (`[admin] token_file`) or the read-only token
//! (`[admin] readonly_token_file`); the token is compared in constant time and never stored in
//! the browser. A login creates a [`Session`]: a random id sent as the `vc_session` cookie
//! (`HttpOnly`, so page scripts cannot read it; `SameSite=Strict`, so no other site's page can
//! make the browser send it) and a random CSRF token the page keeps in memory and sends as
//! `X-CSRF-Token` on every change. Sessions end after [`IDLE`] without a request, at logout, or
//! when [`MAX_SESSIONS`] newer ones pushed them out. Failed logins are slowed and, past
//! [`MAX_FAILURES`] a minute, refused outright, so the token cannot be guessed at line speed.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::control::{Role, token_matches};

/// Name of the session cookie.
pub const COOKIE: &str = "vc_session";
/// A session unused this long is over.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once (the least recently used goes first).
pub const MAX_SESSIONS: usize = 256;
/// Failed logins accepted per minute before every login is refused for the rest of it.
pub const MAX_FAILURES: u32 = 20;

/// One login.
#[derive(Debug, Clone)]
pub struct Session {
    /// What it may do.
    pub role: Role,
    /// The token every change must carry (`X-CSRF-Token`).
    pub csrf: String,
    last_seen: Instant,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Neither token.
    BadToken,
    /// Too many failures this minute.
    TooMany,
}

/// The tokens and the sessions.
pub struct Sessions {
    admin: Arc<str>,
    readonly: Option<Arc<str>>,
    map: Mutex<HashMap<String, Session>>,
    failures: Mutex<(Instant, u32)>,
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    /// Sessions for these tokens.
    pub fn new(admin: Arc<str>, readonly: Option<Arc<str>>) -> Self {
        Sessions {
            admin,
            readonly,
            map: Mutex::new(HashMap::new()),
            failures: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Log in with `token`: the new session's id and the session.
    pub fn login(&self, token: &str) -> Result<(String, Session), LoginError> {
        {
            let mut f = self.failures.lock();
            if f.0.elapsed() > Duration::from_secs(60) {
                *f = (Instant::now(), 0);
            }
            if f.1 >= MAX_FAILURES {
                return Err(LoginError::TooMany);
            }
        }
        let token = token.trim().as_bytes();
        // Both comparisons always run, so the time taken says nothing about which matched.
        let admin = token_matches(token, self.admin.as_bytes());
        let readonly = self
            .readonly
            .as_ref()
            .is_some_and(|t| token_matches(token, t.as_bytes()));
        let role = match (admin, readonly) {
            (true, _) => Role::Admin,
            (false, true) => Role::ReadOnly,
            (false, false) => {
                self.failures.lock().1 += 1;
                return Err(LoginError::BadToken);
            }
        };
        let session = Session {
            role,
            csrf: random_hex(),
            last_seen: Instant::now(),
        };
        let id = random_hex();
        let mut map = self.map.lock();
        map.retain(|_, s| s.last_seen.elapsed() < IDLE);
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The session a request's cookie names, if it is current (and mark it used).
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock();
        let s = map.get_mut(id)?;
        if s.last_seen.elapsed() >= IDLE {
            map.remove(id);
            return None;
        }
        s.last_seen = Instant::now();
        Some(s.clone())
    }

    /// End a session.
    pub fn logout(&self, id: &str) {
        self.map.lock().remove(id);
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v.trim())
    })
}

/// The `Set-Cookie` value for a new session.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        IDLE.as_secs()
    )
}

/// The `Set-Cookie` value that ends it in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(
            Arc::from("admin-token-0123456789"),
            Some(Arc::from("readonly-token-0123456789")),
        )
    }

    #[test]
    fn each_token_logs_in_with_its_role() {
        let s = sessions();
        let (id, a) = s
            .login("admin-token-0123456789")
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        assert_eq!(a.role, Role::Admin);
        assert_eq!(s.get(&id).map(|x| x.role), Some(Role::Admin));
        let (_, r) = s
            .login(" readonly-token-0123456789\n")
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        assert_eq!(r.role, Role::ReadOnly);
        assert_ne!(a.csrf, r.csrf);
        assert_eq!(
            s.login("admin-token-012345678").err(),
            Some(LoginError::BadToken)
        );
        assert!(s.get("nope").is_none());
        s.logout(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn guessing_is_cut_off_after_the_failure_budget() {
        let s = sessions();
        for _ in 0..MAX_FAILURES {
            assert_eq!(s.login("guess").err(), Some(LoginError::BadToken));
        }
        assert_eq!(
            s.login("admin-token-0123456789").err(),
            Some(LoginError::TooMany)
        );
    }

    #[test]
    fn the_oldest_session_makes_room() {
        let s = sessions();
        let first = s
            .login("admin-token-0123456789")
            .map(|x| x.0)
            .unwrap_or_default();
        for _ in 0..MAX_SESSIONS {
            let _ = s.login("admin-token-0123456789");
        }
        assert!(s.get(&first).is_none());
        assert_eq!(s.map.lock().len(), MAX_SESSIONS);
    }

    #[test]
    fn cookies_are_found_among_others() {
        assert_eq!(cookie("a=1; vc_session=abc; b=2", COOKIE), Some("abc"));
        assert_eq!(cookie("vc_sessionx=abc", COOKIE), None);
        assert_eq!(cookie("", COOKIE), None);
        let c = set_cookie("id");
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
    }
}
