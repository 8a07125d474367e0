//! Webhook calls: a JSON body, signed with HMAC-SHA256 when the receiver
//! has a secret, with an idempotency key that stays the same over the
//! retries of one call; retried with exponential backoff and jitter on
//! transport errors, timeouts, 408, 429 and 5xx.
//!
//! Headers: `Content-Type: application/json`, `Idempotency-Key: <key>`,
//! `X-Vigil-Signature: t=<unix seconds>,v1=<hex of HMAC-SHA256(secret,
//! "<t>.<key>.<body>")>` (Stripe's scheme): the signature covers the time of
//! the attempt and the idempotency key, so a receiver can refuse a replayed
//! old call and trust the key it deduplicates by.

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use vigil_domain::model::hex;
use vigil_tls::client::Verification;

use crate::AlerterError;

/// The header that carries the body's signature.
pub const SIGNATURE_HEADER: &str = "x-vigil-signature";
/// The header that carries the idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// The first wait between attempts of a call; it doubles up to the most.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The wait after the `n`th failed try (from 1) of something retried:
/// `first` doubling up to `max`, with up to half of it added at random so
/// that retries of many callers do not fall in step. Attempts of one call
/// and rounds of a notification in the outbox wait alike.
pub(crate) fn backoff(first: Duration, n: u32, max: Duration) -> Duration {
    let wait = first
        .saturating_mul(1 << n.saturating_sub(1).min(20))
        .min(max);
    let jitter_ms = rand::rng().random_range(0..=wait.as_millis() as u64 / 2);
    wait + Duration::from_millis(jitter_ms)
}

/// One call to make.
#[derive(Debug, Clone)]
pub struct Call {
    pub url: String,
    pub method: reqwest::Method,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub secret: Option<String>,
    pub idempotency_key: String,
    pub timeout: Duration,
    pub max_attempts: u32,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub attempts: u32,
    /// The last status received, if any.
    pub status: Option<u16>,
    /// Why the last attempt failed; `None` when it succeeded.
    pub error: Option<String>,
}

/// `t=<time_s>,v1=<hex>`: HMAC-SHA256 with `secret` over
/// `<time_s>.<idempotency_key>.<body>`.
pub fn signature(secret: &str, time_s: u64, idempotency_key: &str, body: &[u8]) -> String {
    let signed = [
        time_s.to_string().as_bytes(),
        b".",
        idempotency_key.as_bytes(),
        b".",
        body,
    ]
    .concat();
    format!("t={time_s},v1={}", hmac_hex(secret, &signed))
}

/// Hex of HMAC-SHA256 over `message` with `secret`.
fn hmac_hex(secret: &str, message: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(message);
    hex(&mac.finalize().into_bytes())
}

fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// The client webhooks are sent with: `https://` receivers are trusted by
/// the system's roots and `ca_file`'s CAs. Redirects are not followed: a
/// receiver that answers 3xx has not accepted the call, and a page or an
/// action never goes to a host its rule did not name.
pub fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, AlerterError> {
    let tls = vigil_tls::client::config(ca_file, Verification::Verify)?;
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(tls)
        .build()?)
}

/// Makes `call`, retrying as the module says.
pub async fn send(client: &reqwest::Client, call: &Call) -> Outcome {
    let mut outcome = Outcome {
        attempts: 0,
        status: None,
        error: None,
    };
    loop {
        outcome.attempts += 1;
        let mut request = client
            .request(call.method.clone(), &call.url)
            .timeout(call.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_HEADER, &call.idempotency_key)
            .body(call.body.clone());
        if let Some(secret) = &call.secret {
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            request = request.header(
                SIGNATURE_HEADER,
                signature(secret, now_s, &call.idempotency_key, &call.body),
            );
        }
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        let retry = match request.send().await {
            Ok(response) => {
                let status = response.status();
                outcome.status = Some(status.as_u16());
                if status.is_success() {
                    outcome.error = None;
                    return outcome;
                }
                outcome.error = Some(format!("answered {status}"));
                retryable(status)
            }
            Err(error) => {
                outcome.error = Some(if error.is_timeout() {
                    format!("no answer within {} ms", call.timeout.as_millis())
                } else {
                    format!("request failed: {error}")
                });
                true
            }
        };
        if !retry || outcome.attempts >= call.max_attempts {
            return outcome;
        }
        tokio::time::sleep(backoff(BACKOFF_FIRST, outcome.attempts, BACKOFF_MAX)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver answering 307 to another host: the call is not accepted
    /// and the other host hears nothing.
    #[tokio::test]
    async fn redirects_are_not_followed() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};

        let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let elsewhere_address = elsewhere.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&hits);
        tokio::spawn(async move {
            let app = axum::Router::new().fallback(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            });
            axum::serve(elsewhere, app).await.unwrap();
        });
        let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver_address = receiver.local_addr().unwrap();
        tokio::spawn(async move {
            let to = format!("http://{elsewhere_address}/steal");
            let app = axum::Router::new().fallback(move || {
                let to = to.clone();
                async move { axum::response::Redirect::temporary(&to) }
            });
            axum::serve(receiver, app).await.unwrap();
        });
        let call = Call {
            method: reqwest::Method::POST,
            url: format!("http://{receiver_address}/hook"),
            body: b"{}".to_vec(),
            headers: Vec::new(),
            secret: None,
            idempotency_key: "k".to_owned(),
            timeout: Duration::from_secs(2),
            max_attempts: 1,
        };
        let outcome = send(&client(None).unwrap(), &call).await;
        assert_eq!(
            (outcome.status, outcome.error.as_deref()),
            (Some(307), Some("answered 307 Temporary Redirect"))
        );
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn signatures_are_hmac_sha256_over_time_key_and_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_hex("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            signature("Jefe", 1_700_000_000, "k-1", b"{}"),
            format!("t=1700000000,v1={}", hmac_hex("Jefe", b"1700000000.k-1.{}"))
        );
        assert_ne!(
            signature("Jefe", 1_700_000_000, "k-1", b"{}"),
            signature("Jefe", 1_700_000_001, "k-1", b"{}"),
            "the time is signed"
        );
    }
}
