//! Request signatures: verifying what Slack, GitHub and Standard Webhooks senders sign, signing
//! Flowgate's own outbound webhooks, and one-time approval links.
//!
//! Everything here is a pure function over bytes. The caller passes the current time as unix
//! seconds (`now_secs`); nothing reads a clock, so the replay-window rules are testable with a
//! pinned clock and the same code runs on Lambda and in `flowgate serve`.
//!
//! Rules every verifier follows, and why:
//! - **Raw body.** The MAC covers the exact bytes the sender sent. Verify *before* parsing: a form
//!   body stays percent-encoded, a body API Gateway delivers with `isBase64Encoded: true` is
//!   base64-decoded to bytes first, and nothing is re-serialised, because any re-encoding changes
//!   the bytes and the signature with them.
//! - **Constant time.** Signatures are compared with [`subtle`], so the time a comparison takes
//!   does not tell an attacker how many leading bytes of a forged signature were right.
//! - **Exactly one value per header.** A header sent twice is refused rather than picking one: a
//!   proxy and this code could otherwise disagree about which copy was checked.
//! - **Replay window.** Where the sender signs a timestamp (Slack, Standard Webhooks) it must be
//!   within [`REPLAY_WINDOW_SECS`] of `now_secs` in either direction, so a captured request cannot
//!   be replayed later. Inside the window, callers dedupe on the delivery id.
//! - **Errors never carry secrets or expected signatures**; they say what the sender should fix.
//!
//! Headers are passed through [`HeaderSource`], implemented for lists of `(name, value)` pairs
//! (`&[(&str, &str)]`, `Vec<(String, String)>`, arrays). Names match ASCII-case-insensitively, so
//! API Gateway's lowercased names and Slack's `X-Slack-Signature` both work. From an axum/`http`
//! `HeaderMap`, collect the pairs without dropping any value, so a duplicate is still seen:
//!
//! ```
//! # use flowgate_shared::signing;
//! # let map = axum::http::HeaderMap::new();
//! # let (secret, body, now_secs) = (b"secret".as_slice(), b"payload".to_vec(), 1_531_420_618);
//! let pairs: Vec<(&str, &str)> = map
//!     .iter()
//!     .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or("")))
//!     .collect();
//! let verified = signing::verify_slack(secret, &pairs, &body, now_secs);
//! # assert!(verified.is_err(), "no signature headers: refused");
//! ```

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

type HmacSha256 = Hmac<Sha256>;

/// Largest accepted distance, in seconds and in either direction, between a signed timestamp and
/// `now_secs`. Exactly ±300 is accepted, ±301 refused (python-slack-sdk and the Standard Webhooks
/// reference library behave the same way).
pub const REPLAY_WINDOW_SECS: u64 = 300;

/// Slack's signature header (`v0=` + 64 hex characters).
pub const SLACK_SIGNATURE: &str = "x-slack-signature";
/// Slack's signed timestamp header (unix seconds).
pub const SLACK_TIMESTAMP: &str = "x-slack-request-timestamp";
/// GitHub's HMAC-SHA256 signature header (`sha256=` + hex). The SHA-1 `X-Hub-Signature` is not
/// accepted.
pub const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
/// Standard Webhooks message id: stable across retries, the idempotency key.
pub const WEBHOOK_ID: &str = "webhook-id";
/// Standard Webhooks signed timestamp (unix seconds, new per attempt).
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Standard Webhooks signature list (space-separated `v1,<base64>` entries).
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// Why a signature, secret or approval link was refused.
///
/// Messages name the problem and what to fix; none carries a secret or an expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header was absent.
    #[error("the `{0}` header is missing; the sender must include it on every request")]
    MissingHeader(&'static str),
    /// A header that must appear once appeared more than once.
    #[error("the `{0}` header was sent more than once; send it exactly once")]
    DuplicateHeader(&'static str),
    /// A timestamp header was not a non-negative integer number of unix seconds.
    #[error("the `{0}` header must be an integer number of unix seconds")]
    BadTimestamp(&'static str),
    /// The signed timestamp is outside the replay window.
    #[error(
        "the signed timestamp is {skew_secs} s away from the server clock (positive = in the \
         past); requests must arrive within {} s of signing: check the sender's clock and do not \
         replay old requests",
        REPLAY_WINDOW_SECS
    )]
    Stale {
        /// `now − timestamp`: positive when the request is old, negative when it is from the future.
        skew_secs: i64,
    },
    /// A signature, identifier or token does not have the expected shape.
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    /// Well formed, but the signature or MAC does not match.
    #[error(
        "the signature does not match: sign the exact raw request bytes with the configured secret"
    )]
    Mismatch,
    /// A Standard Webhooks signature header held no `v1,` entry.
    #[error(
        "the `webhook-signature` header has no `v1,` entry; only HMAC-SHA256 (v1) signatures are \
         accepted"
    )]
    NoSupportedSignature,
    /// A configured secret or key is unusable.
    #[error("invalid secret: {0}")]
    BadSecret(String),
    /// An approval link was valid but its expiry has passed.
    #[error("the approval link has expired; use a newer notification or answer in the console")]
    Expired,
}

