//! Authentication of inbound webhooks: a bearer token, a Standard
//! Webhooks signature (HMAC-SHA256 over `{id}.{timestamp}.{body}`), or a
//! plain hex HMAC-SHA256 of the body, optionally prefixed by a timestamp
//! (`{timestamp}:{body}`), the way Grafana's webhook contact point signs.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::WebhookAuth;

/// Why a request was not authenticated. `reason` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    pub reason: &'static str,
    pub message: String,
}

fn fail(reason: &'static str, message: impl Into<String>) -> AuthFailure {
    AuthFailure {
        reason,
        message: message.into(),
    }
}

/// Checks a webhook request; returns the sender's delivery id, if any.
/// `now` is Unix seconds, passed in so tests control the clock.
pub fn verify_webhook(
    auth: &WebhookAuth,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Option<String>, AuthFailure> {
    let delivery_id = header(headers, "webhook-id").map(str::to_string);
    match auth {
        WebhookAuth::None => Ok(delivery_id),
        WebhookAuth::Bearer(token) => {
            check_bearer(headers, token).map_err(|message| fail("unauthorized", message))?;
            Ok(delivery_id)
        }
        WebhookAuth::StandardWebhooks { keys, tolerance } => {
            let id = required(headers, "webhook-id")?;
            let timestamp = required(headers, "webhook-timestamp")?;
            let signatures = required(headers, "webhook-signature")?;
            check_timestamp("webhook-timestamp", timestamp, *tolerance, now)?;
            let signed_any = keys.iter().any(|key| {
                let expected = sign(key.expose_secret(), id, timestamp, body);
                signatures
                    .split_whitespace()
                    .filter_map(|s| s.strip_prefix("v1,"))
                    .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .any(|given| same_mac(&given, &expected))
            });
            if !signed_any {
                return Err(fail(
                    "bad_signature",
                    "no webhook-signature matches the body with any configured secret",
                ));
            }
            Ok(Some(id.to_string()))
        }
        WebhookAuth::HmacSha256 {
            key,
            headers: names,
            timestamp_header,
            tolerance,
        } => {
            let wanted = names.first().map_or("signature", String::as_str);
            let (found, given) = names
                .iter()
                .find_map(|name| header(headers, name).map(|v| (name, v)))
                .ok_or_else(|| {
                    fail(
                        "unsigned",
                        format!("missing {wanted} header (hex HMAC-SHA256 of the body)"),
                    )
                })?;
            let timestamp = match timestamp_header {
                Some(name) => {
                    let timestamp = required(headers, name)?;
                    check_timestamp(name, timestamp, *tolerance, now)?;
                    Some(timestamp)
                }
                None => None,
            };
            let expected = sign_hmac_sha256(key.expose_secret().as_bytes(), timestamp, body);
            if !hex::decode(given).is_ok_and(|given| same_mac(&given, &expected)) {
                return Err(fail(
                    "bad_signature",
                    match timestamp_header {
                        Some(name) => format!(
                            "{found} is not the hex HMAC-SHA256 of {name}, \":\" and the body with the configured secret"
                        ),
                        None => format!(
                            "{found} is not the hex HMAC-SHA256 of the body with the configured secret"
                        ),
                    },
                ));
            }
            Ok(delivery_id)
        }
    }
}

/// The `hmac-sha256` signature (Grafana's): HMAC-SHA256 of the body, or of
/// `{timestamp}:{body}` when the sender sends a timestamp.
pub fn sign_hmac_sha256(key: &[u8], timestamp: Option<&str>, body: &[u8]) -> Vec<u8> {
    match timestamp {
        Some(timestamp) => hmac_sha256(key, &[timestamp.as_bytes(), b":", body]),
        None => hmac_sha256(key, &[body]),
    }
}

/// The Standard Webhooks signature of a message.
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    hmac_sha256(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    )
}

/// HMAC-SHA256 of `parts` one after the other.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Compares a received MAC with the expected one in constant time.
fn same_mac(given: &[u8], expected: &[u8]) -> bool {
    bool::from(given.ct_eq(expected))
}

/// A header the scheme cannot do without; missing, the request is
/// `unsigned`.
fn required<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, AuthFailure> {
    header(headers, name).ok_or_else(|| fail("unsigned", format!("missing {name} header")))
}

