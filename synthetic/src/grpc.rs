//! Unary gRPC calls to methods known only from a descriptor set: the request
//! is built from JSON, the response read back as JSON for assertions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor};
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};

/// The outcome of a call that reached a server (or failed trying).
pub struct Reply {
    pub code: tonic::Code,
    pub message: String,
    /// The response as protobuf JSON (lowerCamelCase names) when `OK`.
    pub body: Option<Value>,
}

/// One channel per target, shared by every probe that calls it; `https://`
/// targets are reached over TLS with the given client configuration.
pub struct Clients {
    channels: Mutex<HashMap<String, Channel>>,
    tls: Arc<rustls::ClientConfig>,
}

impl Clients {
    pub fn new(mut tls: rustls::ClientConfig) -> Clients {
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Clients {
            channels: Mutex::default(),
            tls: Arc::new(tls),
        }
    }

    fn channel(&self, target: &str) -> Result<Channel, String> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(channel) = channels.get(target) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(target.to_owned())
            .map_err(|e| format!("gRPC target {target:?} is not a URI: {e}"))?;
        let channel = match target.strip_prefix("https://") {
            // The connector does the TLS; tonic is handed the target as
            // `http://` (built with TLS of its own, it would refuse an
            // `https://` one it is not configured for) and sends `https` as
            // the requests' scheme.
            Some(rest) => Endpoint::from_shared(format!("http://{rest}"))
                .map_err(|e| format!("gRPC target {target:?} is not a URI: {e}"))?
                .origin(endpoint.uri().clone())
                .connect_with_connector_lazy(tls_connector(Arc::clone(&self.tls))),
            None => endpoint.connect_lazy(),
        };
        channels.insert(target.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Calls `method` at `target` with the request `message` (JSON) and
    /// `metadata`. `Err` is for what never became a call: a target or a
    /// message that does not fit.
    pub async fn call(
        &self,
        target: &str,
        method: &MethodDescriptor,
        message: Value,
        metadata: &[(String, String)],
    ) -> Result<Reply, String> {
        let input = DynamicMessage::deserialize(method.input(), message)
            .map_err(|e| format!("the message is not a {}: {e}", method.input().full_name()))?;
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let path = PathAndQuery::try_from(path).map_err(|e| e.to_string())?;
        let mut request = tonic::Request::new(input);
        for (name, value) in metadata {
            let key = MetadataKey::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a metadata key"))?;
            let value = MetadataValue::try_from(value.as_str())
                .map_err(|_| format!("metadata {name}: the value is not ASCII text"))?;
            request.metadata_mut().insert(key, value);
        }
        let mut grpc = tonic::client::Grpc::new(self.channel(target)?);
        let codec = DynamicCodec(method.output());
        let reply = match grpc.ready().await {
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
            Ok(()) => grpc.unary(request, path, codec).await,
        };
        Ok(match reply {
            Ok(response) => Reply {
                code: tonic::Code::Ok,
                message: String::new(),
                body: serde_json::to_value(response.into_inner()).ok(),
            },
            Err(status) => Reply {
                code: status.code(),
                message: status.message().to_owned(),
                body: None,
            },
        })
    }
}

/// Connects to a target's host and port and does the TLS handshake, naming
/// the host as the certificate must.
fn tls_connector(
    tls: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Future + Send,
> + Send
+ Clone
+ 'static {
    tower::service_fn(move |uri: Uri| {
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls));
        async move {
            let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
            let host = uri
                .host()
                .ok_or_else(|| invalid("the target names no host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host).map_err(|_| invalid("not a server name"))?;
            Ok(TokioIo::new(connector.connect(name, tcp).await?))
        }
    })
}

/// Encodes dynamic requests and decodes responses of a known type.
struct DynamicCodec(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.0.clone())
    }
}

struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: DynamicMessage,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, tonic::Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable response: {e}")))
    }
}
