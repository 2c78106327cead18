//! Signature verification and signing against the exact vectors in
//! `/work/shared/docs/test-vectors.md` (Slack v0, GitHub, Standard Webhooks v1.0.0) plus
//! approval links and round-trip properties.

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use flowgate_shared::signing::{
    self, LinkClaims, SignatureError, VerifiedWebhook, WebhookSecret, sign_github, sign_link,
    sign_slack, sign_standard, verify_github, verify_link, verify_slack, verify_standard,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Vectors (copied byte for byte from the doc; lengths asserted below)
// ---------------------------------------------------------------------------------------------

const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TS: i64 = 1531420618;
const SLACK_TS_TEXT: &str = "1531420618";
const S1_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
const S2_SIG: &str = "v0=377e8a7d08fe3e8f26a72bcd59e99924bb9d28ca45af6f019d6e6274d8334bc6";
const S3_SIG: &str = "v0=b415a2097abf800d7377ce16ee8024090bb4064fe02ac4953adcdfa3919e4fe9";
const S1_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const S2_JSON: &str = r#"{"type":"block_actions","user":{"id":"U2CERLKJA","username":"roadrunner","team_id":"T1DC2JH3J"},"api_app_id":"A0FLOWGATE","team":{"id":"T1DC2JH3J","domain":"testteamnow"},"container":{"type":"message","message_ts":"1531420600.000100","channel_id":"G8PSS9T3V","is_ephemeral":false},"trigger_id":"398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c","channel":{"id":"G8PSS9T3V","name":"foobar"},"response_url":"https://hooks.slack.com/actions/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN","actions":[{"type":"button","action_id":"approve","block_id":"approval-run0001-step4","value":"approve","action_ts":"1531420618.123456"}]}"#;
const S2_BODY: &str = "payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U2CERLKJA%22%2C%22username%22%3A%22roadrunner%22%2C%22team_id%22%3A%22T1DC2JH3J%22%7D%2C%22api_app_id%22%3A%22A0FLOWGATE%22%2C%22team%22%3A%7B%22id%22%3A%22T1DC2JH3J%22%2C%22domain%22%3A%22testteamnow%22%7D%2C%22container%22%3A%7B%22type%22%3A%22message%22%2C%22message_ts%22%3A%221531420600.000100%22%2C%22channel_id%22%3A%22G8PSS9T3V%22%2C%22is_ephemeral%22%3Afalse%7D%2C%22trigger_id%22%3A%22398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c%22%2C%22channel%22%3A%7B%22id%22%3A%22G8PSS9T3V%22%2C%22name%22%3A%22foobar%22%7D%2C%22response_url%22%3A%22https%3A%2F%2Fhooks.slack.com%2Factions%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN%22%2C%22actions%22%3A%5B%7B%22type%22%3A%22button%22%2C%22action_id%22%3A%22approve%22%2C%22block_id%22%3A%22approval-run0001-step4%22%2C%22value%22%3A%22approve%22%2C%22action_ts%22%3A%221531420618.123456%22%7D%5D%7D";
const S3_BODY: &str = "payload=%7B%22type%22%3A%22block_actions%22%2C%22actions%22%3A%5B%7B%22action_id%22%3A%22approve%22%2C%22value%22%3A%22run-0001%22%7D%5D%7D";
const S3_EVENT: &str = r#"{"version":"2.0","routeKey":"POST /slack/interactivity","rawPath":"/slack/interactivity",
 "headers":{"content-type":"application/x-www-form-urlencoded","x-slack-request-timestamp":"1531420618",
            "x-slack-signature":"v0=b415a2097abf800d7377ce16ee8024090bb4064fe02ac4953adcdfa3919e4fe9"},
 "isBase64Encoded":true,
 "body":"cGF5bG9hZD0lN0IlMjJ0eXBlJTIyJTNBJTIyYmxvY2tfYWN0aW9ucyUyMiUyQyUyMmFjdGlvbnMlMjIlM0ElNUIlN0IlMjJhY3Rpb25faWQlMjIlM0ElMjJhcHByb3ZlJTIyJTJDJTIydmFsdWUlMjIlM0ElMjJydW4tMDAwMSUyMiU3RCU1RCU3RA=="}"#;

