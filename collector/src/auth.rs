//! Who is sending: the bearer token of a request names its tenant.

use std::collections::HashMap;

use vigil_config::{CollectorConfig, TokenDigest};
use vigil_domain::tenant::TenantId;

use crate::error::IngestError;

/// Who sent a request: its tenant, and the token it came with (none for
/// the anonymous tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sender {
    pub(crate) tenant: TenantId,
    pub(crate) token: Option<TokenDigest>,
}

/// Tokens and the tenants they stand for.
#[derive(Debug)]
pub(crate) struct Auth {
    /// By the token's digest, so that a lookup's timing says nothing of a token.
    tokens: HashMap<TokenDigest, TenantId>,
    anonymous: Option<TenantId>,
}

impl Auth {
    pub(crate) fn new(config: &CollectorConfig) -> Self {
        let tokens = config
            .tenants
            .iter()
            .flat_map(|t| t.tokens.iter().map(|token| (token.digest(), t.id.clone())))
            .collect();
        Auth {
            tokens,
            anonymous: config.anonymous_tenant.clone(),
        }
    }

    /// The sender of a request with this `authorization` header value. No
    /// header goes to the anonymous tenant when there is one; a header with an
    /// unknown token is refused whatever the configuration.
    pub(crate) fn sender(&self, authorization: Option<&str>) -> Result<Sender, IngestError> {
        let Some(header) = authorization else {
            let tenant = self.anonymous.clone().ok_or_else(|| {
                IngestError::Unauthenticated(
                    "missing credentials: send the header `authorization: Bearer <token>`"
                        .to_owned(),
                )
            })?;
            return Ok(Sender {
                tenant,
                token: None,
            });
        };
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                IngestError::Unauthenticated(
                    "the authorization header must be `Bearer <token>`".to_owned(),
                )
            })?;
        let digest = TokenDigest::of(token);
        let tenant = self
            .tokens
            .get(&digest)
            .cloned()
            .ok_or_else(|| IngestError::Unauthenticated("unknown token".to_owned()))?;
        Ok(Sender {
            tenant,
            token: Some(digest),
        })
    }
}

#[cfg(test)]
mod tests {
    use vigil_config::{Secret, TenantConfig};

    use super::*;

    fn auth(anonymous: Option<&str>) -> Auth {
        Auth::new(&CollectorConfig {
            anonymous_tenant: anonymous.map(|a| TenantId::parse(a).unwrap()),
            tenants: vec![TenantConfig {
                id: TenantId::parse("acme").unwrap(),
                tokens: vec![
                    Secret::new("acme-0123456789ab"),
                    Secret::new("acme-rotated-0123"),
                ],
            }],
            ..CollectorConfig::default()
        })
    }

    #[test]
    fn tokens_name_their_tenant() {
        let auth = auth(None);
        for header in ["Bearer acme-0123456789ab", "bearer acme-rotated-0123"] {
            assert_eq!(auth.sender(Some(header)).unwrap().tenant.as_str(), "acme");
        }
    }

    #[test]
    fn missing_wrong_and_malformed_credentials_are_refused() {
        let auth = auth(None);
        let refused = |header| match auth.sender(header) {
            Err(IngestError::Unauthenticated(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(refused(None).starts_with("missing credentials"));
        assert_eq!(refused(Some("Bearer nope-0123456789ab")), "unknown token");
        assert!(refused(Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l")).contains("Bearer <token>"));
    }

    #[test]
    fn anonymous_ingest_only_where_configured_and_never_with_a_wrong_token() {
        let auth = auth(Some("public"));
        assert_eq!(auth.sender(None).unwrap().tenant.as_str(), "public");
        assert_eq!(auth.sender(None).unwrap().token, None);
        assert!(auth.sender(Some("Bearer wrong-0123456789")).is_err());
        assert_eq!(
            auth.sender(Some("Bearer acme-0123456789ab"))
                .unwrap()
                .tenant
                .as_str(),
            "acme"
        );
    }
}
