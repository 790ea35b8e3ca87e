//! Who may publish what through `POST /events`, and how topic patterns match.
//!
//! - The typed contract topics (`platform::contracts`) are **reserved**: the roles publish them
//!   in the transaction of their own change, and their readers (the trust path, secret
//!   injection) act on them. Nobody publishes them through notify, not even an admin.
//! - An admin publishes any other topic.
//! - A service publishes the topics it **owns**: those under its own name (`<service>.<word>…`)
//!   and those `[roles.notify] publish_topics.<service>` lists (exact, `prefix.*` or `*`).
//!
//! A refusal is a 403 whose message and `details.rule` name the rule (`reserved_topic`,
//! `topic_ownership`).

use std::collections::BTreeMap;

use crate::platform::auth::Claims;
use crate::platform::contracts::{
    Event, KeyChanged, KeyCreated, KeyRevoked, KeyRotated, SecretsRotated, SessionRevoked, SigningKeyRotated,
    TokenRevoked, UserChanged,
};
use crate::platform::events::valid_topic;

/// The largest event payload, as serialized JSON.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Why a caller may not publish a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishRefusal {
    /// One of the roles' own contract topics.
    Reserved,
    /// A service publishing outside what it owns; `allowed` lists what it does own.
    NotOwned { service: String, allowed: Vec<String> },
}

/// Whether `topic` is one of the typed contract topics that a role publishes in the
/// transaction of its own change. A client may not publish them through `POST /events`: their
/// readers act on them by source, and a client whose name happens to be a role's must not be
/// able to forge them.
pub fn reserved_topic(topic: &str) -> bool {
    [
        TokenRevoked::TOPIC,
        SessionRevoked::TOPIC,
        UserChanged::TOPIC,
        KeyCreated::TOPIC,
        KeyRotated::TOPIC,
        KeyChanged::TOPIC,
        KeyRevoked::TOPIC,
        SigningKeyRotated::TOPIC,
        SecretsRotated::TOPIC,
    ]
    .contains(&topic)
}

/// `keys.*` matches `keys.rotated`; `*` matches everything; otherwise exact.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    pattern == "*"
        || pattern == topic
        || pattern
            .strip_suffix(".*")
            .is_some_and(|prefix| topic.strip_prefix(prefix).is_some_and(|r| r.starts_with('.')))
}

/// A topic pattern: `*`, `prefix.*` or an exact topic.
pub fn valid_pattern(pattern: &str) -> bool {
    pattern == "*" || valid_topic(pattern.strip_suffix(".*").unwrap_or(pattern))
}

/// Who may publish which topics (`[roles.notify] publish_topics` plus the fixed rules).
#[derive(Debug, Clone, Default)]
pub struct PublishPolicy {
    /// Service name -> the patterns it may publish besides its own `<service>.*`.
    granted: BTreeMap<String, Vec<String>>,
}

impl PublishPolicy {
    pub fn new(granted: BTreeMap<String, Vec<String>>) -> Self {
        Self { granted }
    }

    /// Checks `publish_topics`: keys are service names, values valid patterns.
    pub fn validate(granted: &BTreeMap<String, Vec<String>>) -> Result<(), String> {
        for (service, patterns) in granted {
            if crate::platform::names::validate_service_name("publish_topics", service).is_err() {
                return Err(format!(
                    "publish_topics: {service:?} is not a service name (1-64 of a-z 0-9 _ -)"
                ));
            }
            if let Some(bad) = patterns.iter().find(|p| !valid_pattern(p)) {
                return Err(format!(
                    "publish_topics.{service}: {bad:?} is not a topic, a prefix ending in .* or *"
                ));
            }
        }
        Ok(())
    }

    /// The patterns `service` may publish: its own prefix first, then what is granted to it.
    pub fn owned_by(&self, service: &str) -> Vec<String> {
        std::iter::once(format!("{service}.*"))
            .chain(self.granted.get(service).into_iter().flatten().cloned())
            .collect()
    }

