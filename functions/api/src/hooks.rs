//! Inbound webhook triggers' secrets (`FLOWGATE_HOOK_SECRETS`) and how a delivery is verified.
//!
//! Secrets never live in workflow definitions: a definition is readable by anyone with an API
//! key and is versioned forever, so a secret there could not be rotated or withheld. The
//! definition says *how* a trigger verifies (`verify: github | standard_webhooks |
//! shared_secret`); the deployment says *with what*, once, at start.
//!
//! Format: `trigger_id=secret` entries separated by commas or newlines, e.g.
//! `FLOWGATE_HOOK_SECRETS=gh-issues=s3cret,ci-red=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,deploy@x-deploy-token=t0ken`.
//!
//! - `github` triggers: any text (GitHub's "Secret" field); the HMAC key is its bytes.
//! - `standard_webhooks` triggers: the `whsec_…` secret the sender shows.
//! - `shared_secret` triggers: the value the sender puts in a header, by default
//!   [`DEFAULT_SECRET_HEADER`]; `id@header-name=secret` names another header.
//!
//! Repeating a trigger id adds a secret (a rotation: any of them verifies). A secret may not
//! contain a comma or a line break (they separate entries); whitespace around it is dropped.
//! A trigger without an entry refuses every delivery (401): unsigned input is never accepted.

use std::collections::BTreeMap;
use std::fmt;

use flowgate_shared::definition::WebhookVerify;
use flowgate_shared::signing::{self, HeaderSource, SignatureError, WebhookSecret};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable holding every trigger's secrets.
pub const ENV_HOOK_SECRETS: &str = "FLOWGATE_HOOK_SECRETS";

/// The header a `shared_secret` trigger reads its secret from unless its entry names another.
pub const DEFAULT_SECRET_HEADER: &str = "x-flowgate-secret";

/// Every inbound trigger's secrets, by trigger id. `Debug` shows ids, counts and header names,
/// never a secret.
#[derive(Clone, Default)]
pub struct HookSecrets {
    triggers: BTreeMap<String, TriggerSecrets>,
}

/// One trigger's secrets (several during a rotation).
#[derive(Clone)]
pub struct TriggerSecrets {
    /// The secrets as configured: GitHub HMAC keys and shared-secret values.
    raw: Vec<String>,
    /// The `whsec_…` entries, parsed (Standard Webhooks keys are the base64-decoded bytes).
    standard: Vec<WebhookSecret>,
    /// Where a shared secret is sent, when the entry named a header.
    header: Option<String>,
}

impl fmt::Debug for HookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.triggers.iter()).finish()
    }
}

impl fmt::Debug for TriggerSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TriggerSecrets")
            .field("secrets", &format_args!("<{} redacted>", self.raw.len()))
            .field("header", &self.header)
            .finish()
    }
}

/// Why `FLOWGATE_HOOK_SECRETS` cannot be used. Entries are named by position and trigger id,
/// never by their secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ENV_HOOK_SECRETS}: entry {entry}: {problem}")]
pub struct HookSecretsError {
    /// 1-based position of the entry.
    pub entry: usize,
    pub problem: String,
}

