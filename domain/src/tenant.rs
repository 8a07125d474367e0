//! `TenantId`: who data belongs to. Parsed at the edge, so everything past it
//! can put the id in a bus key, a topic or a query without escaping.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A tenant id: 1 to 64 characters of lower-case ASCII letters, digits, `_`
/// and `-`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

/// Why a string is not a tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid tenant id {0:?}: use 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
)]
pub struct InvalidTenantId(pub String);

impl TenantId {
    pub fn parse(id: &str) -> Result<Self, InvalidTenantId> {
        let valid_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        let starts_well = id
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if starts_well && id.len() <= 64 && id.chars().all(valid_char) {
            Ok(TenantId(id.to_owned()))
        } else {
            Err(InvalidTenantId(id.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = InvalidTenantId;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        TenantId::parse(&id)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_ids_parse() {
        for good in ["acme", "a", "team-7_payments", &"x".repeat(64)] {
            assert_eq!(TenantId::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "Acme", "-acme", "a/b", "a b", "é", &"x".repeat(65)] {
            assert_eq!(TenantId::parse(bad), Err(InvalidTenantId(bad.to_owned())));
        }
    }
}
