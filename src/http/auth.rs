//! Authentication of inbound webhooks: a bearer token, or a Standard
//! Webhooks signature (HMAC-SHA256 over `{id}.{timestamp}.{body}`).

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
            let id = header(headers, "webhook-id")
                .ok_or_else(|| fail("unsigned", "missing webhook-id header"))?;
            let timestamp = header(headers, "webhook-timestamp")
                .ok_or_else(|| fail("unsigned", "missing webhook-timestamp header"))?;
            let signatures = header(headers, "webhook-signature")
                .ok_or_else(|| fail("unsigned", "missing webhook-signature header"))?;
            let sent: i64 = timestamp.parse().map_err(|_| {
                fail(
                    "bad_signature",
                    "webhook-timestamp is not a Unix time in seconds",
                )
            })?;
            if now.abs_diff(sent) > tolerance.as_secs() {
                return Err(fail(
                    "stale_timestamp",
                    format!(
                        "webhook-timestamp is {}s away from this server's clock; at most {}s is accepted",
                        now.abs_diff(sent),
                        tolerance.as_secs()
                    ),
                ));
            }
            let signed_any = keys.iter().any(|key| {
                let expected = sign(key.expose_secret(), id, timestamp, body);
                signatures
                    .split_whitespace()
                    .filter_map(|s| s.strip_prefix("v1,"))
                    .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .any(|given| bool::from(given.ct_eq(&expected)))
            });
            if !signed_any {
                return Err(fail(
                    "bad_signature",
                    "no webhook-signature matches the body with any configured secret",
                ));
            }
            Ok(Some(id.to_string()))
        }
    }
}

/// The Standard Webhooks signature of a message.
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
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
    use std::time::Duration;

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
