//! Vigil's configuration: defaults, then a TOML file, then `VIGIL_*`
//! environment variables, parsed into types that reject unknown keys and
//! checked by [`Config::validate`], whose messages name the key at fault.
//!
//! An environment variable `VIGIL_A__B__C=value` sets the key `a.b.c`: the
//! path is split on double underscores and lower-cased. The value is read as a
//! TOML value when it is one (`8`, `true`, `["a", "b"]`, `"quoted"`), and as a
//! string otherwise (`kafka`, `127.0.0.1:9092`). Variables without a double
//! underscore (`VIGIL_CONFIG`, `VIGIL_LOG`) belong to the binary, not here.
//!
//! One file per section, each with its struct, its defaults and its
//! `validate()`: `bus.rs`, `collector.rs`, `store.rs`, `aggregator.rs`,
//! `api.rs`, `slo.rs`, `synthetic.rs`, `alerter.rs`, `canary.rs`; `tls.rs` for
//! the TLS of listeners and the CA files of outgoing connections. Ranges are
//! checked by one helper, [`check_range`], so every message reads alike.

mod aggregator;
mod alerter;
mod api;
mod bus;
mod canary;
mod collector;
mod slo;
mod store;
mod synthetic;
mod tls;

use std::fmt::Display;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use aggregator::AggregatorConfig;
pub use alerter::AlerterConfig;
pub use api::{ApiConfig, ApiToken, Role};
pub use bus::{
    BusConfig, BusKind, Compression, EmbeddedBusConfig, Fsync, KafkaBusConfig, SaslConfig,
    SaslMechanism, SecurityProtocol,
};
pub use canary::CanaryConfig;
pub use collector::{CollectorConfig, LimitsConfig, TenantConfig};
pub use slo::{Sli, SloConfig};
pub use store::{ClickHouseStoreConfig, SqliteStoreConfig, StoreConfig, StoreKind};
pub use synthetic::SyntheticConfig;
pub use tls::ServerTlsConfig;

/// Prefix of every environment variable that overrides a configuration key.
pub const ENV_PREFIX: &str = "VIGIL_";
const ENV_SEPARATOR: &str = "__";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The whole configuration of a Vigil process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The message bus between components.
    #[serde(default)]
    pub bus: BusConfig,
    /// The ingest front door.
    #[serde(default)]
    pub collector: CollectorConfig,
    /// Where rollups, raw spans and the series catalogue are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Bus to windows to store.
    #[serde(default)]
    pub aggregator: AggregatorConfig,
    /// The dashboard API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Service level objectives, reported by `GET /api/v1/slo`.
    #[serde(default)]
    pub slos: Vec<SloConfig>,
    /// The synthetic prober.
    #[serde(default)]
    pub synthetic: SyntheticConfig,
    /// Rules, alerts, notifications and remediation.
    #[serde(default)]
    pub alerter: AlerterConfig,
    /// How gray releases are judged (`GET /api/v1/releases/{service}/health`).
    #[serde(default)]
    pub canary: CanaryConfig,
}

/// A secret value: never shown by `Debug` or when the configuration is printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the secret, to look a presented token up by: equal
    /// digests compare in time that tells nothing of the secret's bytes.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(&self.0)
    }
}