const GITHUB_SECRET: &[u8] = b"It's a Secret to Everybody";
const G1_BODY: &[u8] = b"Hello, World!";
const G1_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

const W1_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const W2_SECRET: &str = "whsec_Zmxvd2dhdGUtcm90YXRpb24ta2V5LTAx";
const W_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const W_TS: i64 = 1614265330;
const W_BODY: &[u8] = br#"{"test": 2432232314}"#;
const W1_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
const W2_SIG: &str = "v1,v4FFLJAFbfBg8niHJE5wa7SfUA4wGb//T/rUB2DJO6w=";
const W2_HEADER: &str = "v1,v4FFLJAFbfBg8niHJE5wa7SfUA4wGb//T/rUB2DJO6w= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn slack_headers<'a>(ts: &'a str, sig: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("X-Slack-Request-Timestamp", ts),
        ("X-Slack-Signature", sig),
    ]
}

fn w1() -> WebhookSecret {
    WebhookSecret::parse(W1_SECRET).unwrap()
}

fn w2() -> WebhookSecret {
    WebhookSecret::parse(W2_SECRET).unwrap()
}

fn webhook_headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("webhook-id", id),
        ("webhook-timestamp", ts),
        ("webhook-signature", sig),
    ]
}

#[test]
fn vector_lengths_match_the_doc() {
    assert_eq!(S1_BODY.len(), 362);
    assert_eq!(S2_BODY.len(), 948);
    assert_eq!(S3_BODY.len(), 139);
    assert_eq!(G1_BODY.len(), 13);
    assert_eq!(W_BODY.len(), 20);
    assert_eq!(SLACK_SECRET.len(), 32);
}

// ---------------------------------------------------------------------------------------------
// Slack
// ---------------------------------------------------------------------------------------------

#[test]
fn s1_signs_and_verifies() {
    assert_eq!(
        sign_slack(SLACK_SECRET, SLACK_TS, S1_BODY.as_bytes()),
        S1_SIG
    );
    verify_slack(
        SLACK_SECRET,
        &slack_headers(SLACK_TS_TEXT, S1_SIG),
        S1_BODY.as_bytes(),
        SLACK_TS,
    )
    .unwrap();
}

#[test]
fn s1_replay_window_is_two_sided_300_seconds() {
    let headers = slack_headers(SLACK_TS_TEXT, S1_SIG);
    for (now, accept) in [
        (1531420618, true),
        (1531420918, true),
        (1531420318, true),
        (1531420919, false),
        (1531420317, false),
    ] {
        let result = verify_slack(SLACK_SECRET, &headers, S1_BODY.as_bytes(), now);
        if accept {
            assert_eq!(result, Ok(()), "now = {now}");
        } else {
            assert_eq!(
                result,
                Err(SignatureError::Stale {
                    skew_secs: now - SLACK_TS
                }),
                "now = {now}"
            );
        }
    }
}

