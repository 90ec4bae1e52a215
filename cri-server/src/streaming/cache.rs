//! Parked streaming requests under random one-time tokens: a token works once, before its TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{AttachParams, ExecParams, PortForwardParams, StreamingError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    Exec(ExecParams),
    Attach(AttachParams),
    PortForward(PortForwardParams),
}

impl Pending {
    /// The URL path segment this request is served under.
    pub fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

pub struct TokenCache {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<String, (Pending, Instant)>>,
}

impl TokenCache {
    pub fn new(ttl: Duration, max: usize) -> TokenCache {
        TokenCache {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Parks `req`; returns its token (128 random bits, hex).
    pub fn insert(&self, req: Pending) -> Result<String, StreamingError> {
        let token = crate::runtime::new_id()[..32].to_string();
        let now = Instant::now();
        let mut m = self.entries.lock().expect("token cache");
        m.retain(|_, (_, deadline)| *deadline > now);
        if m.len() >= self.max {
            return Err(StreamingError::TooManyInFlight(m.len()));
        }
        m.insert(token.clone(), (req, now + self.ttl));
        Ok(token)
    }

    /// Takes the request parked under `token` for `kind`: `None` when unknown, used, expired or
    /// of another kind. The token is spent either way.
    pub fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let (req, deadline) = self.entries.lock().expect("token cache").remove(token)?;
        (deadline > Instant::now() && req.kind() == kind).then_some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Pending {
        Pending::PortForward(PortForwardParams {
            sandbox_id: "p".into(),
            ports: vec![80],
        })
    }

    #[test]
    fn a_token_works_once_and_only_for_its_kind() {
        let c = TokenCache::new(Duration::from_secs(60), 10);
        let t = c.insert(pf()).unwrap();
        assert_eq!(t.len(), 32);
        assert_eq!(c.take("portforward", &t), Some(pf()));
        assert_eq!(c.take("portforward", &t), None);
        let t = c.insert(pf()).unwrap();
        assert_eq!(c.take("exec", &t), None);
        assert_eq!(c.take("portforward", &t), None, "spent by the wrong kind");
        assert_eq!(c.take("portforward", "nope"), None);
    }

    #[test]
    fn expired_tokens_are_refused_and_the_cache_is_bounded() {
        let c = TokenCache::new(Duration::from_millis(20), 2);
        let t = c.insert(pf()).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.take("portforward", &t), None);
        c.insert(pf()).unwrap();
        c.insert(pf()).unwrap();
        assert!(matches!(
            c.insert(pf()),
            Err(StreamingError::TooManyInFlight(2))
        ));
    }
}
