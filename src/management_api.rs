//! The products' key-management HTTP API (`--http-listen`): create, list,
//! get, update and revoke keys, and the scope catalog, as JSON over HTTP/1.1
//! and HTTP/2, in the routes, field names and error bodies the profile's
//! `[management_api]` configures. A surface over the same key manager as
//! KeyService (as ext_authz is over the authenticator): the same
//! validation, the same account rules, the same change-feed events.
//!
//! Callers authenticate as on the management RPCs: the profile's user JWT
//! (the account is its subject) or a service token allowed the matching RPC
//! (the account is named by the `x-keyward-account` header). Another
//! account's key is 404, as on gRPC.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::access_control::{AccessPolicy, Caller, Refusal, Rpc};
use crate::audit::Actor;
use crate::denial::DenialText;
use crate::domain::{AccountId, KeyId, KeyName};
use crate::ext_authz::ErrorBodyStyle;
use crate::key_management::{ChangeKey, CreateKey, KeyManager, ManagementError};
use crate::storage::KeyRecord;
use crate::telemetry::{REQUEST_ID_HEADER, Telemetry, echo_request_id, request_id};

pub mod json;
pub mod settings;
pub mod settings_page;

use json::{BadField, KeyFields};
use settings::{ManagementApiSettings, Operation};

/// The header a service token (or an open, loopback-only API) names the
/// account with.
pub const ACCOUNT_HEADER: &str = "x-keyward-account";

/// Largest request body accepted (a key's fields are small).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Keys listed per response at most (far above any per-account key limit).
const MAX_LISTED: u32 = 1_000;

struct Api {
    manager: Arc<KeyManager>,
    policy: Arc<AccessPolicy>,
    settings: ManagementApiSettings,
    style: ErrorBodyStyle,
    telemetry: Arc<Telemetry>,
}

/// The router of the profile's routes, with `page` (the settings page's
/// routes, when served) under the same CORS rules.
pub fn router(
    manager: Arc<KeyManager>,
    policy: Arc<AccessPolicy>,
    settings: ManagementApiSettings,
    style: ErrorBodyStyle,
    telemetry: Arc<Telemetry>,
    page: Option<Router>,
) -> Router {
    let routes = settings.routes.clone();
    let api = Arc::new(Api {
        manager,
        policy,
        settings,
        style,
        telemetry,
    });
    let mut by_path: BTreeMap<String, MethodRouter<Arc<Api>>> = BTreeMap::new();
    for route in routes {
        let filter = MethodFilter::try_from(route.method).expect("validated method");
        let operation = route.operation;
        let handle = move |State(api): State<Arc<Api>>,
                           ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
                           key: Option<Path<String>>,
                           RawQuery(query): RawQuery,
                           headers: HeaderMap,
                           body: Bytes| async move {
            let request = Incoming {
                key: key.map(|Path(id)| id),
                query,
                headers,
                peer,
            };
            api.handle(operation, request, body).await
        };
        let methods = by_path.remove(&route.path).unwrap_or_default();
        by_path.insert(route.path, methods.on(filter, handle));
    }
    let cors = cors_layer(&api.settings);
    let router = by_path
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(&path, methods)
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api);
    let router = match page {
        Some(page) => router.merge(page),
        None => router,
    };
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for the configured origins (none: no CORS headers, so browsers
/// on other origins cannot call the API): preflights answered with the
/// routes' methods and the headers a caller sends.
fn cors_layer(settings: &ManagementApiSettings) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if settings.cors_allowed_origins.is_empty() {
        return None;
    }
    let methods: Vec<http::Method> = settings.routes.iter().map(|r| r.method.clone()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(settings.cors_allowed_origins.clone()))
            .allow_methods(methods)
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                http::HeaderName::from_static(ACCOUNT_HEADER),
            ])
            .expose_headers([http::HeaderName::from_static(REQUEST_ID_HEADER)])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Serves `router` on `listener` (HTTP/1.1 and HTTP/2) until `shutdown`
/// resolves, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // With the connection's address, for the audit trail's `peer`.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(error) = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%error, "key-management HTTP listener failed");
    }
}

/// Why a request failed, before it is rendered in the profile's style.
enum ApiError {
    Refused(Refusal),
    Invalid(BadField),
    Management(ManagementError),
}

impl From<BadField> for ApiError {
    fn from(bad: BadField) -> Self {
        Self::Invalid(bad)
    }
}

impl From<ManagementError> for ApiError {
    fn from(error: ManagementError) -> Self {
        Self::Management(error)
    }
}

/// The response header that carries a write's revision (see the proto's
/// read-your-writes note): a dashboard passes it on as `min_revision`, or
/// to Envoy's path in the header ext_authz reads it from.
pub const REVISION_HEADER: &str = "x-keyward-revision";