impl SignatureError {
    /// A short, stable snake_case code for JSON error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::DuplicateHeader(_) => "duplicate_header",
            Self::BadTimestamp(_) => "bad_timestamp",
            Self::Stale { .. } => "stale_timestamp",
            Self::Malformed(_) => "malformed_signature",
            Self::Mismatch => "signature_mismatch",
            Self::NoSupportedSignature => "unsupported_signature_version",
            Self::BadSecret(_) => "bad_secret",
            Self::Expired => "link_expired",
        }
    }
}

/// Where verifiers read request headers from.
///
/// Implementations return *every* value received under a name so that duplicates can be refused.
pub trait HeaderSource {
    /// All values received under `name` (matched ASCII-case-insensitively), in arrival order.
    fn header_values(&self, name: &str) -> Vec<&str>;
}

impl<K: AsRef<str>, V: AsRef<str>> HeaderSource for [(K, V)] {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.iter()
            .filter(|(key, _)| key.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_ref())
            .collect()
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> HeaderSource for [(K, V); N] {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.as_slice().header_values(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> HeaderSource for Vec<(K, V)> {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.as_slice().header_values(name)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length")
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The single value of a header, with HTTP optional whitespace trimmed.
fn single_header<'h, H: HeaderSource + ?Sized>(
    headers: &'h H,
    name: &'static str,
) -> Result<&'h str, SignatureError> {
    match headers.header_values(name).as_slice() {
        [] => Err(SignatureError::MissingHeader(name)),
        [value] => Ok(value.trim_matches([' ', '\t'])),
        _ => Err(SignatureError::DuplicateHeader(name)),
    }
}

/// Parse unix seconds: ASCII digits only (no sign, no fraction, no `_`), fitting an `i64`.
fn parse_timestamp(name: &'static str, text: &str) -> Result<i64, SignatureError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::BadTimestamp(name));
    }
    text.parse::<i64>()
        .map_err(|_| SignatureError::BadTimestamp(name))
}

/// Refuse timestamps more than [`REPLAY_WINDOW_SECS`] away from `now_secs`, in either direction:
/// old ones could be replays, future ones could be pre-signed for a later replay.
fn check_window(timestamp: i64, now_secs: i64) -> Result<(), SignatureError> {
    let skew_secs = now_secs.saturating_sub(timestamp);
    if skew_secs.unsigned_abs() > REPLAY_WINDOW_SECS {
        return Err(SignatureError::Stale { skew_secs });
    }
    Ok(())
}

fn mac_eq(expected: &[u8; 32], given: &[u8]) -> Choice {
    expected.as_slice().ct_eq(given)
}

// ---------------------------------------------------------------------------------------------
// Slack v0
// ---------------------------------------------------------------------------------------------

/// Slack's signature over `v0:{timestamp}:{raw body}`: `v0=` + lowercase hex HMAC-SHA256.
///
/// Used by tests and fixtures to build signed requests; Flowgate never signs as Slack otherwise.
pub fn sign_slack(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(secret, &[b"v0:", ts.as_bytes(), b":", body]);
    format!("v0={}", hex::encode(mac))
}

/// Verify a request from Slack (slash command, interactivity, Events API).
///
/// `raw_body` must be the exact bytes received (form bodies still percent-encoded; a base64 body
/// from API Gateway decoded first). Refused: either header missing or duplicated, a non-integer
/// timestamp, a timestamp more than [`REPLAY_WINDOW_SECS`] from `now_secs` either way (Slack
/// signs no nonce, so the window is the replay defence), a signature that is not `v0=` + 64 hex
/// characters, and a signature that does not match (compared in constant time).
pub fn verify_slack<H: HeaderSource + ?Sized>(
    secret: &[u8],
    headers: &H,
    raw_body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let ts_text = single_header(headers, SLACK_TIMESTAMP)?;
    let signature = single_header(headers, SLACK_SIGNATURE)?;
    let timestamp = parse_timestamp(SLACK_TIMESTAMP, ts_text)?;
    check_window(timestamp, now_secs)?;

    let hex_part = signature
        .strip_prefix("v0=")
        .ok_or(SignatureError::Malformed(
            "x-slack-signature must start with `v0=`",
        ))?;
    let mut given = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut given).map_err(|_| {
        SignatureError::Malformed("x-slack-signature must be `v0=` followed by 64 hex characters")
    })?;