/// Checks that the sender's timestamp, Unix seconds read from header
/// `name`, is within `tolerance` of `now`, either way.
fn check_timestamp(
    name: &str,
    timestamp: &str,
    tolerance: Duration,
    now: i64,
) -> Result<(), AuthFailure> {
    let sent: i64 = timestamp.parse().map_err(|_| {
        fail(
            "bad_signature",
            format!("{name} is not a Unix time in seconds"),
        )
    })?;
    let (away, tolerance) = (now.abs_diff(sent), tolerance.as_secs());
    if away > tolerance {
        return Err(fail(
            "stale_timestamp",
            format!(
                "{name} is {away}s away from this server's clock; at most {tolerance}s is accepted"
            ),
        ));
    }
    Ok(())
}

/// Checks `Authorization: Bearer <token>` in constant time (over digests,
/// so not even the token's length leaks).
pub fn check_bearer(headers: &HeaderMap, token: &SecretString) -> Result<(), String> {
    let given = header(headers, "authorization")
        .ok_or("missing Authorization header; send `Authorization: Bearer <token>`")?;
    let given = given
        .strip_prefix("Bearer ")
        .or_else(|| given.strip_prefix("bearer "))
        .ok_or("the Authorization header is not a bearer token")?;
    let a = Sha256::digest(given.trim().as_bytes());
    let b = Sha256::digest(token.expose_secret().as_bytes());
    if bool::from(a.as_slice().ct_eq(b.as_slice())) {
        Ok(())
    } else {
        Err("wrong bearer token".into())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use secrecy::SecretBox;

    use super::*;

    const NOW: i64 = 1_790_000_000;

    fn standard(keys: &[&[u8]]) -> WebhookAuth {
        WebhookAuth::StandardWebhooks {
            keys: keys
                .iter()
                .map(|k| SecretBox::new(Box::new(k.to_vec())))
                .collect(),
            tolerance: Duration::from_secs(300),
        }
    }

    fn signed(key: &[u8], id: &str, ts: i64, body: &[u8]) -> HeaderMap {
        let sig =
            base64::engine::general_purpose::STANDARD.encode(sign(key, id, &ts.to_string(), body));
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", format!("v1,{sig}").parse().unwrap());
        h
    }

    #[test]
    fn a_good_signature_passes_and_yields_the_delivery_id() {
        let key = b"0123456789abcdef0123";
        let h = signed(key, "msg_1", NOW, b"{}");
        assert_eq!(
            verify_webhook(&standard(&[key]), &h, b"{}", NOW),
            Ok(Some("msg_1".into()))
        );
    }

    #[test]
    fn a_changed_body_or_wrong_key_fails() {
        let key = b"0123456789abcdef0123";
        let h = signed(key, "msg_1", NOW, b"{}");
        assert_eq!(
            verify_webhook(&standard(&[key]), &h, b"{ }", NOW)
                .unwrap_err()
                .reason,
            "bad_signature"
        );
        assert_eq!(
            verify_webhook(&standard(&[b"another key 012345"]), &h, b"{}", NOW)
                .unwrap_err()
                .reason,
            "bad_signature"
        );
    }

    #[test]
    fn rotated_keys_and_several_signatures_are_accepted() {
        let old = b"old key 0123456789";
        let new = b"new key 0123456789";
        let mut h = signed(new, "msg_2", NOW, b"x");
        let old_sig = base64::engine::general_purpose::STANDARD.encode(sign(
            old,
            "msg_2",
            &NOW.to_string(),
            b"x",
        ));
        let both = format!("v1,{old_sig} {}", h["webhook-signature"].to_str().unwrap());
        h.insert("webhook-signature", both.parse().unwrap());
        assert!(verify_webhook(&standard(&[old]), &h, b"x", NOW).is_ok());
        assert!(verify_webhook(&standard(&[b"unrelated 0123456789", new]), &h, b"x", NOW).is_ok());
    }

    #[test]
    fn stale_or_future_timestamps_fail() {
        let key = b"0123456789abcdef0123";
        let h = signed(key, "msg_3", NOW - 301, b"{}");
        assert_eq!(
            verify_webhook(&standard(&[key]), &h, b"{}", NOW)
                .unwrap_err()
                .reason,
            "stale_timestamp"
        );
        let h = signed(key, "msg_3", NOW + 301, b"{}");
        assert_eq!(
            verify_webhook(&standard(&[key]), &h, b"{}", NOW)
                .unwrap_err()
                .reason,
            "stale_timestamp"
        );
        let h = signed(key, "msg_3", NOW - 299, b"{}");
        assert!(verify_webhook(&standard(&[key]), &h, b"{}", NOW).is_ok());
    }

    const GRAFANA_SECRET: &str = "grafana-shared-secret-0123";

    fn grafana(header: Option<&str>, timestamp_header: Option<&str>) -> WebhookAuth {
        WebhookAuth::HmacSha256 {
            key: SecretString::from(GRAFANA_SECRET),
            headers: match header {
                Some(h) => vec![h.into()],
                None => vec![
                    "X-Grafana-Alerting-Signature".into(),
                    "X-Grafana-Alert-Signature".into(),
                ],
            },
            timestamp_header: timestamp_header.map(str::to_string),
            tolerance: Duration::from_secs(300),
        }
    }

    fn hex_signature(timestamp: Option<&str>, body: &[u8]) -> String {
        hex::encode(sign_hmac_sha256(GRAFANA_SECRET.as_bytes(), timestamp, body))
    }

    #[test]
    fn the_hmac_sha256_scheme_is_grafanas() {
        // Computed independently with openssl: printf '%s' '{"a":1}' |
        // openssl dgst -sha256 -hmac grafana-shared-secret-0123, and the
        // same over '1790000000:{"a":1}'.
        assert_eq!(
            hex_signature(None, br#"{"a":1}"#),
            "f8fb685de8e5c50ba004082d3da0bd0915b6cdda5941953d91ffe3e20c36efe2"
        );
        assert_eq!(
            hex_signature(Some("1790000000"), br#"{"a":1}"#),
            "5668be0364131ee7d7f10f3d0cd88567bd5a3cda560cd3c7b632a6bcd3bbf6e6"
        );
    }

    #[test]
    fn an_hmac_sha256_signature_of_the_body_passes() {
        let body = br#"{"version":"1"}"#;
        let mut h = HeaderMap::new();
        h.insert(
            "X-Grafana-Alerting-Signature",
            hex_signature(None, body).parse().unwrap(),
        );
        assert_eq!(
            verify_webhook(&grafana(None, None), &h, body, NOW),
            Ok(None)
        );
        // Upper-case hex, and the header grafana/alerting falls back to.
        let mut h = HeaderMap::new();
        h.insert(
            "X-Grafana-Alert-Signature",
            hex_signature(None, body).to_uppercase().parse().unwrap(),
        );
        assert!(verify_webhook(&grafana(None, None), &h, body, NOW).is_ok());
        // A configured header is the only one read.
        assert_eq!(
            verify_webhook(&grafana(Some("X-Signature"), None), &h, body, NOW)
                .unwrap_err()
                .message,
            "missing X-Signature header (hex HMAC-SHA256 of the body)"
        );
    }

    #[test]
    fn an_hmac_sha256_signature_with_a_timestamp_signs_both() {
        let auth = grafana(None, Some("X-Grafana-Alerting-Timestamp"));
        let body = br#"{"version":"1"}"#;
        let ts = NOW.to_string();
        let mut h = HeaderMap::new();
        h.insert(
            "x-grafana-alerting-signature",
            hex_signature(Some(&ts), body).parse().unwrap(),
        );
        h.insert("x-grafana-alerting-timestamp", ts.parse().unwrap());
        assert_eq!(verify_webhook(&auth, &h, body, NOW), Ok(None));
        // The timestamp is part of what is signed.
        h.insert(
            "x-grafana-alerting-timestamp",
            (NOW + 1).to_string().parse().unwrap(),
        );
        assert_eq!(
            verify_webhook(&auth, &h, body, NOW).unwrap_err().message,
            "X-Grafana-Alerting-Signature is not the hex HMAC-SHA256 of X-Grafana-Alerting-Timestamp, \":\" and the body with the configured secret"
        );
        // A signature of the body alone is not enough once a timestamp is
        // expected, nor is one without the timestamp header.
        let mut h = HeaderMap::new();
        h.insert(
            "x-grafana-alerting-signature",
            hex_signature(None, body).parse().unwrap(),
        );
        assert_eq!(
            verify_webhook(&auth, &h, body, NOW).unwrap_err().message,
            "missing X-Grafana-Alerting-Timestamp header"
        );
        h.insert("x-grafana-alerting-timestamp", ts.parse().unwrap());
        assert_eq!(
            verify_webhook(&auth, &h, body, NOW).unwrap_err().reason,
            "bad_signature"
        );
    }

    #[test]
    fn a_wrong_or_missing_hmac_sha256_signature_fails() {
        let auth = grafana(None, None);
        let body = br#"{"version":"1"}"#;
        let mut h = HeaderMap::new();
        let missing = verify_webhook(&auth, &h, body, NOW).unwrap_err();
        assert_eq!(
            (missing.reason, missing.message.as_str()),
            (
                "unsigned",
                "missing X-Grafana-Alerting-Signature header (hex HMAC-SHA256 of the body)"
            )
        );
        h.insert(
            "X-Grafana-Alerting-Signature",
            hex_signature(None, body).parse().unwrap(),
        );
        let changed = verify_webhook(&auth, &h, br#"{"version":"2"}"#, NOW).unwrap_err();
        assert_eq!(
            (changed.reason, changed.message.as_str()),
            (
                "bad_signature",
                "X-Grafana-Alerting-Signature is not the hex HMAC-SHA256 of the body with the configured secret"
            )
        );
        let other_key = hex::encode(sign_hmac_sha256(b"another secret 0123456", None, body));
        h.insert("X-Grafana-Alerting-Signature", other_key.parse().unwrap());
        assert_eq!(
            verify_webhook(&auth, &h, body, NOW).unwrap_err().reason,
            "bad_signature"
        );
        for garbage in ["not hex", "sha256=00", "0", ""] {
            h.insert("X-Grafana-Alerting-Signature", garbage.parse().unwrap());
            assert!(verify_webhook(&auth, &h, body, NOW).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn stale_or_malformed_hmac_sha256_timestamps_fail() {
        let auth = grafana(None, Some("X-Grafana-Alerting-Timestamp"));
        let body = b"{}";
        let signed_at = |ts: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                "X-Grafana-Alerting-Signature",
                hex_signature(Some(ts), body).parse().unwrap(),
            );
            h.insert("X-Grafana-Alerting-Timestamp", ts.parse().unwrap());
            h
        };
        let stale =
            verify_webhook(&auth, &signed_at(&(NOW - 301).to_string()), body, NOW).unwrap_err();
        assert_eq!(
            (stale.reason, stale.message.as_str()),
            (
                "stale_timestamp",
                "X-Grafana-Alerting-Timestamp is 301s away from this server's clock; at most 300s is accepted"
            )
        );
        let future = verify_webhook(&auth, &signed_at(&(NOW + 301).to_string()), body, NOW);
        assert_eq!(future.unwrap_err().reason, "stale_timestamp");
        assert!(verify_webhook(&auth, &signed_at(&(NOW - 299).to_string()), body, NOW).is_ok());
        let ms = verify_webhook(&auth, &signed_at("1790000000.5"), body, NOW).unwrap_err();
        assert_eq!(
            (ms.reason, ms.message.as_str()),
            (
                "bad_signature",
                "X-Grafana-Alerting-Timestamp is not a Unix time in seconds"
            )
        );
    }

    #[test]
    fn bearer_tokens_compare_exactly() {
        let auth = WebhookAuth::Bearer(SecretString::from("s3cret-token"));
        let mut h = HeaderMap::new();
        assert_eq!(
            verify_webhook(&auth, &h, b"", NOW).unwrap_err().reason,
            "unauthorized"
        );
        h.insert("authorization", "Bearer s3cret-tokeN".parse().unwrap());
        assert!(verify_webhook(&auth, &h, b"", NOW).is_err());
        h.insert("authorization", "Bearer s3cret-token".parse().unwrap());
        assert!(verify_webhook(&auth, &h, b"", NOW).is_ok());
    }
}