/// A successful answer: its status, its JSON body and, for a write, the
/// write's revision.
struct Answer {
    status: StatusCode,
    body: Value,
    revision: Option<u64>,
}

impl Answer {
    fn read(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            revision: None,
        }
    }

    fn written(status: StatusCode, body: Value, revision: u64) -> Self {
        Self {
            status,
            body,
            revision: Some(revision),
        }
    }
}

/// What a route's handler received besides its body.
struct Incoming {
    key: Option<String>,
    query: Option<String>,
    headers: HeaderMap,
    /// The connection's address.
    peer: std::net::SocketAddr,
}

impl Api {
    async fn handle(&self, operation: Operation, request: Incoming, body: Bytes) -> Response {
        let Incoming {
            key,
            query,
            headers,
            peer,
        } = request;
        let started = Instant::now();
        let request_id = request_id(&headers);
        let span = tracing::info_span!(
            "http",
            route = operation.as_str(),
            request_id = %request_id.to_str().unwrap_or_default()
        );
        // The span covers the whole call, its awaits included, so the key
        // manager's log lines carry the route and request id.
        let result = self
            .serve(
                operation,
                key.as_deref(),
                query.as_deref(),
                (&headers, peer),
                &body,
            )
            .instrument(span.clone())
            .await;
        let mut response = match result {
            Ok(answer) => {
                let mut response = json_response(answer.status, &answer.body);
                if let Some(revision) = answer.revision {
                    response
                        .headers_mut()
                        .insert(REVISION_HEADER, HeaderValue::from(revision));
                }
                response
            }
            Err(error) => span.in_scope(|| self.error_response(error)),
        };
        echo_request_id(response.headers_mut(), request_id);
        self.telemetry.record_http(
            operation.as_str(),
            response.status().as_u16(),
            started.elapsed(),
        );
        response
    }

    async fn serve(
        &self,
        operation: Operation,
        key: Option<&str>,
        query: Option<&str>,
        (headers, peer): (&HeaderMap, std::net::SocketAddr),
        body: &[u8],
    ) -> Result<Answer, ApiError> {
        if operation == Operation::Scopes {
            return Ok(Answer::read(self.catalog()));
        }
        let (account, caller) = self.account(operation, headers)?;
        let actor = caller.actor(Some(peer.ip()));
        let key_id = key
            .map(|raw| {
                KeyId::parse(raw).map_err(|_| ApiError::Management(ManagementError::NotFound))
            })
            .transpose()?;
        match (operation, key_id) {
            (Operation::Create, _) => self.create(account, body, &actor).await,
            (Operation::List, _) => self.list(&account, query).await,
            (Operation::Get, Some(id)) => {
                let record = self.manager.get(&account, &id).await?;
                Ok(Answer::read(self.key(&record, None)))
            }
            (Operation::Update, Some(id)) => self.update(&account, &id, body, &actor).await,
            (Operation::Rotate, Some(id)) => self.rotate(&account, &id, body, &actor).await,
            (Operation::Revoke, Some(id)) => {
                let written = self.manager.revoke(&account, &id, &actor).await?;
                Ok(Answer::written(
                    StatusCode::OK,
                    self.key(&written.record, None),
                    written.revision,
                ))
            }
            // Validated: these routes name `{key_id}`.
            _ => Err(ApiError::Management(ManagementError::NotFound)),
        }
    }

    /// The account a request acts for: a JWT's own, or the one a service
    /// token (or an open API) names in `x-keyward-account`; and the caller.
    fn account(
        &self,
        operation: Operation,
        headers: &HeaderMap,
    ) -> Result<(AccountId, Caller), ApiError> {
        let rpc = match operation {
            Operation::Create => Rpc::CreateKey,
            Operation::List => Rpc::ListKeys,
            Operation::Get => Rpc::GetKey,
            Operation::Update => Rpc::UpdateKey,
            Operation::Revoke => Rpc::RevokeKey,
            Operation::Scopes => Rpc::ListScopes,
            Operation::Rotate => Rpc::RotateKey,
        };
        let authorization = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        let caller = self
            .policy
            .check(Some(rpc), authorization)
            .map_err(ApiError::Refused)?;
        let named = headers
            .get(ACCOUNT_HEADER)
            .map(|value| {
                value
                    .to_str()
                    .ok()
                    .and_then(|text| AccountId::parse(text).ok())
                    .ok_or_else(|| {
                        BadField::new(ACCOUNT_HEADER, "must be an account id (printable ASCII)")
                    })
            })
            .transpose()?;
        match (caller, named) {
            (Caller::User { account }, None) => Ok((account.clone(), Caller::User { account })),
            (caller @ Caller::User { .. }, Some(named)) => {
                caller.may_act_for(&named).map_err(ApiError::Refused)?;
                Ok((named, caller))
            }
            (caller, Some(named)) => Ok((named, caller)),
            (_, None) => Err(BadField::new(
                ACCOUNT_HEADER,
                "required: name the account this service acts for",
            )
            .into()),
        }
    }