    let expected = hmac_sha256(secret, &[b"v0:", ts_text.as_bytes(), b":", raw_body]);
    if bool::from(mac_eq(&expected, &given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

// ---------------------------------------------------------------------------------------------
// GitHub
// ---------------------------------------------------------------------------------------------

/// GitHub's `X-Hub-Signature-256` value for `body`: `sha256=` + lowercase hex HMAC-SHA256.
///
/// Used by tests and fixtures to build signed deliveries.
pub fn sign_github(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, &[body])))
}

/// Verify a GitHub webhook delivery's `X-Hub-Signature-256` over the raw payload.
///
/// GitHub signs no timestamp, so there is no replay window here: dedupe on the
/// `X-GitHub-Delivery` GUID instead. Refused: header missing or duplicated, a value that is not
/// `sha256=` + 64 hex characters, and a signature that does not match (constant time).
pub fn verify_github<H: HeaderSource + ?Sized>(
    secret: &[u8],
    headers: &H,
    raw_body: &[u8],
) -> Result<(), SignatureError> {
    let signature = single_header(headers, GITHUB_SIGNATURE)?;
    let hex_part = signature
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed(
            "x-hub-signature-256 must start with `sha256=`",
        ))?;
    let mut given = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut given).map_err(|_| {
        SignatureError::Malformed(
            "x-hub-signature-256 must be `sha256=` followed by 64 hex characters",
        )
    })?;
    let expected = hmac_sha256(secret, &[raw_body]);
    if bool::from(mac_eq(&expected, &given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

// ---------------------------------------------------------------------------------------------
// Standard Webhooks v1.0.0
// ---------------------------------------------------------------------------------------------

/// A Standard Webhooks symmetric secret: `whsec_` + base64(key).
///
/// The HMAC key is the **base64-decoded** bytes after the prefix (Stripe, by contrast, uses its
/// whole `whsec_…` string as the key). Keys are 24 to 512 bytes, as the spec requires.
/// `Debug` prints only the key length; [`WebhookSecret::expose`] is the one way to get the text
/// back (deliberately no `Display`, so a secret cannot slip into a log line via `{}`).
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl WebhookSecret {
    /// Text prefix of a symmetric Standard Webhooks secret.
    pub const PREFIX: &'static str = "whsec_";
    /// Shortest accepted key (192 bits).
    pub const MIN_KEY_BYTES: usize = 24;
    /// Longest accepted key.
    pub const MAX_KEY_BYTES: usize = 512;
    /// Size of keys made by [`WebhookSecret::generate`].
    pub const GENERATED_KEY_BYTES: usize = 32;

    /// Parse `whsec_<base64>`. Surrounding whitespace (a trailing newline from a file or an
    /// environment variable) is ignored; padding may be present or omitted.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text.trim().strip_prefix(Self::PREFIX).ok_or_else(|| {
            SignatureError::BadSecret(
                "a Standard Webhooks secret must start with `whsec_` followed by the base64 key"
                    .to_string(),
            )
        })?;
        let key = STANDARD_PAD_INDIFFERENT.decode(encoded).map_err(|_| {
            SignatureError::BadSecret(
                "the part after `whsec_` is not valid standard base64".to_string(),
            )
        })?;
        Self::from_key(&key)
    }

    /// Wrap raw key bytes (24 to 512 bytes).
    pub fn from_key(key: &[u8]) -> Result<Self, SignatureError> {
        if !(Self::MIN_KEY_BYTES..=Self::MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SignatureError::BadSecret(format!(
                "the decoded key is {} bytes; Standard Webhooks keys must be {} to {} bytes \
                 (generate one with 32 random bytes)",
                key.len(),
                Self::MIN_KEY_BYTES,
                Self::MAX_KEY_BYTES
            )));
        }
        Ok(Self { key: key.to_vec() })
    }

    /// A new secret with [`Self::GENERATED_KEY_BYTES`] bytes from the thread-local CSPRNG.
    pub fn generate() -> Self {
        let mut key = vec![0u8; Self::GENERATED_KEY_BYTES];
        rand::fill(key.as_mut_slice());
        Self { key }
    }

    /// The secret as `whsec_<base64>` text, for showing once to the endpoint owner or storing.
    pub fn expose(&self) -> String {
        format!("{}{}", Self::PREFIX, STANDARD.encode(&self.key))
    }

    /// Length of the decoded key in bytes.
    pub fn key_len(&self) -> usize {
        self.key.len()
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let ts = timestamp.to_string();
        hmac_sha256(
            &self.key,
            &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body],
        )
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("key", &format_args!("<redacted, {} bytes>", self.key.len()))
            .finish()
    }
}