    /// Whether `caller` may publish `topic` (a valid topic name).
    pub fn check(&self, caller: &Claims, topic: &str) -> Result<(), PublishRefusal> {
        if reserved_topic(topic) {
            return Err(PublishRefusal::Reserved);
        }
        if caller.is_admin() {
            return Ok(());
        }
        let owned = self.owned_by(&caller.sub);
        if owned.iter().any(|pattern| topic_matches(pattern, topic)) {
            Ok(())
        } else {
            Err(PublishRefusal::NotOwned { service: caller.sub.clone(), allowed: owned })
        }
    }
}

/// The length of `value` serialized as JSON, counted without building the string.
pub fn serialized_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` into an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, role: &str) -> Claims {
        Claims {
            sub: sub.into(),
            roles: vec![role.into()],
            iss: "fountain".into(),
            aud: "fountain".into(),
            exp: 0,
            iat: 0,
            nbf: 0,
            jti: "j".into(),
            mfa: None,
            sid: None,
            uid: None,
            epoch: None,
            akid: None,
            amr: None,
            mfa_pending: None,
        }
    }

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("secrets.rotated", "secrets.rotated"));
        assert!(topic_matches("secrets.*", "secrets.rotated"));
        assert!(!topic_matches("secrets.*", "secretsx.rotated"));
        assert!(!topic_matches("secrets.*", "secrets"));
        assert!(topic_matches("*", "anything.at.all"));
        assert!(!topic_matches("keys.rotated", "keys.revoked"));
    }

    #[test]
    fn the_roles_own_topics_are_reserved() {
        for topic in ["users.changed", "tokens.revoked", "keys.changed", "keys.revoked", "secrets.rotated"] {
            assert!(reserved_topic(topic), "{topic}");
        }
        for topic in ["demo.hello", "keys", "users.changed.v2", "secrets"] {
            assert!(!reserved_topic(topic), "{topic}");
        }
    }

    #[test]
    fn services_publish_what_they_own_and_admins_anything_unreserved() {
        let policy = PublishPolicy::new(BTreeMap::from([
            ("svc".to_string(), vec!["demo.*".to_string()]),
            ("bridge".to_string(), vec!["*".to_string()]),
        ]));
        let svc = claims("svc", "service");
        assert_eq!(policy.check(&svc, "svc.hello"), Ok(()));
        assert_eq!(policy.check(&svc, "svc.a.b"), Ok(()));
        assert_eq!(policy.check(&svc, "demo.hello"), Ok(()));
        for foreign in ["svc", "svcx.hello", "demo", "other.hello", "kms.hello"] {
            assert!(matches!(policy.check(&svc, foreign), Err(PublishRefusal::NotOwned { .. })), "{foreign}");
        }
        let other = claims("other", "service");
        assert!(matches!(policy.check(&other, "demo.hello"), Err(PublishRefusal::NotOwned { .. })));
        let bridge = claims("bridge", "service");
        assert_eq!(policy.check(&bridge, "anything.goes"), Ok(()));
        let admin = claims("root", "admin");
        assert_eq!(policy.check(&admin, "anything.goes"), Ok(()));
        for caller in [&svc, &bridge, &admin] {
            assert_eq!(policy.check(caller, "users.changed"), Err(PublishRefusal::Reserved));
        }
        // A service named like a reserved topic's prefix still cannot publish it.
        assert_eq!(policy.check(&claims("keys", "service"), "keys.revoked"), Err(PublishRefusal::Reserved));
        assert_eq!(policy.check(&claims("keys", "service"), "keys.custom"), Ok(()));
    }

    #[test]
    fn granted_patterns_are_validated() {
        let ok = BTreeMap::from([("svc".to_string(), vec!["demo.*".into(), "a.b".into(), "*".into()])]);
        assert!(PublishPolicy::validate(&ok).is_ok());
        for (service, pattern) in
            [("svc", "Demo.*"), ("svc", "demo.**"), ("svc", ""), ("Svc", "a.b"), ("a.b", "a.b")]
        {
            let bad = BTreeMap::from([(service.to_string(), vec![pattern.to_string()])]);
            assert!(PublishPolicy::validate(&bad).is_err(), "{service} {pattern}");
        }
    }

    #[test]
    fn payload_length_is_the_serialized_length() {
        let value = serde_json::json!({"blob": "x".repeat(100), "n": [1, 2, 3], "s": "é\"\n"});
        assert_eq!(serialized_len(&value), value.to_string().len());
    }
}
