//! Who is asking: a bearer token stands for a tenant and a role; the tenant
//! decides which data a request sees.

use std::collections::HashMap;

use vigil_config::{ApiConfig, Role, TokenDigest};
use vigil_domain::tenant::TenantId;

use crate::error::{ApiError, BadParameter};

/// The tenant a request reads and the role of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub role: Role,
}

/// Tokens and what they stand for.
#[derive(Debug)]
pub struct Auth {
    /// By the token's digest, so that a lookup's timing says nothing of a token.
    tokens: HashMap<TokenDigest, Caller>,
}

impl Auth {
    pub fn new(config: &ApiConfig) -> Self {
        let tokens = config
            .tokens
            .iter()
            .map(|t| {
                let caller = Caller {
                    tenant: t.tenant.clone(),
                    role: t.role,
                };
                (t.token.digest(), caller)
            })
            .collect();
        Auth { tokens }
    }

    /// The caller of a request with this `authorization` header, reading
    /// `tenant` when given: its own, or any for an admin.
    pub fn caller(
        &self,
        authorization: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Caller, ApiError> {
        let header = authorization.ok_or(ApiError::Unauthenticated(
            "missing credentials: send the header `Authorization: Bearer <token>`",
        ))?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(ApiError::Unauthenticated(
                "the authorization header must be `Bearer <token>`",
            ))?;
        let mut caller = self
            .tokens
            .get(&TokenDigest::of(token))
            .cloned()
            .ok_or(ApiError::Unauthenticated("unknown token"))?;
        if let Some(wanted) = tenant {
            let wanted =
                TenantId::parse(wanted).map_err(|e| BadParameter::new("tenant", e.to_string()))?;
            if wanted != caller.tenant {
                if caller.role != Role::Admin {
                    return Err(ApiError::Forbidden(format!(
                        "this token reads tenant {} only; another tenant needs an admin token",
                        caller.tenant
                    )));
                }
                caller.tenant = wanted;
            }
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use vigil_config::{ApiToken, Secret};

    use super::*;

    fn auth() -> Auth {
        let token = |secret: &str, tenant: &str, role| ApiToken {
            token: Secret::new(secret),
            tenant: TenantId::parse(tenant).unwrap(),
            role,
        };
        Auth::new(&ApiConfig {
            tokens: vec![
                token("viewer-token-0123456789", "acme", Role::Viewer),
                token("admin-token-0123456789", "ops", Role::Admin),
            ],
            ..ApiConfig::default()
        })
    }

    #[test]
    fn a_token_reads_its_tenant_and_only_an_admin_reads_others() {
        let auth = auth();
        let viewer = auth
            .caller(Some("Bearer viewer-token-0123456789"), None)
            .unwrap();
        assert_eq!(viewer.tenant.as_str(), "acme");
        assert_eq!(viewer.role, Role::Viewer);
        assert_eq!(
            auth.caller(Some("bearer viewer-token-0123456789"), Some("acme"))
                .unwrap(),
            viewer
        );
        let refused = auth
            .caller(Some("Bearer viewer-token-0123456789"), Some("other"))
            .unwrap_err();
        assert_eq!(refused.code(), "forbidden");
        let admin = auth
            .caller(Some("Bearer admin-token-0123456789"), Some("acme"))
            .unwrap();
        assert_eq!(admin.tenant.as_str(), "acme");
        assert_eq!(admin.role, Role::Admin);
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_refused() {
        let auth = auth();
        for header in [None, Some("viewer-token-0123456789"), Some("Bearer nope")] {
            let error = auth.caller(header, None).unwrap_err();
            assert_eq!(error.code(), "unauthenticated", "{header:?}");
        }
        let error = auth
            .caller(Some("Bearer admin-token-0123456789"), Some("Bad Tenant!"))
            .unwrap_err();
        assert_eq!(error.code(), "bad_parameter");
    }
}