impl FromStr for WebhookSecret {
    type Err = SignatureError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// What a verified Standard Webhooks request identified itself as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWebhook {
    /// `webhook-id`: the idempotency key; keep seen ids at least as long as the replay window.
    pub id: String,
    /// `webhook-timestamp`, unix seconds.
    pub timestamp: i64,
}

/// The `webhook-signature` value for one message: a space-separated `v1,<base64>` entry per
/// secret, in the order given.
///
/// During key rotation pass both secrets (new first, then old) so receivers holding either key
/// accept the message. Signed content is `{msg_id}.{timestamp}.{body}`; `msg_id` must not contain
/// `.` (the verifier refuses such ids because the boundaries would be ambiguous). With no secrets
/// the result is empty.
pub fn sign_standard(
    secrets: &[WebhookSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| {
            format!(
                "v1,{}",
                STANDARD.encode(secret.mac(msg_id, timestamp, body))
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verify a Standard Webhooks v1.0.0 request against any of `secrets` (several during rotation).
///
/// Accepts when any `v1,` entry of `webhook-signature` matches any secret; every comparison runs
/// in constant time and entries of other versions (such as ed25519 `v1a,`) are ignored. Refused:
/// any of the three headers missing or duplicated, an empty id or one containing `.`, a
/// non-integer timestamp, a timestamp more than [`REPLAY_WINDOW_SECS`] from `now_secs` either
/// way, a header with no `v1,` entry, and no match. An empty `secrets` list is a configuration
/// error ([`SignatureError::BadSecret`]).
pub fn verify_standard<H: HeaderSource + ?Sized>(
    secrets: &[WebhookSecret],
    headers: &H,
    raw_body: &[u8],
    now_secs: i64,
) -> Result<VerifiedWebhook, SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::BadSecret(
            "no webhook secret is configured for this endpoint".to_string(),
        ));
    }
    let id = single_header(headers, WEBHOOK_ID)?;
    if id.is_empty() {
        return Err(SignatureError::Malformed("webhook-id must not be empty"));
    }
    if id.contains('.') {
        return Err(SignatureError::Malformed("webhook-id must not contain `.`"));
    }
    let timestamp = parse_timestamp(
        WEBHOOK_TIMESTAMP,
        single_header(headers, WEBHOOK_TIMESTAMP)?,
    )?;
    check_window(timestamp, now_secs)?;
    let signature_header = single_header(headers, WEBHOOK_SIGNATURE)?;

    let expected: Vec<[u8; 32]> = secrets
        .iter()
        .map(|secret| secret.mac(id, timestamp, raw_body))
        .collect();
    let mut saw_v1 = false;
    let mut matched = Choice::from(0);
    for entry in signature_header.split(' ').filter(|e| !e.is_empty()) {
        let Some(("v1", encoded)) = entry.split_once(',') else {
            continue;
        };
        saw_v1 = true;
        // An undecodable entry simply cannot match; other entries may still.
        let Ok(given) = STANDARD_PAD_INDIFFERENT.decode(encoded) else {
            continue;
        };
        for mac in &expected {
            matched |= mac_eq(mac, &given);
        }
    }
    if !saw_v1 {
        return Err(SignatureError::NoSupportedSignature);
    }
    if bool::from(matched) {
        Ok(VerifiedWebhook {
            id: id.to_string(),
            timestamp,
        })
    } else {
        Err(SignatureError::Mismatch)
    }
}

// ---------------------------------------------------------------------------------------------
// Approval links
// ---------------------------------------------------------------------------------------------

/// Longest token [`verify_link`] will look at; real tokens are a few hundred characters.
const MAX_LINK_TOKEN_CHARS: usize = 4096;

/// Domain separation: a MAC made for something else with the same key is never a valid link.
const LINK_MAC_CONTEXT: &[u8] = b"flowgate.approval-link.v1:";

/// What an approval link authorises: one action on one approval by one approver, until
/// `expires_at`.
///
/// Serialised with short field names to keep links short. [`verify_link`] checks the MAC and the
/// expiry only; the caller must still check that the approval is pending, that `action` is one
/// it offers, that `approver` may answer it, and record `nonce` (or the decision, keyed on
/// approval and action) so the link works once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkClaims {
    #[serde(rename = "apv")]
    pub approval_id: String,
    #[serde(rename = "act")]
    pub action: String,
    #[serde(rename = "sub")]
    pub approver: String,
    /// Unix seconds; the link is refused from this second on.
    #[serde(rename = "exp")]
    pub expires_at: i64,
    #[serde(rename = "n")]
    pub nonce: String,
}

