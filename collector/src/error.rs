//! Why a request was refused, mapped once to both a gRPC code and an HTTP
//! status, with the OTLP retry semantics: UNAVAILABLE / 503 and
//! RESOURCE_EXHAUSTED with RetryInfo / 429 with Retry-After are retried by
//! exporters; the others are not.

use std::time::Duration;

use axum::http::StatusCode;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};
use vigil_bus::BusError;

/// How long a client should wait before retrying when the bus is full.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IngestError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Exhausted(String),
    /// Over a rate limit: to be retried after the given time.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    Internal(String),
}

impl IngestError {
    pub(crate) fn grpc_code(&self) -> Code {
        match self {
            IngestError::Unauthenticated(_) => Code::Unauthenticated,
            IngestError::InvalidArgument(_) | IngestError::UnsupportedMediaType(_) => {
                Code::InvalidArgument
            }
            // Without RetryInfo, RESOURCE_EXHAUSTED is not retried: right for a
            // request that will never fit.
            IngestError::TooLarge(_)
            | IngestError::Exhausted(_)
            | IngestError::RateLimited { .. } => Code::ResourceExhausted,
            IngestError::Unavailable(_) => Code::Unavailable,
            IngestError::Internal(_) => Code::Internal,
        }
    }

    pub(crate) fn http_status(&self) -> StatusCode {
        match self {
            IngestError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            IngestError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Exhausted(_) | IngestError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC code's name, for self-metrics.
    pub(crate) fn code_name(&self) -> &'static str {
        match self.grpc_code() {
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::Unavailable => "UNAVAILABLE",
            _ => "INTERNAL",
        }
    }

    /// When the client should retry, for errors worth retrying.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            IngestError::RateLimited { retry_after, .. } => Some(*retry_after),
            IngestError::Exhausted(_) | IngestError::Unavailable(_) => Some(RETRY_AFTER),
            _ => None,
        }
    }
}

impl From<BusError> for IngestError {
    fn from(error: BusError) -> Self {
        match error {
            BusError::Full { .. } => IngestError::Exhausted(format!(
                "Vigil cannot take more data now ({error}); retry after {}s",
                RETRY_AFTER.as_secs()
            )),
            BusError::Unavailable { .. } => IngestError::Unavailable(format!(
                "Vigil cannot store data now ({error}); retry later"
            )),
            BusError::TooLarge { size, limit } => IngestError::TooLarge(format!(
                "one resource's data is {size} bytes once encoded, more than the {limit} bytes \
                 Vigil stores in one message; send fewer items per resource"
            )),
            BusError::UnknownTopic { .. } | BusError::Fatal { .. } => {
                tracing::error!(error = %error, "the bus refused data");
                IngestError::Internal(
                    "Vigil could not store the data; the collector's log says why".to_owned(),
                )
            }
        }
    }
}

impl From<IngestError> for tonic::Status {
    fn from(error: IngestError) -> Self {
        let message = error.to_string();
        match (error.grpc_code(), error.retry_after()) {
            (Code::ResourceExhausted, Some(delay)) => tonic::Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            (code, _) => tonic::Status::new(code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_errors_become_retryable_statuses_with_retry_info() {
        let full = IngestError::from(BusError::Full {
            reason: "r".to_owned(),
        });
        assert_eq!(
            (full.grpc_code(), full.http_status()),
            (Code::ResourceExhausted, StatusCode::TOO_MANY_REQUESTS)
        );
        let status = tonic::Status::from(full);
        let retry = status
            .get_details_retry_info()
            .expect("RetryInfo in the status");
        assert_eq!(retry.retry_delay, Some(RETRY_AFTER));

        let down = IngestError::from(BusError::Unavailable {
            reason: "r".to_owned(),
        });
        assert_eq!(
            (down.grpc_code(), down.http_status()),
            (Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(down.retry_after(), Some(RETRY_AFTER));

        let fatal = IngestError::from(BusError::Fatal {
            reason: "secret internals".to_owned(),
        });
        assert_eq!(fatal.grpc_code(), Code::Internal);
        assert!(!fatal.to_string().contains("secret internals"));
        assert_eq!(fatal.retry_after(), None);
        let too_large =
            tonic::Status::from(IngestError::from(BusError::TooLarge { size: 9, limit: 8 }));
        assert_eq!(too_large.code(), Code::ResourceExhausted);
        assert!(
            too_large.get_details_retry_info().is_none(),
            "not to be retried"
        );
    }
}