#[test]
fn s1_single_changed_body_byte_is_rejected() {
    let tampered = S1_BODY.replace("&text=&", "&text=x&");
    assert_ne!(tampered, S1_BODY);
    let err = verify_slack(
        SLACK_SECRET,
        &slack_headers(SLACK_TS_TEXT, S1_SIG),
        tampered.as_bytes(),
        SLACK_TS,
    )
    .unwrap_err();
    assert_eq!(err, SignatureError::Mismatch);

    // Flipping one byte in place (same length) fails too.
    let mut flipped = S1_BODY.as_bytes().to_vec();
    flipped[100] ^= 0x01;
    assert_eq!(
        verify_slack(
            SLACK_SECRET,
            &slack_headers(SLACK_TS_TEXT, S1_SIG),
            &flipped,
            SLACK_TS
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn s1_with_timestamp_header_plus_one_is_a_mismatch() {
    let err = verify_slack(
        SLACK_SECRET,
        &slack_headers("1531420619", S1_SIG),
        S1_BODY.as_bytes(),
        SLACK_TS,
    )
    .unwrap_err();
    assert_eq!(err, SignatureError::Mismatch);
}

#[test]
fn s2_block_actions_verifies_over_raw_body_then_parses() {
    assert_eq!(
        sign_slack(SLACK_SECRET, SLACK_TS, S2_BODY.as_bytes()),
        S2_SIG
    );
    verify_slack(
        SLACK_SECRET,
        &slack_headers(SLACK_TS_TEXT, S2_SIG),
        S2_BODY.as_bytes(),
        SLACK_TS,
    )
    .unwrap();

    // Decoding the form gives exactly the JSON in the doc, with the expected fields.
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(S2_BODY.as_bytes()).unwrap();
    assert_eq!(form.len(), 1);
    assert_eq!(form[0].0, "payload");
    assert_eq!(form[0].1, S2_JSON);
    let v: serde_json::Value = serde_json::from_str(&form[0].1).unwrap();
    assert_eq!(v["type"], "block_actions");
    assert_eq!(v["user"]["id"], "U2CERLKJA");
    assert_eq!(v["team"]["id"], "T1DC2JH3J");
    assert_eq!(v["api_app_id"], "A0FLOWGATE");
    assert_eq!(v["channel"]["id"], "G8PSS9T3V");
    assert_eq!(v["container"]["message_ts"], "1531420600.000100");
    assert_eq!(v["actions"][0]["action_id"], "approve");
    assert_eq!(v["actions"][0]["block_id"], "approval-run0001-step4");
    assert_eq!(v["actions"][0]["value"], "approve");
    assert_eq!(v["actions"][0]["action_ts"], "1531420618.123456");
}

#[test]
fn s2_checked_against_url_decoded_json_is_rejected() {
    for body in [S2_JSON.to_string(), format!("payload={S2_JSON}")] {
        assert_eq!(
            verify_slack(
                SLACK_SECRET,
                &slack_headers(SLACK_TS_TEXT, S2_SIG),
                body.as_bytes(),
                SLACK_TS
            ),
            Err(SignatureError::Mismatch)
        );
    }
}

#[test]
fn s3_api_gateway_base64_body_is_decoded_before_verifying() {
    let event: serde_json::Value = serde_json::from_str(S3_EVENT).unwrap();
    assert_eq!(event["isBase64Encoded"], true);
    let headers: Vec<(String, String)> = event["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let body_text = event["body"].as_str().unwrap();
    let body = STANDARD.decode(body_text).unwrap();
    assert_eq!(body, S3_BODY.as_bytes());
    assert_eq!(sign_slack(SLACK_SECRET, SLACK_TS, &body), S3_SIG);

    // Lowercased header names (payload format 2.0) are found.
    verify_slack(SLACK_SECRET, &headers, &body, SLACK_TS).unwrap();

    // The base64 text is not what Slack signed.
    assert_eq!(
        verify_slack(SLACK_SECRET, &headers, body_text.as_bytes(), SLACK_TS),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn slack_missing_headers_are_rejected() {
    let body = S1_BODY.as_bytes();
    let only_sig = [("X-Slack-Signature", S1_SIG)];
    assert_eq!(
        verify_slack(SLACK_SECRET, &only_sig, body, SLACK_TS),
        Err(SignatureError::MissingHeader(signing::SLACK_TIMESTAMP))
    );
    let only_ts = [("X-Slack-Request-Timestamp", SLACK_TS_TEXT)];
    assert_eq!(
        verify_slack(SLACK_SECRET, &only_ts, body, SLACK_TS),
        Err(SignatureError::MissingHeader(signing::SLACK_SIGNATURE))
    );
    let none: [(&str, &str); 0] = [];
    assert!(matches!(
        verify_slack(SLACK_SECRET, &none, body, SLACK_TS),
        Err(SignatureError::MissingHeader(_))
    ));
}

#[test]
fn slack_duplicated_headers_are_rejected_even_when_identical() {
    let body = S1_BODY.as_bytes();
    let dup_sig = [
        ("X-Slack-Request-Timestamp", SLACK_TS_TEXT),
        ("X-Slack-Signature", S1_SIG),
        ("x-slack-signature", S1_SIG),
    ];
    assert_eq!(
        verify_slack(SLACK_SECRET, &dup_sig, body, SLACK_TS),
        Err(SignatureError::DuplicateHeader(signing::SLACK_SIGNATURE))
    );
    let dup_ts = [
        ("X-Slack-Request-Timestamp", SLACK_TS_TEXT),
        ("X-SLACK-REQUEST-TIMESTAMP", SLACK_TS_TEXT),
        ("X-Slack-Signature", S1_SIG),
    ];
    assert_eq!(
        verify_slack(SLACK_SECRET, &dup_ts, body, SLACK_TS),
        Err(SignatureError::DuplicateHeader(signing::SLACK_TIMESTAMP))
    );
}

#[test]
fn slack_signature_without_v0_prefix_is_rejected() {
    let bare = S1_SIG.strip_prefix("v0=").unwrap();
    let err = verify_slack(
        SLACK_SECRET,
        &slack_headers(SLACK_TS_TEXT, bare),
        S1_BODY.as_bytes(),
        SLACK_TS,
    )
    .unwrap_err();
    assert!(matches!(err, SignatureError::Malformed(_)), "{err:?}");

    for bad in [
        "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        "v0=a2114d57",
        "v0=zz114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        "",
    ] {
        assert!(
            matches!(
                verify_slack(
                    SLACK_SECRET,
                    &slack_headers(SLACK_TS_TEXT, bad),
                    S1_BODY.as_bytes(),
                    SLACK_TS
                ),
                Err(SignatureError::Malformed(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn slack_non_integer_timestamp_is_rejected() {
    for ts in [
        "",
        "abc",
        "1531420618.5",
        "-1531420618",
        "+1531420618",
        "1_531_420_618",
        "99999999999999999999",
    ] {
        assert_eq!(
            verify_slack(
                SLACK_SECRET,
                &slack_headers(ts, S1_SIG),
                S1_BODY.as_bytes(),
                SLACK_TS
            ),
            Err(SignatureError::BadTimestamp(signing::SLACK_TIMESTAMP)),
            "{ts:?}"
        );
    }
}

#[test]
fn slack_wrong_secret_is_a_mismatch() {
    assert_eq!(
        verify_slack(
            b"8f742231b10e8888abcd99yyyzzz85a6",
            &slack_headers(SLACK_TS_TEXT, S1_SIG),
            S1_BODY.as_bytes(),
            SLACK_TS
        ),
        Err(SignatureError::Mismatch)
    );
}

// ---------------------------------------------------------------------------------------------
// GitHub
// ---------------------------------------------------------------------------------------------

#[test]
fn g1_signs_and_verifies() {
    assert_eq!(sign_github(GITHUB_SECRET, G1_BODY), G1_SIG);
    verify_github(GITHUB_SECRET, &[("X-Hub-Signature-256", G1_SIG)], G1_BODY).unwrap();
    verify_github(GITHUB_SECRET, &[("x-hub-signature-256", G1_SIG)], G1_BODY).unwrap();
}

#[test]
fn g1_must_fail_cases() {
    let headers = [("X-Hub-Signature-256", G1_SIG)];
    assert_eq!(
        verify_github(GITHUB_SECRET, &headers, b"Hello, World!\n"),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_github(
            "It\u{2019}s a Secret to Everybody".as_bytes(),
            &headers,
            G1_BODY
        ),
        Err(SignatureError::Mismatch)
    );
    let bare = [(
        "X-Hub-Signature-256",
        G1_SIG.strip_prefix("sha256=").unwrap(),
    )];
    assert!(matches!(
        verify_github(GITHUB_SECRET, &bare, G1_BODY),
        Err(SignatureError::Malformed(_))
    ));
}

#[test]
fn github_missing_and_duplicate_headers_are_rejected() {
    // The legacy SHA-1 header does not count.
    let legacy = [(
        "X-Hub-Signature",
        "sha1=0000000000000000000000000000000000000000",
    )];
    assert_eq!(
        verify_github(GITHUB_SECRET, &legacy, G1_BODY),
        Err(SignatureError::MissingHeader(signing::GITHUB_SIGNATURE))
    );
    let dup = [
        ("X-Hub-Signature-256", G1_SIG),
        ("X-Hub-Signature-256", G1_SIG),
    ];
    assert_eq!(
        verify_github(GITHUB_SECRET, &dup, G1_BODY),
        Err(SignatureError::DuplicateHeader(signing::GITHUB_SIGNATURE))
    );
}

// ---------------------------------------------------------------------------------------------
// Standard Webhooks
// ---------------------------------------------------------------------------------------------

#[test]
fn secrets_parse_to_the_documented_keys() {
    assert_eq!(w1().key_len(), 24);
    assert_eq!(w2().key_len(), 24);
    assert_eq!(w1().expose(), W1_SECRET);
    assert_eq!(w2().expose(), W2_SECRET);
    assert_eq!(
        WebhookSecret::from_key(b"flowgate-rotation-key-01")
            .unwrap()
            .expose(),
        W2_SECRET
    );
    let parsed: WebhookSecret = format!("{W1_SECRET}\n").parse().unwrap();
    assert_eq!(parsed.expose(), W1_SECRET);
}

#[test]
fn w1_signs_and_verifies() {
    let ts = W_TS.to_string();
    assert_eq!(sign_standard(&[w1()], W_ID, W_TS, W_BODY), W1_SIG);
    let verified =
        verify_standard(&[w1()], &webhook_headers(W_ID, &ts, W1_SIG), W_BODY, W_TS).unwrap();
    assert_eq!(
        verified,
        VerifiedWebhook {
            id: W_ID.to_string(),
            timestamp: W_TS
        }
    );
}

#[test]
fn w2_dual_sign_emits_exactly_the_documented_header() {
    assert_eq!(sign_standard(&[w2()], W_ID, W_TS, W_BODY), W2_SIG);
    assert_eq!(sign_standard(&[w2(), w1()], W_ID, W_TS, W_BODY), W2_HEADER);
    assert_eq!(sign_standard(&[], W_ID, W_TS, W_BODY), "");
}

#[test]
fn w2_header_verifies_with_either_secret() {
    let ts = W_TS.to_string();
    let headers = webhook_headers(W_ID, &ts, W2_HEADER);
    for secrets in [vec![w1()], vec![w2()], vec![w1(), w2()], vec![w2(), w1()]] {
        verify_standard(&secrets, &headers, W_BODY, W_TS).unwrap();
    }
    // A receiver holding only an unrelated key rejects it.
    let other = WebhookSecret::generate();
    assert_eq!(
        verify_standard(&[other], &headers, W_BODY, W_TS),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn w2_body_with_space_removed_is_rejected() {
    let ts = W_TS.to_string();
    assert_eq!(
        verify_standard(
            &[w1(), w2()],
            &webhook_headers(W_ID, &ts, W2_HEADER),
            br#"{"test":2432232314}"#,
            W_TS
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn w2_timestamp_plus_one_with_pinned_clock_is_a_mismatch() {
    assert_eq!(
        verify_standard(
            &[w1(), w2()],
            &webhook_headers(W_ID, "1614265331", W2_HEADER),
            W_BODY,
            W_TS
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn standard_replay_window_is_two_sided_300_seconds() {
    let ts = W_TS.to_string();
    let headers = webhook_headers(W_ID, &ts, W2_HEADER);
    for delta in [0, 300, -300] {
        verify_standard(&[w1()], &headers, W_BODY, W_TS + delta).unwrap();
    }
    for delta in [301, -301] {
        assert_eq!(
            verify_standard(&[w1()], &headers, W_BODY, W_TS + delta),
            Err(SignatureError::Stale { skew_secs: delta })
        );
    }
}

#[test]
fn whsec_string_used_raw_as_key_does_not_interoperate() {
    let ts = W_TS.to_string();
    // Stripe-style: the whole `whsec_…` text as the HMAC key.
    let raw = WebhookSecret::from_key(W1_SECRET.as_bytes()).unwrap();
    let raw_sig = sign_standard(std::slice::from_ref(&raw), W_ID, W_TS, W_BODY);
    assert_ne!(raw_sig, W1_SIG);
    assert_eq!(
        verify_standard(&[w1()], &webhook_headers(W_ID, &ts, &raw_sig), W_BODY, W_TS),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_standard(&[raw], &webhook_headers(W_ID, &ts, W1_SIG), W_BODY, W_TS),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn only_v1a_entries_are_rejected_and_unknown_versions_ignored() {
    let ts = W_TS.to_string();
    let v1a_only = "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1a,v4FFLJAFbfBg8niHJE5wa7SfUA4wGb//T/rUB2DJO6w=";
    assert_eq!(
        verify_standard(&[w1()], &webhook_headers(W_ID, &ts, v1a_only), W_BODY, W_TS),
        Err(SignatureError::NoSupportedSignature)
    );
    // Unknown versions and junk next to a good v1 entry do not prevent a match.
    let mixed = format!("v2,abc v1a,xyz   v1,!!notbase64 {W1_SIG}");
    verify_standard(&[w1()], &webhook_headers(W_ID, &ts, &mixed), W_BODY, W_TS).unwrap();
}

#[test]
fn standard_header_problems_are_rejected() {
    let ts = W_TS.to_string();
    let secrets = [w1()];
    let full = webhook_headers(W_ID, &ts, W1_SIG);
    for missing in [
        signing::WEBHOOK_ID,
        signing::WEBHOOK_TIMESTAMP,
        signing::WEBHOOK_SIGNATURE,
    ] {
        let headers: Vec<_> = full
            .iter()
            .filter(|(n, _)| *n != missing)
            .cloned()
            .collect();
        assert_eq!(
            verify_standard(&secrets, &headers, W_BODY, W_TS),
            Err(SignatureError::MissingHeader(missing))
        );
        let mut dup = full.clone();
        dup.extend(full.iter().filter(|(n, _)| *n == missing).cloned());
        assert_eq!(
            verify_standard(&secrets, &dup, W_BODY, W_TS),
            Err(SignatureError::DuplicateHeader(missing))
        );
    }
    // Dots in id or timestamp would make `{id}.{ts}.{body}` ambiguous.
    let dotted_id = "msg.p5jXN8AQM9LWM0D4loKWxJek";
    let sig = sign_standard(&secrets, dotted_id, W_TS, W_BODY);
    assert!(matches!(
        verify_standard(
            &secrets,
            &webhook_headers(dotted_id, &ts, &sig),
            W_BODY,
            W_TS
        ),
        Err(SignatureError::Malformed(_))
    ));
    assert_eq!(
        verify_standard(
            &secrets,
            &webhook_headers(W_ID, "1614265330.0", W1_SIG),
            W_BODY,
            W_TS
        ),
        Err(SignatureError::BadTimestamp(signing::WEBHOOK_TIMESTAMP))
    );
    assert!(matches!(
        verify_standard(&[], &full, W_BODY, W_TS),
        Err(SignatureError::BadSecret(_))
    ));
}

#[test]
fn secret_parsing_rejects_bad_input() {
    // Too short: 23 bytes.
    let short = format!("whsec_{}", STANDARD.encode([7u8; 23]));
    let err = WebhookSecret::parse(&short).unwrap_err();
    assert!(matches!(err, SignatureError::BadSecret(_)));
    assert!(err.to_string().contains("23 bytes"), "{err}");
    // Too long: 513 bytes; 512 is fine.
    assert!(matches!(
        WebhookSecret::parse(&format!("whsec_{}", STANDARD.encode([7u8; 513]))),
        Err(SignatureError::BadSecret(_))
    ));
    assert_eq!(
        WebhookSecret::parse(&format!("whsec_{}", STANDARD.encode([7u8; 512])))
            .unwrap()
            .key_len(),
        512
    );
    // Not base64.
    assert!(matches!(
        WebhookSecret::parse("whsec_not*base64!at-all~~~~~~~~~~~~"),
        Err(SignatureError::BadSecret(_))
    ));
    // Missing prefix, and other vendors' prefixes.
    for text in [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "",
    ] {
        assert!(
            matches!(
                WebhookSecret::parse(text),
                Err(SignatureError::BadSecret(_))
            ),
            "{text:?}"
        );
    }
    // Messages never echo the secret.
    let err = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS*").unwrap_err();
    assert!(!err.to_string().contains("MfKQ9r8G"), "{err}");
}

#[test]
fn secret_debug_is_redacted_and_generate_is_random() {
    let secret = w1();
    let debug = format!("{secret:?}");
    assert!(!debug.contains("MfKQ9r8G"), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
    let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(!debug.contains(&format!("{key:?}")));

    let a = WebhookSecret::generate();
    let b = WebhookSecret::generate();
    assert_eq!(a.key_len(), 32);
    assert!(a.expose().starts_with("whsec_"));
    assert_ne!(a.expose(), b.expose());
    assert_eq!(
        WebhookSecret::parse(&a.expose()).unwrap().expose(),
        a.expose()
    );
    assert!(!format!("{a:?}").contains(&a.expose()["whsec_".len()..]));
}

// ---------------------------------------------------------------------------------------------
// Approval links
// ---------------------------------------------------------------------------------------------

const LINK_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const LINK_NOW: i64 = 1_700_000_000;

fn claims() -> LinkClaims {
    LinkClaims {
        approval_id: "run-0001/step-4".to_string(),
        action: "approve".to_string(),
        approver: "U2CERLKJA".to_string(),
        expires_at: LINK_NOW + 3600,
        nonce: "n-7f3a".to_string(),
    }
}

#[test]
fn link_round_trips_and_is_url_safe() {
    let token = sign_link(LINK_KEY, &claims());
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
        "{token}"
    );
    assert!(!token.contains('='));
    assert_eq!(token.matches('.').count(), 1);
    assert!(token.len() < 200, "{} chars", token.len());
    assert_eq!(verify_link(LINK_KEY, &token, LINK_NOW).unwrap(), claims());

    let fresh = LinkClaims::new("a1", "reject", "alice@example.com", LINK_NOW + 60);
    assert_eq!(fresh.nonce.len(), 22);
    assert_ne!(
        fresh.nonce,
        LinkClaims::new("a1", "reject", "alice@example.com", LINK_NOW + 60).nonce
    );
    let token = sign_link(LINK_KEY, &fresh);
    assert_eq!(verify_link(LINK_KEY, &token, LINK_NOW).unwrap(), fresh);
}

#[test]
fn link_with_tampered_claims_is_a_mismatch() {
    let token = sign_link(LINK_KEY, &claims());
    let (_, mac) = token.split_once('.').unwrap();
    for tamper in [
        |c: &mut LinkClaims| c.action = "reject".to_string(),
        |c: &mut LinkClaims| c.approver = "U0ATTACKER".to_string(),
        |c: &mut LinkClaims| c.approval_id = "run-0002/step-4".to_string(),
        |c: &mut LinkClaims| c.expires_at += 86_400,
    ] {
        let mut forged = claims();
        tamper(&mut forged);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            verify_link(LINK_KEY, &format!("{payload}.{mac}"), LINK_NOW),
            Err(SignatureError::Mismatch)
        );
    }
    // A single changed character in the payload part.
    let mut bytes = token.into_bytes();
    bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
    let token = String::from_utf8(bytes).unwrap();
    assert_eq!(
        verify_link(LINK_KEY, &token, LINK_NOW),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn link_with_wrong_key_is_a_mismatch() {
    let token = sign_link(LINK_KEY, &claims());
    assert_eq!(
        verify_link(b"fedcba9876543210fedcba9876543210", &token, LINK_NOW),
        Err(SignatureError::Mismatch)
    );
    assert!(matches!(
        verify_link(b"", &token, LINK_NOW),
        Err(SignatureError::BadSecret(_))
    ));
}

#[test]
fn link_expires_at_expires_at() {
    let c = claims();
    let token = sign_link(LINK_KEY, &c);
    verify_link(LINK_KEY, &token, c.expires_at - 1).unwrap();
    assert_eq!(
        verify_link(LINK_KEY, &token, c.expires_at),
        Err(SignatureError::Expired)
    );
    assert_eq!(
        verify_link(LINK_KEY, &token, c.expires_at + 1_000_000),
        Err(SignatureError::Expired)
    );
}

#[test]
fn truncated_or_malformed_link_is_rejected() {
    let token = sign_link(LINK_KEY, &claims());
    let dot = token.find('.').unwrap();
    for cut in [0, 1, dot / 2, dot, dot + 1, dot + 10, token.len() - 1] {
        let err = verify_link(LINK_KEY, &token[..cut], LINK_NOW).unwrap_err();
        assert!(
            matches!(err, SignatureError::Malformed(_)),
            "cut {cut}: {err:?}"
        );
    }
    for bad in [
        "".to_string(),
        "no-dot-here".to_string(),
        format!("{token}.extra"),
        format!(".{}", &token[dot + 1..]),
        format!("{token}A"),
        "a".repeat(5000),
    ] {
        let err = verify_link(LINK_KEY, &bad, LINK_NOW).unwrap_err();
        assert!(
            matches!(err, SignatureError::Malformed(_)),
            "{bad:.40}: {err:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn error_codes_are_distinct_snake_case_and_messages_hold_no_secrets() {
    let errors = [
        SignatureError::MissingHeader(signing::SLACK_SIGNATURE),
        SignatureError::DuplicateHeader(signing::SLACK_SIGNATURE),
        SignatureError::BadTimestamp(signing::SLACK_TIMESTAMP),
        SignatureError::Stale { skew_secs: 301 },
        SignatureError::Malformed("x"),
        SignatureError::Mismatch,
        SignatureError::NoSupportedSignature,
        SignatureError::BadSecret("y".to_string()),
        SignatureError::Expired,
    ];
    let codes: std::collections::BTreeSet<_> = errors.iter().map(|e| e.code()).collect();
    assert_eq!(codes.len(), errors.len());
    for code in codes {
        assert!(
            code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{code}"
        );
    }

    let err = verify_slack(
        SLACK_SECRET,
        &slack_headers(SLACK_TS_TEXT, S2_SIG),
        S1_BODY.as_bytes(),
        SLACK_TS,
    )
    .unwrap_err();
    let text = err.to_string();
    for leak in [
        "a2114d57",
        "377e8a7d",
        std::str::from_utf8(SLACK_SECRET).unwrap(),
    ] {
        assert!(!text.contains(leak), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn sign_then_verify_round_trips_and_any_flipped_byte_fails(
        body in proptest::collection::vec(any::<u8>(), 1..512),
        index in any::<prop::sample::Index>(),
        mask in 1u8..=255,
        offset in -300i64..=300,
    ) {
        let now = W_TS + offset;
        let mut flipped = body.clone();
        let i = index.index(body.len());
        flipped[i] ^= mask;

        // Slack
        let sig = sign_slack(SLACK_SECRET, W_TS, &body);
        let ts = W_TS.to_string();
        let headers = slack_headers(&ts, &sig);
        prop_assert_eq!(verify_slack(SLACK_SECRET, &headers, &body, now), Ok(()));
        prop_assert_eq!(
            verify_slack(SLACK_SECRET, &headers, &flipped, now),
            Err(SignatureError::Mismatch)
        );

        // GitHub
        let sig = sign_github(GITHUB_SECRET, &body);
        let headers = [("X-Hub-Signature-256", sig.as_str())];
        prop_assert_eq!(verify_github(GITHUB_SECRET, &headers, &body), Ok(()));
        prop_assert_eq!(
            verify_github(GITHUB_SECRET, &headers, &flipped),
            Err(SignatureError::Mismatch)
        );

        // Standard Webhooks, dual-signed
        let secrets = [w2(), w1()];
        let sig = sign_standard(&secrets, W_ID, W_TS, &body);
        let headers = webhook_headers(W_ID, &ts, &sig);
        prop_assert!(verify_standard(&[w1()], &headers, &body, now).is_ok());
        prop_assert!(verify_standard(&[w2()], &headers, &body, now).is_ok());
        prop_assert_eq!(
            verify_standard(&secrets, &headers, &flipped, now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn link_round_trips_for_arbitrary_claims(
        approval_id in ".{0,40}",
        action in "[a-z_]{1,16}",
        approver in ".{0,40}",
        ttl in 1i64..1_000_000,
    ) {
        let c = LinkClaims::new(approval_id, action, approver, LINK_NOW + ttl);
        let token = sign_link(LINK_KEY, &c);
        prop_assert_eq!(verify_link(LINK_KEY, &token, LINK_NOW), Ok(c));
    }
}