impl LinkClaims {
    /// Claims with a fresh random 128-bit nonce (base64url).
    pub fn new(
        approval_id: impl Into<String>,
        action: impl Into<String>,
        approver: impl Into<String>,
        expires_at: i64,
    ) -> Self {
        let mut nonce = [0u8; 16];
        rand::fill(nonce.as_mut_slice());
        Self {
            approval_id: approval_id.into(),
            action: action.into(),
            approver: approver.into(),
            expires_at,
            nonce: URL_SAFE_NO_PAD.encode(nonce),
        }
    }
}

fn link_mac(key: &[u8], payload_b64: &str) -> [u8; 32] {
    hmac_sha256(key, &[LINK_MAC_CONTEXT, payload_b64.as_bytes()])
}

/// A URL-safe token for `claims`: `base64url(JSON) + "." + base64url(HMAC-SHA256)`, unpadded.
///
/// The MAC covers the encoded first part as sent, so verification never re-serialises. Use a key
/// of at least 32 random bytes used only for approval links; an empty key produces tokens that
/// [`verify_link`] refuses.
pub fn sign_link(key: &[u8], claims: &LinkClaims) -> String {
    // Serialising a struct of strings and an integer cannot fail; fall back to an empty payload
    // (which no verifier accepts as claims) rather than panic.
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(json);
    let mac = URL_SAFE_NO_PAD.encode(link_mac(key, &payload));
    format!("{payload}.{mac}")
}

/// Check an approval-link token made by [`sign_link`] and return its claims.
///
/// Order: shape ([`SignatureError::Malformed`]), MAC in constant time before the payload is
/// parsed ([`SignatureError::Mismatch`]), then expiry: refused when `now_secs >= expires_at`
/// ([`SignatureError::Expired`]). An empty key is refused ([`SignatureError::BadSecret`]).
pub fn verify_link(key: &[u8], token: &str, now_secs: i64) -> Result<LinkClaims, SignatureError> {
    if key.is_empty() {
        return Err(SignatureError::BadSecret(
            "the approval-link key is empty; configure at least 32 random bytes".to_string(),
        ));
    }
    if token.len() > MAX_LINK_TOKEN_CHARS {
        return Err(SignatureError::Malformed("approval link token is too long"));
    }
    const SHAPE: &str = "approval link token must be two base64url parts joined by `.`";
    let (payload, mac_b64) = token
        .split_once('.')
        .ok_or(SignatureError::Malformed(SHAPE))?;
    if payload.is_empty() || mac_b64.contains('.') {
        return Err(SignatureError::Malformed(SHAPE));
    }
    let given = URL_SAFE_NO_PAD
        .decode(mac_b64)
        .map_err(|_| SignatureError::Malformed(SHAPE))?;
    if given.len() != 32 {
        return Err(SignatureError::Malformed(
            "approval link token is truncated or has extra characters",
        ));
    }
    if !bool::from(mac_eq(&link_mac(key, payload), &given)) {
        return Err(SignatureError::Mismatch);
    }
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| SignatureError::Malformed(SHAPE))?;
    let claims: LinkClaims = serde_json::from_slice(&json)
        .map_err(|_| SignatureError::Malformed("approval link claims are not valid"))?;
    if now_secs >= claims.expires_at {
        return Err(SignatureError::Expired);
    }
    Ok(claims)
}
