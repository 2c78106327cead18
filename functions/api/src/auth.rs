//! API key authentication.
//!
//! Keys are configured as SHA-256 hashes (`FLOWGATE_API_KEY_HASHES`), so the configuration
//! never holds a usable secret. A presented key is hashed and compared with every configured
//! hash in constant time (all of them, without stopping at a match), so neither the key nor
//! which entry matched leaks through timing. Keys are never logged; only the principal name
//! configured next to the hash is.
//!
//! Deciding approvals is a permission of its own ([`ApiKeys::may_approve`]): a key handed to an
//! AI assistant (through MCP, say) can start and steer runs without being able to wave its own
//! work through the human gates. Without `FLOWGATE_API_KEY_APPROVERS` every key may decide, as
//! before; an approval step's own `approvers` list still applies on top.

use std::collections::BTreeSet;
use std::fmt;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use flowgate_shared::api::API_KEY_HEADER;

/// One accepted key: who it belongs to and the SHA-256 of the key.
#[derive(Clone)]
struct KeyEntry {
    principal: String,
    hash: [u8; 32],
}

/// The accepted API keys, and which of them may decide approvals.
#[derive(Clone, Default)]
pub struct ApiKeys {
    entries: Vec<KeyEntry>,
    /// Principals whose keys may decide approvals; `None`: every key.
    approvers: Option<BTreeSet<String>>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field(
                "principals",
                &self
                    .entries
                    .iter()
                    .map(|e| e.principal.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("approvers", &self.approvers)
            .finish()
    }
}

/// Why a key configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyConfigError {
    #[error(
        "API key hash entry {index} is not `principal=<64 hex chars>` or `<64 hex chars>`; \
         hash a key with `flowgate hash-key` (or `printf %s KEY | sha256sum`)"
    )]
    Malformed { index: usize },
}

/// The hex SHA-256 of a key: what to put in `FLOWGATE_API_KEY_HASHES`.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// Parse `principal=hash,principal=hash` (a bare hash gets the principal `key-<first 8 hex>`).
    /// Whitespace around entries is ignored; an empty string means no keys (every request is
    /// refused).
    pub fn from_hashes(spec: &str) -> Result<Self, KeyConfigError> {
        let mut entries = Vec::new();
        for (index, raw) in spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let (principal, hex_hash) = match raw.split_once('=') {
                Some((p, h)) => (p.trim().to_string(), h.trim()),
                None => (format!("key-{}", raw.get(..8).unwrap_or(raw)), raw),
            };
            let mut hash = [0u8; 32];
            hex::decode_to_slice(hex_hash, &mut hash)
                .map_err(|_| KeyConfigError::Malformed { index })?;
            if principal.is_empty() {
                return Err(KeyConfigError::Malformed { index });
            }
            entries.push(KeyEntry { principal, hash });
        }
        Ok(ApiKeys {
            entries,
            approvers: None,
        })
    }

    /// Accept one plain key (hashed at once; the plain key is not kept). For `flowgate serve`.
    pub fn single(principal: &str, key: &str) -> Self {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&Sha256::digest(key.as_bytes()));
        ApiKeys {
            entries: vec![KeyEntry {
                principal: principal.to_string(),
                hash,
            }],
            approvers: None,
        }
    }

    /// Only the keys of these principals may decide approvals (`FLOWGATE_API_KEY_APPROVERS`:
    /// comma-separated principal names). A blank spec keeps the default, every key.
    pub fn with_approvers(mut self, spec: &str) -> Self {
        let names: BTreeSet<String> = spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        self.approvers = (!names.is_empty()).then_some(names);
        self
    }

    /// Whether the key of `principal` may decide approvals (approve, reject, retry, skip,
    /// cancel through an approval). The approval's own `approvers` and the no-self-approval rule
    /// are checked by the engine afterwards.
    pub fn may_approve(&self, principal: &str) -> bool {
        self.approvers
            .as_ref()
            .is_none_or(|names| names.contains(principal))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal a key belongs to, checking every entry in constant time.
    pub fn principal_for(&self, key: &str) -> Option<&str> {
        let presented = Sha256::digest(key.as_bytes());
        let mut found: Option<&str> = None;
        for entry in &self.entries {
            let equal: bool = entry.hash.as_slice().ct_eq(presented.as_slice()).into();
            if equal && found.is_none() {
                found = Some(entry.principal.as_str());
            }
        }
        found
    }

    /// The key presented in `x-api-key` or `Authorization: Bearer`. More than one value (or
    /// both headers with different keys) is refused: which one would count is ambiguous.
    pub fn presented(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
        let mut keys = Vec::new();
        for value in headers.get_all(API_KEY_HEADER) {
            keys.push(
                value
                    .to_str()
                    .map_err(|_| "the x-api-key header is not ASCII")?,
            );
        }
        for value in headers.get_all(axum::http::header::AUTHORIZATION) {
            let text = value
                .to_str()
                .map_err(|_| "the Authorization header is not ASCII")?;
            let token = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .ok_or("the Authorization header must be `Bearer <api key>`")?;
            keys.push(token.trim());
        }
        match keys.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            [first, rest @ ..] if rest.iter().all(|k| k == first) => Ok(Some(first)),
            _ => Err("more than one API key was sent; send exactly one"),
        }
    }
}