/// The SHA-256 of a bearer token: what token tables are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        use sha2::Digest as _;
        TokenDigest(sha2::Sha256::digest(token.as_bytes()).into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // An empty secret (no password) hides nothing and must load back.
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl Config {
    /// Loads defaults, then the file at `path` if any, then the `VIGIL_*`
    /// variables of this process's environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = path
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|text| (path.display().to_string(), text))
                    .map_err(|source| ConfigError::Read {
                        path: path.to_owned(),
                        source,
                    })
            })
            .transpose()?;
        let file = file
            .as_ref()
            .map(|(origin, text)| (origin.as_str(), text.as_str()));
        Config::from_sources(file, std::env::vars())
    }

    /// Builds a configuration from a TOML text (`(origin, text)`, origin naming
    /// it in errors) and environment variables, and validates it.
    pub fn from_sources(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some((origin, text)) => {
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        origin: origin.to_owned(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(var, _)| var.starts_with(ENV_PREFIX) && var.contains(ENV_SEPARATOR))
            .collect();
        overrides.sort();
        for (var, value) in overrides {
            apply_override(&mut table, &var, &value)?;
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::invalid(&e.path().to_string(), e.inner().message()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bus.validate()?;
        self.collector.validate()?;
        self.store.validate()?;
        self.aggregator.validate()?;
        self.api.validate()?;
        slo::validate(&self.slos)?;
        self.synthetic.validate()?;
        self.alerter.validate()?;
        self.canary.validate()
    }

    /// The configuration as TOML, every key with its effective value.
    pub fn to_toml(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// `Ok` when `value` lies in `range`; otherwise an error naming `key` and the
/// range, e.g. "must be between 1 and 600000 (10 minutes), got 0". `gloss`
/// follows the bounds (`" (10 minutes)"`, `" days"`, or "").
pub(crate) fn check_range<T: PartialOrd + Display>(
    key: &str,
    value: T,
    range: impl RangeBounds<T>,
    gloss: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    let allowed = match (range.start_bound(), range.end_bound()) {
        (Bound::Included(min), Bound::Included(max)) => format!("between {min} and {max}"),
        (Bound::Excluded(min), Bound::Excluded(max)) => format!("above {min} and below {max}"),
        (Bound::Included(min), _) => format!("at least {min}"),
        (Bound::Excluded(min), _) => format!("above {min}"),
        (_, Bound::Included(max)) => format!("at most {max}"),
        (_, Bound::Excluded(max)) => format!("below {max}"),
        (Bound::Unbounded, Bound::Unbounded) => "anything".to_owned(),
    };
    Err(ConfigError::invalid(
        key,
        format!("must be {allowed}{gloss}, got {value}"),
    ))
}

/// How often the prober and the alerter look for changed files, ms.
pub(crate) fn default_watch_interval_ms() -> u64 {
    2_000
}

/// Sets the key named by `VIGIL_A__B__C` in `table`.
fn apply_override(table: &mut toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let env_error = |message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split(ENV_SEPARATOR)
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(env_error(
            "empty key segment; write VIGIL_SECTION__KEY".to_owned(),
        ));
    }
    let (last, parents) = path.split_last().unwrap_or((&path[0], &[]));
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            env_error(format!(
                "{} is a value, not a section",
                path[..=depth].join(".")
            ))
        })?;
    }
    current.insert(last.clone(), parse_env_value(raw));
    Ok(())
}