    async fn create(
        &self,
        account: AccountId,
        body: &[u8],
        actor: &Actor,
    ) -> Result<Answer, ApiError> {
        let fields = json::key_fields(&self.settings, body)?;
        let names = &self.settings.fields;
        let name = fields
            .name
            .as_deref()
            .ok_or_else(|| missing(names.name.as_deref()))
            .and_then(|raw| KeyName::parse(raw).map_err(|e| bad(names.name.as_deref(), e)))?;
        let mut scopes = fields.scopes.clone().unwrap_or_default();
        apply_toggles(&mut scopes, &fields);
        let (written, secret) = self
            .manager
            .create(
                CreateKey {
                    account_id: account,
                    name,
                    scopes,
                    preset: fields.preset,
                    expires_at: fields.expires_at,
                    rate_limit: None,
                    quota: None,
                    // Not in the profiles' field tables (yet): gRPC and the CLI set them.
                    metadata: Default::default(),
                    allowed_networks: Vec::new(),
                },
                actor,
            )
            .await
            .map_err(|error| self.renamed(error))?;
        Ok(Answer::written(
            StatusCode::CREATED,
            self.key(&written.record, Some(secret.expose())),
            written.revision,
        ))
    }

    async fn update(
        &self,
        account: &AccountId,
        id: &KeyId,
        body: &[u8],
        actor: &Actor,
    ) -> Result<Answer, ApiError> {
        let fields = json::key_fields(&self.settings, body)?;
        let names = &self.settings.fields;
        if fields.preset.is_some() || fields.expires_at.is_some() {
            let field = if fields.preset.is_some() {
                &names.preset
            } else {
                &names.expires_at
            };
            return Err(bad(field.as_deref(), "cannot be changed on an existing key").into());
        }
        let mut scopes = fields.scopes.clone();
        if !fields.toggles.is_empty() {
            // A toggle changes one scope of what the key holds now.
            let current = match scopes.take() {
                Some(given) => given,
                None => self.manager.get(account, id).await?.scopes,
            };
            let mut toggled = current;
            apply_toggles(&mut toggled, &fields);
            scopes = Some(toggled);
        }
        let name = fields
            .name
            .as_deref()
            .map(|raw| KeyName::parse(raw).map_err(|e| bad(names.name.as_deref(), e)))
            .transpose()?;
        let written = self
            .manager
            .update(
                account,
                id,
                ChangeKey {
                    name,
                    scopes,
                    rate_limit: None,
                    quota: None,
                    metadata: None,
                    allowed_networks: None,
                },
                actor,
            )
            .await
            .map_err(|error| self.renamed(error))?;
        Ok(Answer::written(
            StatusCode::OK,
            self.key(&written.record, None),
            written.revision,
        ))
    }

    /// keyward's rotation: the successor, with its secret (shown here
    /// once), in the profile's key shape; `201` like a creation.
    async fn rotate(
        &self,
        account: &AccountId,
        id: &KeyId,
        body: &[u8],
        actor: &Actor,
    ) -> Result<Answer, ApiError> {
        let grace = json::rotation_grace(body)?;
        let (rotated, secret) = self
            .manager
            .rotate(account, id, grace, actor)
            .await
            .map_err(|error| match error {
                ManagementError::Invalid {
                    field: "grace_period",
                    reason,
                } => ApiError::Invalid(BadField::new(json::GRACE_PERIOD_FIELD, reason)),
                other => self.renamed(other),
            })?;
        Ok(Answer::written(
            StatusCode::CREATED,
            self.key(&rotated.key, Some(secret.expose())),
            rotated.revision,
        ))
    }

    async fn list(&self, account: &AccountId, query: Option<&str>) -> Result<Answer, ApiError> {
        let include_revoked = query_flag(query, "include_revoked")?.unwrap_or(false);
        let page = self
            .manager
            .list(account, include_revoked, None, MAX_LISTED)
            .await?;
        let keys = page
            .keys
            .iter()
            .map(|record| self.key(record, None))
            .collect();
        Ok(Answer::read(Value::Array(keys)))
    }

    fn key(&self, record: &KeyRecord, secret: Option<&str>) -> Value {
        json::key_value(&self.settings, self.manager.catalog(), record, secret)
    }

