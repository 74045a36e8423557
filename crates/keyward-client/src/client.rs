//! The typed gRPC client: one method per RPC of `keyward.v1.KeyService`.

use std::fmt;
use std::time::Duration;

use keyward_proto as proto;
use keyward_proto::key_service_client::KeyServiceClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Where keyward is and how to reach it.
#[derive(Clone)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port` (https needs [`ClientConfig::tls`]).
    pub endpoint: String,
    /// TLS (and mTLS) settings; `None` for plain HTTP/2.
    pub tls: Option<TlsConfig>,
    /// A service token, sent as `authorization: Bearer <token>` on every call.
    /// Never shown by `Debug` and never part of an error.
    pub token: Option<String>,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one unary call may take (a stream's setup too, not its life).
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// Defaults: no TLS, no token, 5 s to connect, 5 s per call.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            tls: None,
            token: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Sets the service token.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets TLS.
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// TLS to keyward: the CA that signed its certificate, optionally a client
/// certificate and key (mTLS), and the name to check (default: the
/// endpoint's host).
#[derive(Clone, Default)]
pub struct TlsConfig {
    pub ca_pem: Option<Vec<u8>>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    pub domain: Option<String>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(Vec::len),
            )
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("domain", &self.domain)
            .finish()
    }
}

/// What went wrong talking to keyward.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (says which field and why).
    #[error("invalid keyward client config: {0}")]
    Config(String),
    /// keyward could not be reached.
    #[error("cannot connect to keyward at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The call failed (not a denial: denials are answers).
    #[error("keyward call failed: {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct TokenInterceptor {
    value: Option<AsciiMetadataValue>,
}

impl fmt::Debug for TokenInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenInterceptor")
            .field("token", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Inner = KeyServiceClient<InterceptedService<Channel, TokenInterceptor>>;

/// A keyward client. Cheap to clone (clones share one HTTP/2 connection,
/// which reconnects by itself).
#[derive(Clone)]
pub struct Client {
    inner: Inner,
    endpoint: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects now: an unreachable endpoint is an error here.
    pub async fn connect(config: ClientConfig) -> Result<Self, Error> {
        let (endpoint, interceptor) = prepare(&config)?;
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            endpoint: config.endpoint.clone(),
            source,
        })?;
        Ok(Self::from_parts(channel, interceptor, config.endpoint))
    }

    /// Checks the config but connects on first use (and reconnects after
    /// failures), so a service can start while keyward is down.
    pub fn connect_lazy(config: ClientConfig) -> Result<Self, Error> {
        let (endpoint, interceptor) = prepare(&config)?;
        Ok(Self::from_parts(
            endpoint.connect_lazy(),
            interceptor,
            config.endpoint,
        ))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel, token: Option<&str>) -> Result<Self, Error> {
        let interceptor = interceptor(token)?;
        Ok(Self::from_parts(
            channel,
            interceptor,
            String::from("<channel>"),
        ))
    }

    fn from_parts(channel: Channel, interceptor: TokenInterceptor, endpoint: String) -> Self {
        Self {
            inner: KeyServiceClient::with_interceptor(channel, interceptor),
            endpoint,
        }
    }

    /// The generated client, for anything this wrapper does not cover.
    pub fn raw(&self) -> Inner {
        self.inner.clone()
    }

    pub async fn authenticate(
        &self,
        request: proto::AuthenticateRequest,
    ) -> Result<proto::AuthenticateResponse, Error> {
        Ok(self.inner.clone().authenticate(request).await?.into_inner())
    }

    pub async fn check_scope(
        &self,
        request: proto::CheckScopeRequest,
    ) -> Result<proto::CheckScopeResponse, Error> {
        Ok(self.inner.clone().check_scope(request).await?.into_inner())
    }

    pub async fn create_key(
        &self,
        request: proto::CreateKeyRequest,
    ) -> Result<proto::CreateKeyResponse, Error> {
        Ok(self.inner.clone().create_key(request).await?.into_inner())
    }

    pub async fn revoke_key(
        &self,
        request: proto::RevokeKeyRequest,
    ) -> Result<proto::RevokeKeyResponse, Error> {
        Ok(self.inner.clone().revoke_key(request).await?.into_inner())
    }

    pub async fn get_key(
        &self,
        request: proto::GetKeyRequest,
    ) -> Result<proto::GetKeyResponse, Error> {
        Ok(self.inner.clone().get_key(request).await?.into_inner())
    }

    pub async fn list_keys(
        &self,
        request: proto::ListKeysRequest,
    ) -> Result<proto::ListKeysResponse, Error> {
        Ok(self.inner.clone().list_keys(request).await?.into_inner())
    }

    pub async fn update_key(
        &self,
        request: proto::UpdateKeyRequest,
    ) -> Result<proto::UpdateKeyResponse, Error> {
        Ok(self.inner.clone().update_key(request).await?.into_inner())
    }

    pub async fn list_scopes(&self) -> Result<proto::ListScopesResponse, Error> {
        Ok(self
            .inner
            .clone()
            .list_scopes(proto::ListScopesRequest {})
            .await?
            .into_inner())
    }

    /// Opens a WatchRevocations stream (read it with `message().await`).
    pub async fn watch_revocations(
        &self,
        request: proto::WatchRevocationsRequest,
    ) -> Result<tonic::Streaming<proto::RevocationEvent>, Error> {
        Ok(self
            .inner
            .clone()
            .watch_revocations(request)
            .await?
            .into_inner())
    }

    pub async fn record_usage(
        &self,
        request: proto::RecordUsageRequest,
    ) -> Result<proto::RecordUsageResponse, Error> {
        Ok(self.inner.clone().record_usage(request).await?.into_inner())
    }
}

