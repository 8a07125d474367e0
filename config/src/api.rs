//! `[api]`: the dashboard API's listener, query limits and tokens.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use vigil_domain::tenant::TenantId;

use crate::{ConfigError, Secret, ServerTlsConfig, check_range};

/// The dashboard API: where it listens, who may read, and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// HTTP address; port 0 picks a free port.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
    /// A query running longer is stopped and answered with 422.
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// Most points (series × steps) one answer may hold; more is answered
    /// with 422.
    #[serde(default = "default_max_points")]
    pub max_points: usize,
    /// Bytes of merged rollups of closed windows kept between requests
    /// (a dashboard's refresh reads only the windows closed since); 0
    /// keeps none.
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: usize,
    /// Who may read: bearer tokens, each standing for a tenant and a role.
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
            tls: None,
            query_timeout_ms: default_query_timeout_ms(),
            max_points: default_max_points(),
            cache_bytes: default_cache_bytes(),
            tokens: Vec::new(),
        }
    }
}

/// One dashboard API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub token: Secret,
    pub tenant: TenantId,
    pub role: Role,
}

/// What a token may do. Each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads its tenant's data.
    Viewer,
    /// Also manages its tenant's silences.
    Editor,
    /// Also reads any tenant's data (the `tenant` parameter).
    Admin,
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

fn default_query_timeout_ms() -> u64 {
    10_000
}

fn default_max_points() -> usize {
    200_000
}

fn default_cache_bytes() -> usize {
    256 << 20
}

impl ApiConfig {
    /// Checks what types alone cannot.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let api = self;
        if let Some(tls) = &api.tls {
            tls.validate("api.tls")?;
        }
        check_range(
            "api.query_timeout_ms",
            api.query_timeout_ms,
            100..=600_000,
            " (10 minutes)",
        )?;
        check_range("api.max_points", api.max_points, 1_000..=10_000_000, "")?;
        check_range(
            "api.cache_bytes",
            api.cache_bytes,
            0..=64 << 30,
            " (64 GiB)",
        )?;
        let mut seen = std::collections::HashSet::new();
        for (i, token) in api.tokens.iter().enumerate() {
            let key = format!("api.tokens[{i}].token");
            if token.token.expose().len() < 16 {
                return Err(ConfigError::invalid(
                    &key,
                    format!(
                        "tokens must be at least 16 characters (tenant {})",
                        token.tenant
                    ),
                ));
            }
            if !seen.insert(token.token.expose()) {
                return Err(ConfigError::invalid(&key, "this token is listed twice"));
            }
        }
        Ok(())
    }
}