/// A TOML value when `raw` is one, else the string itself.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("value = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::tenant::TenantId;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(file: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_sources(Some(("vigil.toml", file)), env(vars))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = Config::from_sources(None, env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.bus.kind, BusKind::Embedded);
        assert_eq!(config.bus.partitions, 8);
        assert_eq!(config.bus.kafka.brokers, "127.0.0.1:9092");
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let file = r#"
            [bus]
            kind = "kafka"
            partitions = 4
            [bus.kafka]
            brokers = "k1:9092,k2:9092"
        "#;
        let config = load(
            file,
            &[
                ("VIGIL_BUS__PARTITIONS", "16"),
                ("VIGIL_BUS__KAFKA__COMPRESSION", "gzip"),
                ("VIGIL_BUS__EMBEDDED__MAX_BYTES_PER_TOPIC", "2097152"),
                ("VIGIL_CONFIG", "ignored.toml"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        assert_eq!(config.bus.kind, BusKind::Kafka);
        assert_eq!(config.bus.partitions, 16);
        assert_eq!(config.bus.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(config.bus.kafka.compression, Compression::Gzip);
        assert_eq!(config.bus.embedded.max_bytes_per_topic, 2_097_152);
        assert_eq!(config.bus.publish_timeout_ms, 5_000);
    }

    #[test]
    fn environment_values_that_are_not_toml_are_strings() {
        let config = load("", &[("VIGIL_BUS__KAFKA__BROKERS", "10.1.2.3:9093")]).unwrap();
        assert_eq!(config.bus.kafka.brokers, "10.1.2.3:9093");
        let config = load("", &[("VIGIL_BUS__KAFKA__CLIENT_ID", "\"1234\"")]).unwrap();
        assert_eq!(config.bus.kafka.client_id, "1234");
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = load("[bus]\npartitons = 3\n", &[]).unwrap_err().to_string();
        assert_eq!(
            error,
            "bus.partitons: unknown field `partitons`, expected one of `kind`, `partitions`, \
             `publish_timeout_ms`, `topic_prefix`, `embedded`, `kafka`"
        );

        let error = load("", &[("VIGIL_BUS__KAFKA__BROKER", "x:1")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("bus.kafka.broker: unknown field `broker`"),
            "{error}"
        );

        let error = load("[storage]\n", &[]).unwrap_err().to_string();
        assert!(error.contains("unknown field `storage`"), "{error}");
    }

    #[test]
    fn wrong_types_and_enum_values_are_named() {
        let error = load("[bus]\nkind = \"rabbitmq\"\n", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "bus.kind: unknown variant `rabbitmq`, expected `embedded` or `kafka`"
        );

        let error = load("", &[("VIGIL_BUS__PARTITIONS", "many")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("bus.partitions: invalid type: string"),
            "{error}"
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let error = load("[bus\n", &[]).unwrap_err().to_string();
        assert!(error.starts_with("vigil.toml: "), "{error}");
    }

    #[test]
    fn validate_names_the_key_and_the_allowed_values() {
        type Vars = &'static [(&'static str, &'static str)];
        let cases: [(&str, Vars, &str); 9] = [
            (
                "[bus]\npartitions = 0",
                &[],
                "bus.partitions: must be between 1 and 1024, got 0",
            ),
            (
                "[bus]\npublish_timeout_ms = 0",
                &[],
                "bus.publish_timeout_ms: must be between 1 and 600000 (10 minutes), got 0",
            ),
            (
                "[bus.embedded]\nmax_bytes_per_topic = 10",
                &[],
                "bus.embedded.max_bytes_per_topic: must be at least 1048576 (1 MiB), got 10",
            ),
            (
                "[bus]\nkind = \"kafka\"\n[bus.kafka]\nbrokers = \"k1:9092,k2\"",
                &[],
                "bus.kafka.brokers: expected host:port[,host:port…] when bus.kind = \"kafka\", got \"k2\"",
            ),
            (
                "[bus]\nkind = \"kafka\"",
                &[("VIGIL_BUS__KAFKA__REPLICATION_FACTOR", "0")],
                "bus.kafka.replication_factor: must be between 1 and 32, got 0",
            ),
            (
                "[bus]\nkind = \"kafka\"\npublish_timeout_ms = 100\n[bus.kafka]\nlinger_ms = 100",
                &[],
                "bus.kafka.linger_ms: must be less than bus.publish_timeout_ms (100), got 100",
            ),
            (
                "[bus]\nkind = \"kafka\"\n[bus.kafka]\nsecurity_protocol = \"sasl_ssl\"",
                &[],
                "bus.kafka.sasl: security_protocol sasl_ssl needs a mechanism, username and password",
            ),
            (
                "[bus]\nkind = \"kafka\"\n[bus.kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"",
                &[],
                "bus.kafka.sasl: is only used with security_protocol sasl_plaintext or sasl_ssl",
            ),
            (
                "[api.tls]\ncert_file = \"/no/such.pem\"\nkey_file = \"/no/such.key\"",
                &[],
                "api.tls.cert_file: /no/such.pem is not a readable file",
            ),
        ];
        for (file, vars, expected) in cases {
            assert_eq!(load(file, vars).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn kafka_settings_are_only_checked_for_the_kafka_bus() {
        let config = load("[bus.kafka]\nbrokers = \"nowhere\"", &[]).unwrap();
        assert_eq!(config.bus.kind, BusKind::Embedded);
    }

    #[test]
    fn bad_override_paths_are_refused() {
        let error = load("", &[("VIGIL_BUS__PARTITIONS__X", "1")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "bus.partitions: invalid type: map, expected u32"
        );
        let error = load(
            "[bus]\npartitions = 3",
            &[("VIGIL_BUS__PARTITIONS__X", "1")],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable VIGIL_BUS__PARTITIONS__X: bus.partitions is a value, not a section"
        );
        let error = load("", &[("VIGIL_BUS____KIND", "kafka")]).unwrap_err();
        assert!(error.to_string().contains("empty key segment"), "{error}");
    }

    #[test]
    fn printed_configuration_loads_back_to_itself() {
        let config = load("[bus]\nkind = \"kafka\"\npartitions = 3", &[]).unwrap();
        let printed = config.to_toml();
        assert!(printed.contains("kind = \"kafka\""), "{printed}");
        assert_eq!(load(&printed, &[]).unwrap(), config);
    }

    const TENANTS: &str = r#"
        [collector]
        anonymous_tenant = "public"
        [[collector.tenants]]
        id = "acme"
        tokens = ["acme-token-0123456789"]
        [[collector.tenants]]
        id = "globex"
        tokens = ["globex-token-0123456789", "globex-token-rotated-01"]
    "#;

    #[test]
    fn tenants_and_tokens_load_and_never_show() {
        let config = load(TENANTS, &[]).unwrap();
        let collector = &config.collector;
        assert_eq!(
            collector.anonymous_tenant,
            Some(TenantId::parse("public").unwrap())
        );
        assert_eq!(collector.tenants.len(), 2);
        assert_eq!(
            collector.tenants[1].tokens[1].expose(),
            "globex-token-rotated-01"
        );
        let shown = format!("{config:?}\n{}", config.to_toml());
        assert!(!shown.contains("token-0123456789"), "{shown}");
        assert!(
            shown.contains("Secret(***)") && shown.contains("\"***\""),
            "{shown}"
        );
    }

    #[test]
    fn collector_settings_are_checked() {
        let cases = [
            (
                "[[collector.tenants]]\nid = \"Acme\"\ntokens = [\"0123456789abcdef\"]",
                "collector.tenants[0].id: invalid tenant id \"Acme\": use 1 to 64 of a-z, 0-9, '_' \
                 and '-', starting with a letter or digit",
            ),
            (
                "[[collector.tenants]]\nid = \"acme\"\ntokens = []",
                "collector.tenants[0].tokens: tenant acme needs at least one token",
            ),
            (
                "[[collector.tenants]]\nid = \"acme\"\ntokens = [\"short\"]",
                "collector.tenants[0].tokens: tokens of tenant acme must be at least 16 characters",
            ),
            (
                "[[collector.tenants]]\nid = \"a\"\ntokens = [\"0123456789abcdef\"]\n\
                 [[collector.tenants]]\nid = \"b\"\ntokens = [\"0123456789abcdef\"]",
                "collector.tenants[1].tokens: a token may stand for one tenant only; this one is \
                 listed twice",
            ),
            (
                "[collector]\nmax_message_bytes = 10",
                "collector.max_message_bytes: must be between 1024 and 268435456 (256 MiB), got 10",
            ),
            (
                "[collector]\ngrpc_listen = \"localhost\"",
                "collector.grpc_listen: invalid socket address syntax",
            ),
            (
                "[bus]\ntopic_prefix = \"a/b\"",
                "bus.topic_prefix: may hold only ASCII letters, digits, '.', '_' and '-' (at most \
                 200), got \"a/b\"",
            ),
        ];
        for (file, expected) in cases {
            assert_eq!(load(file, &[]).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn topics_carry_the_prefix() {
        let config = load("[bus]\ntopic_prefix = \"test_7.\"", &[]).unwrap();
        let topics = config.bus.topics();
        assert_eq!(
            topics.all(),
            [
                "test_7.otlp.metrics",
                "test_7.otlp.traces",
                "test_7.otlp.logs",
                "test_7.client",
                "test_7.rollups",
                "test_7.deadletter"
            ]
        );
    }

    #[test]
    fn load_reads_the_file_and_reports_a_missing_one() {
        let path = std::env::temp_dir().join(format!("vigil-config-{}.toml", std::process::id()));
        std::fs::write(&path, "[bus]\npartitions = 5\n").unwrap();
        assert_eq!(Config::load(Some(&path)).unwrap().bus.partitions, 5);
        std::fs::remove_file(&path).unwrap();
        let error = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read configuration file"),
            "{error}"
        );
    }
}