fn interceptor(token: Option<&str>) -> Result<TokenInterceptor, Error> {
    let value = match token {
        None => None,
        Some(token) => {
            if token.trim().is_empty() {
                return Err(Error::Config("token: empty".into()));
            }
            // The message names no part of the token.
            let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| {
                    Error::Config("token: must be printable ASCII without spaces".into())
                })?;
            value.set_sensitive(true);
            Some(value)
        }
    };
    Ok(TokenInterceptor { value })
}

fn prepare(config: &ClientConfig) -> Result<(Endpoint, TokenInterceptor), Error> {
    let interceptor = interceptor(config.token.as_deref())?;
    if config.connect_timeout.is_zero() {
        return Err(Error::Config(
            "connect_timeout: must be more than zero".into(),
        ));
    }
    if config.request_timeout.is_zero() {
        return Err(Error::Config(
            "request_timeout: must be more than zero".into(),
        ));
    }
    let uri: http::Uri = config.endpoint.parse().map_err(|e| {
        Error::Config(format!(
            "endpoint {:?}: not a URI ({e}); expected http://host:port or https://host:port",
            config.endpoint
        ))
    })?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(Error::Config(format!(
                "endpoint {:?}: expected http://host:port or https://host:port",
                config.endpoint
            )));
        }
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(Error::Config(format!(
            "endpoint {:?}: names no host",
            config.endpoint
        )));
    }
    let mut endpoint = Endpoint::from(uri)
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    match (&config.tls, https) {
        (Some(tls), true) => {
            let mut tls_config = ClientTlsConfig::new();
            if let Some(ca) = &tls.ca_pem {
                tls_config = tls_config.ca_certificate(Certificate::from_pem(ca));
            }
            match (&tls.client_cert_pem, &tls.client_key_pem) {
                (Some(cert), Some(key)) => {
                    tls_config =
                        tls_config.identity(tonic::transport::Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Config(
                        "tls: client_cert_pem and client_key_pem go together".into(),
                    ));
                }
            }
            if let Some(domain) = &tls.domain {
                tls_config = tls_config.domain_name(domain.clone());
            }
            endpoint = endpoint
                .tls_config(tls_config)
                .map_err(|e| Error::Config(format!("tls: {e}")))?;
        }
        (None, true) => {
            return Err(Error::Config(format!(
                "endpoint {:?}: https needs tls (at least ca_pem)",
                config.endpoint
            )));
        }
        (Some(_), false) => {
            return Err(Error::Config(format!(
                "endpoint {:?}: tls is set, so the endpoint must be https://",
                config.endpoint
            )));
        }
        (None, false) => {}
    }
    Ok((endpoint, interceptor))
}