impl HookSecrets {
    /// Parse the `trigger_id[@header]=secret,...` format (see the module docs).
    pub fn parse(text: &str) -> Result<Self, HookSecretsError> {
        let mut triggers: BTreeMap<String, TriggerSecrets> = BTreeMap::new();
        let entries = text
            .split([',', '\n', '\r'])
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let fail = |problem: String| HookSecretsError {
                entry: i + 1,
                problem,
            };
            let Some((name, secret)) = entry.split_once('=') else {
                return Err(fail(
                    "is not `trigger_id=secret` (or `trigger_id@header=secret` for a shared secret)"
                        .to_string(),
                ));
            };
            let (id, header) = match name.trim().split_once('@') {
                Some((id, header)) => (id, Some(header.to_ascii_lowercase())),
                None => (name.trim(), None),
            };
            if !is_trigger_id(id) {
                return Err(fail(format!(
                    "{id:?} is not a trigger id (1 to 64 lowercase letters, digits, \"-\" or \"_\")"
                )));
            }
            if let Some(h) = &header
                && !is_header_name(h)
            {
                return Err(fail(format!(
                    "trigger {id}: {h:?} is not a header name (letters, digits, \"-\" and \"_\")"
                )));
            }
            let secret = secret.trim();
            if secret.is_empty() {
                return Err(fail(format!("trigger {id}: the secret is empty")));
            }
            let standard = if secret.starts_with(WebhookSecret::PREFIX) {
                Some(WebhookSecret::parse(secret).map_err(|e| fail(format!("trigger {id}: {e}")))?)
            } else {
                None
            };
            let slot = triggers.entry(id.to_string()).or_insert(TriggerSecrets {
                raw: Vec::new(),
                standard: Vec::new(),
                header: None,
            });
            match (&slot.header, header) {
                (Some(old), Some(new)) if *old != new => {
                    return Err(fail(format!(
                        "trigger {id}: header {new} differs from {old} named by an earlier entry; \
                         name one header per trigger"
                    )));
                }
                (_, Some(new)) => slot.header = Some(new),
                (_, None) => {}
            }
            slot.raw.push(secret.to_string());
            slot.standard.extend(standard);
        }
        Ok(HookSecrets { triggers })
    }

    /// The secrets of one trigger, if configured.
    pub fn get(&self, trigger_id: &str) -> Option<&TriggerSecrets> {
        self.triggers.get(trigger_id)
    }

    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }
}

/// What a verified delivery identified itself as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    /// The sender's delivery id, when the verifier read one (Standard Webhooks' `webhook-id`).
    pub(crate) delivery: Option<String>,
}

/// Why a delivery was refused before its body was looked at.
#[derive(Debug)]
pub(crate) enum VerifyError {
    /// The configured secrets cannot verify this kind of signature (a Standard Webhooks
    /// trigger whose entry is not a `whsec_` secret).
    Unusable(String),
    Signature(SignatureError),
    /// A shared-secret trigger's header was missing (`missing_header`) or repeated
    /// (`duplicate_header`); the message names the header.
    Header {
        code: &'static str,
        message: String,
    },
}

impl TriggerSecrets {
    /// The header a shared-secret trigger reads.
    pub fn header(&self) -> &str {
        self.header.as_deref().unwrap_or(DEFAULT_SECRET_HEADER)
    }