    /// The live scope catalog and presets.
    fn catalog(&self) -> Value {
        let catalog = self.manager.catalog();
        let scopes = catalog
            .definitions()
            .iter()
            .map(|scope| {
                let mut entry = Map::new();
                entry.insert("name".into(), scope.name.clone().into());
                entry.insert("description".into(), scope.description.clone().into());
                entry.insert("implies".into(), scope.implies.clone().into());
                entry.insert("auto_grant".into(), scope.auto_grant.into());
                entry.insert("reserved".into(), scope.reserved.into());
                Value::Object(entry)
            })
            .collect();
        let presets = catalog
            .presets()
            .iter()
            .map(|preset| {
                let mut entry = Map::new();
                entry.insert("name".into(), preset.name.clone().into());
                entry.insert("description".into(), preset.description.clone().into());
                entry.insert("scopes".into(), catalog.sorted_names(preset.scopes).into());
                Value::Object(entry)
            })
            .collect();
        let mut body = Map::new();
        body.insert("scopes".into(), Value::Array(scopes));
        body.insert("presets".into(), Value::Array(presets));
        Value::Object(body)
    }

    /// A key manager's field name (`expires_at`) as the profile spells it.
    fn renamed(&self, error: ManagementError) -> ApiError {
        match error {
            ManagementError::Invalid { field, reason } => {
                let names = &self.settings.fields;
                let spelled = match field {
                    "name" => names.name.as_deref(),
                    "scopes" => names.scopes.as_deref(),
                    "preset" => names.preset.as_deref(),
                    "expires_at" => names.expires_at.as_deref(),
                    _ => None,
                };
                ApiError::Invalid(BadField::new(spelled.unwrap_or(field), reason))
            }
            other => ApiError::Management(other),
        }
    }

    fn error_response(&self, error: ApiError) -> Response {
        let errors = &self.settings.errors;
        let (text, message): (&DenialText, String) = match error {
            ApiError::Refused(Refusal::Unauthenticated(reason)) => {
                (&errors.unauthenticated, reason)
            }
            ApiError::Refused(Refusal::PermissionDenied(reason)) => {
                (&errors.permission_denied, reason)
            }
            ApiError::Invalid(bad) => (&errors.invalid, format!("{}: {}", bad.field, bad.reason)),
            ApiError::Management(error) => match error {
                ManagementError::Invalid { field, reason } => {
                    (&errors.invalid, format!("{field}: {reason}"))
                }
                ManagementError::NotFound => (&errors.not_found, error.to_string()),
                ManagementError::KeyLimitReached { .. } => (&errors.key_limit, error.to_string()),
                ManagementError::KeyRevoked => (&errors.key_revoked, error.to_string()),
                // ImportKeys is gRPC only; its errors do not arise here.
                ManagementError::InvalidAt { .. } => (&errors.invalid, error.to_string()),
                ManagementError::KeyExpired
                | ManagementError::AlreadyRotated { .. }
                | ManagementError::AlreadyExists { .. } => (&errors.key_revoked, error.to_string()),
                ManagementError::ImportLimitReached { .. } => {
                    (&errors.key_limit, error.to_string())
                }
                ManagementError::Storage(error) => {
                    tracing::error!(%error, "storage failure");
                    (
                        &errors.unavailable,
                        "storage is unavailable; retry later".into(),
                    )
                }
                ManagementError::Random(error) => {
                    tracing::error!(%error, "random number generator failure");
                    (&errors.unavailable, "could not generate a key".into())
                }
            },
        };
        tracing::info!(code = %text.code, status = text.http_status, reason = %message, "refused");
        let status = StatusCode::from_u16(text.http_status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = self.style.render(&text.code, &message, None);
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn missing(field: Option<&str>) -> BadField {
    BadField::new(field.unwrap_or("body"), "is required")
}

fn bad(field: Option<&str>, reason: impl std::fmt::Display) -> BadField {
    BadField::new(field.unwrap_or("body"), reason.to_string())
}

/// Adds or removes each toggled scope.
fn apply_toggles(scopes: &mut Vec<String>, fields: &KeyFields) {
    for (scope, on) in &fields.toggles {
        scopes.retain(|held| held != scope);
        if *on {
            scopes.push(scope.clone());
        }
    }
}

/// `name=true|false` in the query; anything else there is refused.
fn query_flag(query: Option<&str>, name: &str) -> Result<Option<bool>, BadField> {
    let mut flag = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != name {
            return Err(BadField::new(key, "is not a query parameter of this route"));
        }
        flag = Some(match value {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(BadField::new(key, "must be true or false")),
        });
    }
    Ok(flag)
}