/// The authenticated caller. Every protected handler takes one, so a route cannot be added
/// without deciding on authentication; a missing or wrong key is 401 before the body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

impl axum::extract::FromRequestParts<crate::Services> for Principal {
    type Rejection = crate::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        services: &crate::Services,
    ) -> Result<Self, Self::Rejection> {
        let key = ApiKeys::presented(&parts.headers).map_err(crate::ApiError::unauthorized)?;
        let Some(key) = key else {
            return Err(crate::ApiError::unauthorized(
                "missing API key: send it in the x-api-key header or as Authorization: Bearer <key>",
            ));
        };
        services
            .keys
            .principal_for(key)
            .map(|p| Principal(p.to_string()))
            .ok_or_else(|| crate::ApiError::unauthorized("the API key is not valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_with_and_without_principals() {
        let alice = hash_key("alice-key");
        let bob = hash_key("bob-key");
        let keys = ApiKeys::from_hashes(&format!(" alice={alice} ,{bob}\n")).unwrap();
        assert_eq!(keys.principal_for("alice-key"), Some("alice"));
        assert_eq!(
            keys.principal_for("bob-key"),
            Some(format!("key-{}", &bob[..8]).as_str())
        );
        assert_eq!(keys.principal_for("mallory"), None);
        assert_eq!(keys.principal_for(""), None);
    }

    #[test]
    fn malformed_hashes_are_refused_with_their_position() {
        assert_eq!(
            ApiKeys::from_hashes("alice=abc").unwrap_err(),
            KeyConfigError::Malformed { index: 0 }
        );
        let good = hash_key("k");
        assert_eq!(
            ApiKeys::from_hashes(&format!("{good},=zz")).unwrap_err(),
            KeyConfigError::Malformed { index: 1 }
        );
        assert!(ApiKeys::from_hashes("").unwrap().is_empty());
    }

    #[test]
    fn debug_output_names_principals_only() {
        let keys = ApiKeys::single("ops", "secret-value");
        let text = format!("{keys:?}");
        assert!(text.contains("ops"));
        assert!(!text.contains("secret-value"));
        assert!(!text.contains(&hash_key("secret-value")));
    }

    #[test]
    fn approving_is_every_key_unless_restricted() {
        let keys = ApiKeys::single("local", "k");
        assert!(keys.may_approve("local"));
        let keys = keys.with_approvers("  ");
        assert!(keys.may_approve("local"), "a blank list keeps the default");
        let keys = ApiKeys::single("bot", "k").with_approvers(" alice, ops\n");
        assert!(!keys.may_approve("bot"));
        assert!(keys.may_approve("alice"));
        assert!(keys.may_approve("ops"));
    }

    #[test]
    fn one_key_per_request() {
        let mut headers = HeaderMap::new();
        assert_eq!(ApiKeys::presented(&headers), Ok(None));
        headers.insert(API_KEY_HEADER, "a".parse().unwrap());
        assert_eq!(ApiKeys::presented(&headers), Ok(Some("a")));
        headers.insert("authorization", "Bearer a".parse().unwrap());
        assert_eq!(ApiKeys::presented(&headers), Ok(Some("a")));
        headers.insert("authorization", "Bearer b".parse().unwrap());
        assert!(ApiKeys::presented(&headers).is_err());
        headers.insert("authorization", "Basic xyz".parse().unwrap());
        assert!(ApiKeys::presented(&headers).is_err());
    }
}