    /// Verify a delivery over its exact raw bytes, the way the trigger's definition says.
    pub(crate) fn verify<H: HeaderSource + ?Sized>(
        &self,
        how: WebhookVerify,
        headers: &H,
        raw_body: &[u8],
        now_secs: i64,
    ) -> Result<Verified, VerifyError> {
        match how {
            WebhookVerify::Github => {
                let mut first_error = None;
                for secret in &self.raw {
                    match signing::verify_github(secret.as_bytes(), headers, raw_body) {
                        Ok(()) => return Ok(Verified { delivery: None }),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                Err(VerifyError::Signature(
                    first_error.unwrap_or(SignatureError::Mismatch),
                ))
            }
            WebhookVerify::StandardWebhooks => {
                if self.standard.is_empty() {
                    return Err(VerifyError::Unusable(
                        "this trigger verifies Standard Webhooks signatures, but its configured \
                         secret is not a `whsec_…` secret; put the sender's whsec_ secret in \
                         FLOWGATE_HOOK_SECRETS"
                            .to_string(),
                    ));
                }
                let verified =
                    signing::verify_standard(&self.standard, headers, raw_body, now_secs)
                        .map_err(VerifyError::Signature)?;
                Ok(Verified {
                    delivery: Some(verified.id),
                })
            }
            WebhookVerify::SharedSecret => {
                let name = self.header();
                let given = match headers.header_values(name).as_slice() {
                    [] => {
                        return Err(VerifyError::Header {
                            code: "missing_header",
                            message: format!(
                                "the `{name}` header is missing; the sender must send the \
                                 shared secret in it on every request"
                            ),
                        });
                    }
                    [value] => value.trim_matches([' ', '\t']),
                    _ => {
                        return Err(VerifyError::Header {
                            code: "duplicate_header",
                            message: format!(
                                "the `{name}` header was sent more than once; send it exactly once"
                            ),
                        });
                    }
                };
                // Compare digests, so neither the time taken nor an early length mismatch says
                // how much of a guess was right.
                let given = Sha256::digest(given.as_bytes());
                let mut matched = subtle::Choice::from(0);
                for secret in &self.raw {
                    matched |= Sha256::digest(secret.as_bytes())
                        .as_slice()
                        .ct_eq(given.as_slice());
                }
                if bool::from(matched) {
                    Ok(Verified { delivery: None })
                } else {
                    Err(VerifyError::Signature(SignatureError::Mismatch))
                }
            }
        }
    }
}

/// The definitions' id rule (`validate::support::is_id`), repeated so a typo in the
/// environment fails at start instead of leaving a trigger unconfigured.
fn is_trigger_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_rotations_and_headers() {
        let secrets = HookSecrets::parse(
            " gh = It's a Secret to Everybody ,\ngh=second\n\
             deploy@X-Deploy-Token=t0k=en,ci=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .unwrap();
        let gh = secrets.get("gh").unwrap();
        assert_eq!(gh.raw, ["It's a Secret to Everybody", "second"]);
        assert_eq!(gh.header(), DEFAULT_SECRET_HEADER);
        let deploy = secrets.get("deploy").unwrap();
        assert_eq!(deploy.header(), "x-deploy-token");
        assert_eq!(deploy.raw, ["t0k=en"]);
        assert_eq!(secrets.get("ci").unwrap().standard.len(), 1);
        assert!(secrets.get("other").is_none());
        assert!(HookSecrets::parse("").unwrap().is_empty());
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let secrets =
            HookSecrets::parse("gh=hunter2hunter2,ci=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap();
        let text = format!("{secrets:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("MfKQ9r8"), "{text}");
        assert!(text.contains("gh"), "{text}");
    }

    #[test]
    fn bad_entries_are_named_by_position_not_value() {
        for (text, entry, needle) in [
            ("gh", 1, "is not `trigger_id=secret`"),
            ("gh=a,Bad=b", 2, "\"Bad\" is not a trigger id"),
            ("gh=", 1, "the secret is empty"),
            ("gh@x y=abc", 1, "is not a header name"),
            ("ci=whsec_c2hvcnQ=", 1, "trigger ci: invalid secret"),
            ("d@x-a=1,d@x-b=2", 2, "name one header per trigger"),
        ] {
            let e = HookSecrets::parse(text).unwrap_err();
            assert_eq!(e.entry, entry, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
            assert!(!e.to_string().contains("c2hvcnQ"), "{e}");
        }
    }

    #[test]
    fn shared_secrets_compare_exactly() {
        let secrets = HookSecrets::parse("d=right-secret").unwrap();
        let d = secrets.get("d").unwrap();
        let check =
            |headers: &[(&str, &str)]| d.verify(WebhookVerify::SharedSecret, headers, b"{}", 0);
        assert!(check(&[("X-Flowgate-Secret", "right-secret")]).is_ok());
        for headers in [
            &[("x-flowgate-secret", "right-secreT")][..],
            &[("x-flowgate-secret", "right-secret-")][..],
            &[("x-flowgate-secret", "")][..],
        ] {
            assert!(matches!(
                check(headers),
                Err(VerifyError::Signature(SignatureError::Mismatch))
            ));
        }
        assert!(matches!(
            check(&[]),
            Err(VerifyError::Header {
                code: "missing_header",
                ..
            })
        ));
        assert!(matches!(
            check(&[
                ("x-flowgate-secret", "right-secret"),
                ("x-flowgate-secret", "x")
            ]),
            Err(VerifyError::Header {
                code: "duplicate_header",
                ..
            })
        ));
    }

    #[test]
    fn standard_webhooks_needs_a_whsec_secret() {
        let secrets = HookSecrets::parse("ci=plain-text").unwrap();
        let ci = secrets.get("ci").unwrap();
        assert!(matches!(
            ci.verify(
                WebhookVerify::StandardWebhooks,
                &[("webhook-id", "m")],
                b"{}",
                0
            ),
            Err(VerifyError::Unusable(_))
        ));
    }
}
