//! Fuzz target bodies. Each takes arbitrary bytes and must never panic; where the input is
//! accepted, it also checks a property the accepting code promises (a valid definition
//! re-parses to itself, a signature made with a secret verifies and one changed byte does
//! not, a refused request body is a 4xx).
//!
//! The bodies live in this library so they run two ways: under libFuzzer (`cargo fuzz run
//! <target> --features libfuzzer`, binaries in `fuzz_targets/`), and in the ordinary test suite,
//! which replays every file of the committed corpora (`fuzz/corpus/<target>/`) through them.

use flowgate_api::body::parse_json;
use flowgate_shared::api::{
    CancelRequest, CreateWebhookRequest, DecisionRequest, MessageRequest, RetryRequest,
    RollbackRequest, StartRunRequest,
};
use flowgate_shared::definition::{parse_definition, parse_definition_value, validate};
use flowgate_shared::signing::{
    self, GITHUB_SIGNATURE, SLACK_SIGNATURE, SLACK_TIMESTAMP, WEBHOOK_ID, WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP, WebhookSecret,
};
use flowgate_shared::slack::interaction::{
    parse_decision_metadata, parse_interaction, parse_payload,
};

/// A target body.
pub type Target = fn(&[u8]);

/// Every target, by name (the corpus directory names).
pub const TARGETS: [(&str, Target); 4] = [
    ("definition", definition),
    ("slack_payload", slack_payload),
    ("signatures", signatures),
    ("api_bodies", api_bodies),
];

/// Workflow definitions (YAML or JSON text): parsing and validation report problems, never
/// panic; an accepted definition has no validation problems and survives a round trip through
/// its JSON form unchanged (what storing and reading it back does).
pub fn definition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_definition(text) {
        Ok(def) => {
            let problems = validate(&def);
            assert!(problems.is_empty(), "accepted with problems: {problems:?}");
            let value = serde_json::to_value(&def).expect("a definition serialises");
            let again = parse_definition_value(&value).expect("a stored definition re-parses");
            assert_eq!(again, def, "the JSON round trip changed the definition");
        }
        Err(errors) => {
            assert!(
                !errors.problems().is_empty(),
                "refused without saying why: {text:?}"
            );
        }
    }
}

/// Slack interactivity bodies (a form with a JSON `payload`), the payload JSON itself, and the
/// decision modal's private metadata.
pub fn slack_payload(data: &[u8]) {
    let _ = parse_interaction(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_payload(text);
        let _ = parse_decision_metadata(text);
    }
}

/// Splits fuzz input into the fields a signed request has.
struct Parts<'a> {
    secret: &'a [u8],
    header: &'a str,
    body: &'a [u8],
    stamp: i64,
}

fn parts(data: &[u8]) -> Parts<'_> {
    let (head, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let split = head.len().min(32);
    let (secret, header) = head.split_at(split);
    let stamp = body.iter().take(8).fold(0i64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(i64::from(*b))
    });
    Parts {
        secret,
        header: std::str::from_utf8(header).unwrap_or(""),
        body,
        stamp: 1_700_000_000 + stamp.rem_euclid(1_000),
    }
}

/// Signature verification (Slack, GitHub, Standard Webhooks, approval links) on arbitrary
/// headers and bodies never panics and never accepts a forgery; what is signed with a secret
/// verifies, and flipping one byte of the body makes it fail.
pub fn signatures(data: &[u8]) {
    let p = parts(data);
    let now = p.stamp;

    // Arbitrary header values are refused (a random value matching is a forgery).
    let slack_headers = [(SLACK_TIMESTAMP, "1700000000"), (SLACK_SIGNATURE, p.header)];
    assert!(signing::verify_slack(p.secret, &slack_headers, p.body, 1_700_000_000).is_err());
    assert!(signing::verify_github(p.secret, &[(GITHUB_SIGNATURE, p.header)], p.body).is_err());
    let _ = signing::verify_link(p.secret, p.header, now);
    let _ = WebhookSecret::parse(p.header);

    // Signed properly, it verifies; one flipped byte breaks it.
    let slack = signing::sign_slack(p.secret, now, p.body);
    let stamp = now.to_string();
    let headers = [
        (SLACK_TIMESTAMP, stamp.as_str()),
        (SLACK_SIGNATURE, slack.as_str()),
    ];
    assert!(signing::verify_slack(p.secret, &headers, p.body, now).is_ok());
    let github = signing::sign_github(p.secret, p.body);
    assert!(
        signing::verify_github(p.secret, &[(GITHUB_SIGNATURE, github.as_str())], p.body).is_ok()
    );
    let secret = WebhookSecret::from_key(if p.secret.is_empty() { b"k" } else { p.secret });
    if let Ok(secret) = secret {
        let id = "msg_fuzz";
        let signature = signing::sign_standard(std::slice::from_ref(&secret), id, now, p.body);
        let headers = [
            (WEBHOOK_ID, id),
            (WEBHOOK_TIMESTAMP, stamp.as_str()),
            (WEBHOOK_SIGNATURE, signature.as_str()),
        ];
        assert!(
            signing::verify_standard(std::slice::from_ref(&secret), &headers, p.body, now).is_ok()
        );
        if !p.body.is_empty() {
            let mut changed = p.body.to_vec();
            changed[0] ^= 1;
            assert!(
                signing::verify_standard(std::slice::from_ref(&secret), &headers, &changed, now)
                    .is_err()
            );
        }
    }
    if !p.body.is_empty() {
        let mut changed = p.body.to_vec();
        let last = changed.len() - 1;
        changed[last] ^= 0x80;
        assert!(signing::verify_slack(p.secret, &headers, &changed, now).is_err());
        assert!(
            signing::verify_github(p.secret, &[(GITHUB_SIGNATURE, github.as_str())], &changed)
                .is_err()
        );
    }
}

/// JSON request bodies of the API, read the way its handlers read them: the first byte picks
/// the request type, the rest is the body. Whatever is refused is a 4xx.
pub fn api_bodies(data: &[u8]) {
    let Some((kind, body)) = data.split_first() else {
        return;
    };
    let refused = match kind % 7 {
        0 => parse_json::<StartRunRequest>(body).err(),
        1 => parse_json::<DecisionRequest>(body).err(),
        2 => parse_json::<CancelRequest>(body).err(),
        3 => parse_json::<MessageRequest>(body).err(),
        4 => parse_json::<RetryRequest>(body).err(),
        5 => parse_json::<RollbackRequest>(body).err(),
        _ => parse_json::<CreateWebhookRequest>(body).err(),
    };
    if let Some(e) = refused {
        assert!(
            e.status.is_client_error(),
            "a bad body must be the client's error, got {} {}",
            e.status,
            e.code
        );
    }
}
