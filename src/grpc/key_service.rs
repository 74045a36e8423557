//! `keyward.v1.KeyService`: thin handlers that convert, call the
//! authenticator or the key manager, and convert back.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::convert;
use super::status::invalid_argument;
use super::watch;
use crate::access_control::{Caller, HotPathCaller};
use crate::audit::Actor;
use crate::authenticator::{Authenticator, Presented, PresentedKey};
use crate::change_feed::ChangeFeed;
use crate::domain::{AccountId, UnixMillis};
use crate::key_management::{ChangeKey, CreateKey, KeyManager};
use crate::proto;
use crate::proto::authenticate_reply::AuthenticateReply;
use crate::proto::key_service_server::KeyService;
use crate::telemetry::Surface;

/// Uses one RecordUsage call may report (a verifier flushes one entry per
/// key it saw used).
const MAX_USES_PER_REPORT: usize = 10_000;
/// How far in the future a reported use may lie (the caller's clock may be
/// ahead of this one).
const MAX_CLOCK_SKEW_MS: i64 = 60_000;

pub struct KeyServiceApi {
    authenticator: Arc<Authenticator>,
    manager: Arc<KeyManager>,
    feed: Arc<ChangeFeed>,
    /// The catalog's scope names, encoded once for Authenticate's replies.
    scope_fields: convert::ScopeFields,
}

impl KeyServiceApi {
    pub fn new(
        authenticator: Arc<Authenticator>,
        manager: Arc<KeyManager>,
        feed: Arc<ChangeFeed>,
    ) -> Self {
        Self {
            scope_fields: convert::ScopeFields::new(authenticator.catalog()),
            authenticator,
            manager,
            feed,
        }
    }
}

/// Who makes a management write, for the audit trail: the caller the
/// request gate proved (none: management is open) and the connection's
/// address.
fn actor_of<T>(request: &Request<T>) -> Actor {
    let caller = request.extensions().get::<Caller>();
    let peer = request.remote_addr().map(|addr| addr.ip());
    caller.unwrap_or(&Caller::Anonymous).actor(peer)
}

/// A user JWT may act only for its own account. The request gate puts the
/// proven caller in the request's extensions; without one (open
/// management, or a service token), there is nothing to check.
fn check_account(caller: Option<&Caller>, account: &AccountId) -> Result<(), Status> {
    match caller {
        Some(caller) => caller
            .may_act_for(account)
            .map_err(|refusal| Status::permission_denied(refusal.to_string())),
        None => Ok(()),
    }
}

#[tonic::async_trait]
impl KeyService for KeyServiceApi {
    async fn authenticate(
        &self,
        request: Request<proto::AuthenticateRequest>,
    ) -> Result<Response<AuthenticateReply>, Status> {
        let (_, extensions, request) = request.into_parts();
        let caller = HotPathCaller::of(&extensions);
        let catalog = self.authenticator.catalog();
        let required =
            convert::required_scopes("required_scopes", &request.required_scopes, catalog)?;
        let client = caller.client(convert::client_ip(&request.client_ip)?);
        let verdict = self
            .authenticator
            .authenticate(Presented {
                surface: Surface::Authenticate,
                key: PresentedKey::Credential(&request.credential),
                required: required.as_required(),
                client,
                account: caller.account.as_ref(),
                min_revision: request.min_revision,
            })
            .await;
        Ok(Response::new(AuthenticateReply {
            allowed: verdict.allowed(),
            key: verdict
                .key()
                .map(|key| convert::encoded_key(key, catalog, &self.scope_fields)),
            denial: verdict.denial().map(convert::denial),
            rate_limit: verdict.rate_limit().map(convert::rate_limit_status),
            // A limited key's (or a quota's) every use must be counted here, and a key
            // with allowed networks must be checked against each request's
            // address here; any other allowed answer holds until an event
            // about the key (or expiry).
            quota_remaining: verdict.quota_remaining(),
            cacheable: verdict.allowed()
                && verdict.rate_limit().is_none()
                && verdict.quota_remaining().is_none()
                && verdict.key().is_some_and(|key| !key.has_allowed_networks()),
        }))
    }

    async fn check_scope(
        &self,
        request: Request<proto::CheckScopeRequest>,
    ) -> Result<Response<proto::CheckScopeResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let caller = HotPathCaller::of(&extensions);
        let catalog = self.authenticator.catalog();
        let key_id = match (request.key_id.is_empty(), request.credential.is_empty()) {
            (false, true) => Some(convert::key_id("key_id", &request.key_id)?),
            (true, false) => None,
            _ => {
                return Err(invalid_argument(
                    "key_id",
                    "set exactly one of key_id and credential",
                ));
            }
        };
        if request.scopes.is_empty() {
            return Err(invalid_argument(
                "scopes",
                "name at least one scope to check",
            ));
        }
        let required = convert::required_scopes("scopes", &request.scopes, catalog)?;
        let client = caller.client(convert::client_ip(&request.client_ip)?);
        let presented = match &key_id {
            Some(id) => PresentedKey::Id(id),
            None => PresentedKey::Credential(&request.credential),
        };
        let verdict = self
            .authenticator
            .authenticate(Presented {
                surface: Surface::CheckScope,
                key: presented,
                required: required.as_required(),
                client,
                account: caller.account.as_ref(),
                min_revision: request.min_revision,
            })
            .await;
        let missing_scopes = match verdict.key() {
            Some(key) => required.missing(key.effective, catalog),
            None => Vec::new(),
        };
        Ok(Response::new(proto::CheckScopeResponse {
            allowed: verdict.allowed(),
            missing_scopes,
            denial: verdict.denial().map(convert::denial),
        }))
    }

    async fn create_key(
        &self,
        request: Request<proto::CreateKeyRequest>,
    ) -> Result<Response<proto::CreateKeyResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let actor = actor_of(&request);
        let create = CreateKey::try_from(request.into_inner())?;
        check_account(caller.as_ref(), &create.account_id)?;
        let (written, secret) = self.manager.create(create, &actor).await?;
        Ok(Response::new(proto::CreateKeyResponse {
            key: Some(convert::key_from_record(
                &written.record,
                self.manager.catalog(),
            )),
            secret: secret.into_exposed(),
            revision: written.revision,
        }))
    }

    async fn revoke_key(
        &self,
        request: Request<proto::RevokeKeyRequest>,
    ) -> Result<Response<proto::RevokeKeyResponse>, Status> {
        let account_id = convert::account_id(&request.get_ref().account_id)?;
        check_account(request.extensions().get(), &account_id)?;
        let actor = actor_of(&request);
        let request = request.into_inner();
        let key_id = convert::key_id("key_id", &request.key_id)?;
        let written = self.manager.revoke(&account_id, &key_id, &actor).await?;
        Ok(Response::new(proto::RevokeKeyResponse {
            key: Some(convert::key_from_record(
                &written.record,
                self.manager.catalog(),
            )),
            revision: written.revision,
        }))
    }

    async fn get_key(
        &self,
        request: Request<proto::GetKeyRequest>,
    ) -> Result<Response<proto::GetKeyResponse>, Status> {
        let account_id = convert::account_id(&request.get_ref().account_id)?;
        check_account(request.extensions().get(), &account_id)?;
        let request = request.into_inner();
        let key_id = convert::key_id("key_id", &request.key_id)?;
        let record = self.manager.get(&account_id, &key_id).await?;
        Ok(Response::new(proto::GetKeyResponse {
            key: Some(convert::key_from_record(&record, self.manager.catalog())),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<proto::ListKeysRequest>,
    ) -> Result<Response<proto::ListKeysResponse>, Status> {
        let account_id = convert::account_id(&request.get_ref().account_id)?;
        check_account(request.extensions().get(), &account_id)?;
        let request = request.into_inner();
        let page_size = convert::page_size(request.page_size)?;
        let after = convert::decode_page_token(&request.page_token)?;
        let page = self
            .manager
            .list(
                &account_id,
                request.include_revoked,
                after.as_ref(),
                page_size,
            )
            .await?;
        Ok(Response::new(proto::ListKeysResponse {
            keys: page
                .keys
                .iter()
                .map(|record| convert::key_from_record(record, self.manager.catalog()))
                .collect(),
            next_page_token: page
                .next_after
                .as_ref()
                .map(convert::encode_page_token)
                .unwrap_or_default(),
        }))
    }

    async fn update_key(
        &self,
        request: Request<proto::UpdateKeyRequest>,
    ) -> Result<Response<proto::UpdateKeyResponse>, Status> {
        let account_id = convert::account_id(&request.get_ref().account_id)?;
        check_account(request.extensions().get(), &account_id)?;
        let actor = actor_of(&request);
        let request = request.into_inner();
        let key_id = convert::key_id("key_id", &request.key_id)?;
        let change = ChangeKey::try_from(&request)?;
        let written = self
            .manager
            .update(&account_id, &key_id, change, &actor)
            .await?;
        Ok(Response::new(proto::UpdateKeyResponse {
            key: Some(convert::key_from_record(
                &written.record,
                self.manager.catalog(),
            )),
            revision: written.revision,
        }))
    }

    async fn record_usage(
        &self,
        request: Request<proto::RecordUsageRequest>,
    ) -> Result<Response<proto::RecordUsageResponse>, Status> {
        let request = request.into_inner();
        if request.uses.len() > MAX_USES_PER_REPORT {
            return Err(invalid_argument(
                "uses",
                format!(
                    "at most {MAX_USES_PER_REPORT} uses per call, got {}",
                    request.uses.len()
                ),
            ));
        }
        let now = UnixMillis::now();
        let latest_allowed = UnixMillis(now.0 + MAX_CLOCK_SKEW_MS);
        let mut uses = Vec::with_capacity(request.uses.len());
        for (index, reported) in request.uses.iter().enumerate() {
            let key_id = convert::key_id(&format!("uses[{index}].key_id"), &reported.key_id)?;
            let at = match &reported.used_at {
                None => now,
                Some(at) => {
                    let field = format!("uses[{index}].used_at");
                    let at = convert::timestamp_to_millis(&field, at)?;
                    if at > latest_allowed {
                        return Err(invalid_argument(
                            &field,
                            format!(
                                "lies more than a minute in the future; got {}",
                                at.rfc3339()
                            ),
                        ));
                    }
                    at
                }
            };
            uses.push((key_id, at));
        }
        self.manager.record_uses(&uses).await?;
        Ok(Response::new(proto::RecordUsageResponse {}))
    }

    async fn rotate_key(
        &self,
        request: Request<proto::RotateKeyRequest>,
    ) -> Result<Response<proto::RotateKeyResponse>, Status> {
        let account_id = convert::account_id(&request.get_ref().account_id)?;
        check_account(request.extensions().get(), &account_id)?;
        let actor = actor_of(&request);
        let request = request.into_inner();
        let key_id = convert::key_id("key_id", &request.key_id)?;
        let grace = convert::grace_period(request.grace_period.as_ref())?;
        let (rotated, secret) = self
            .manager
            .rotate(&account_id, &key_id, grace, &actor)
            .await?;
        let catalog = self.manager.catalog();
        Ok(Response::new(proto::RotateKeyResponse {
            key: Some(convert::key_from_record(&rotated.key, catalog)),
            secret: secret.into_exposed(),
            previous: Some(convert::key_from_record(&rotated.previous, catalog)),
            revision: rotated.revision,
        }))
    }

    async fn import_keys(
        &self,
        request: Request<proto::ImportKeysRequest>,
    ) -> Result<Response<proto::ImportKeysResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let actor = actor_of(&request);
        let keys = convert::imported_keys(request.into_inner())?;
        // A user JWT may import only into its own account.
        for key in &keys {
            check_account(caller.as_ref(), &key.account_id)?;
        }
        let imported = self.manager.import(keys, &actor).await?;
        let catalog = self.manager.catalog();
        Ok(Response::new(proto::ImportKeysResponse {
            keys: imported
                .keys
                .iter()
                .map(|record| convert::key_from_record(record, catalog))
                .collect(),
            revision: imported.revision,
        }))
    }

    async fn list_key_events(
        &self,
        request: Request<proto::ListKeyEventsRequest>,
    ) -> Result<Response<proto::ListKeyEventsResponse>, Status> {
        let account_id = convert::account_id(&request.get_ref().account_id)?;
        check_account(request.extensions().get(), &account_id)?;
        let request = request.into_inner();
        let key_id = if request.key_id.is_empty() {
            None
        } else {
            Some(convert::key_id("key_id", &request.key_id)?)
        };
        let page_size = convert::page_size(request.page_size)?;
        let after = convert::decode_event_page_token(&request.page_token)?;
        let page = self
            .manager
            .list_events(&account_id, key_id.as_ref(), after, page_size)
            .await?;
        Ok(Response::new(proto::ListKeyEventsResponse {
            events: page.events.iter().map(convert::key_event).collect(),
            next_page_token: page
                .next_after
                .map(convert::encode_event_page_token)
                .unwrap_or_default(),
        }))
    }

    async fn list_scopes(
        &self,
        _request: Request<proto::ListScopesRequest>,
    ) -> Result<Response<proto::ListScopesResponse>, Status> {
        let catalog = self.manager.catalog();
        Ok(Response::new(proto::ListScopesResponse {
            scopes: catalog
                .definitions()
                .iter()
                .map(|scope| proto::Scope {
                    name: scope.name.clone(),
                    description: scope.description.clone(),
                    implies: scope.implies.clone(),
                    auto_grant: scope.auto_grant,
                    reserved: scope.reserved,
                })
                .collect(),
            presets: catalog
                .presets()
                .iter()
                .map(|preset| proto::Preset {
                    name: preset.name.clone(),
                    description: preset.description.clone(),
                    scopes: catalog.names(preset.scopes).map(str::to_owned).collect(),
                })
                .collect(),
            key_prefix: self.manager.key_format().prefix().to_owned(),
        }))
    }

    type WatchRevocationsStream = watch::EventStream;

    async fn watch_revocations(
        &self,
        request: Request<proto::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let (_, extensions, request) = request.into_parts();
        let caller = HotPathCaller::of(&extensions);
        let named = if request.account_id.is_empty() {
            None
        } else {
            Some(convert::account_id(&request.account_id)?)
        };
        // A user JWT watches its own account, whether it names it or not.
        let account = match (&caller.account, named) {
            (Some(own), Some(named)) if *own != named => {
                return Err(Status::permission_denied(
                    "this JWT may watch only its own account's events; the request names another account",
                ));
            }
            (Some(own), _) => Some(own.clone()),
            (None, named) => named,
        };
        let checkpoints = match request.checkpoint_interval_ms {
            0 => watch::Checkpoints::WhenQuiet,
            ms => {
                let interval = Duration::from_millis(u64::from(ms));
                if !(watch::MIN_CHECKPOINT_INTERVAL..=watch::MAX_CHECKPOINT_INTERVAL)
                    .contains(&interval)
                {
                    return Err(invalid_argument(
                        "checkpoint_interval_ms",
                        format!(
                            "must be 0 (the server's interval) or between {} and {}, got {ms}",
                            watch::MIN_CHECKPOINT_INTERVAL.as_millis(),
                            watch::MAX_CHECKPOINT_INTERVAL.as_millis()
                        ),
                    ));
                }
                watch::Checkpoints::Every(interval)
            }
        };
        let stream = watch::start(
            Arc::clone(&self.feed),
            request.after_seq,
            watch::Asked {
                account,
                checkpoints,
            },
            caller.identity.clone(),
        )
        .await?;
        Ok(Response::new(stream))
    }
}
