//! `keyward.v1.KeyService`: thin handlers that convert, call the
//! authenticator or the key manager, and convert back.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use super::status::invalid_argument;
use super::watch;
use crate::access_control::{Caller, HotPathCaller};
use crate::authenticator::{Authenticator, Presented, PresentedKey, Required};
use crate::change_feed::ChangeFeed;
use crate::domain::AccountId;
use crate::key_management::{ChangeKey, CreateKey, KeyManager};
use crate::proto;
use crate::proto::key_service_server::KeyService;
use crate::telemetry::Surface;

pub struct KeyServiceApi {
    authenticator: Arc<Authenticator>,
    manager: Arc<KeyManager>,
    feed: Arc<ChangeFeed>,
}

impl KeyServiceApi {
    pub fn new(
        authenticator: Arc<Authenticator>,
        manager: Arc<KeyManager>,
        feed: Arc<ChangeFeed>,
    ) -> Self {
        Self {
            authenticator,
            manager,
            feed,
        }
    }
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
    ) -> Result<Response<proto::AuthenticateResponse>, Status> {
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
                required: Required::Scopes(&required),
                client,
                account: caller.account.as_ref(),
            })
            .await;
        Ok(Response::new(proto::AuthenticateResponse {
            allowed: verdict.allowed(),
            key: verdict
                .key()
                .map(|key| convert::key_from_cached(key, catalog)),
            denial: verdict.denial().map(convert::denial),
            rate_limit: verdict.rate_limit().map(convert::rate_limit_status),
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
                required: Required::Scopes(&required),
                client,
                account: caller.account.as_ref(),
            })
            .await;
        let missing_scopes = match verdict.key() {
            Some(key) => required
                .iter()
                .filter(|&&scope| !key.effective.contains(scope))
                .map(|&scope| catalog.name(scope).to_owned())
                .collect(),
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
        let create = CreateKey::try_from(request.into_inner())?;
        check_account(caller.as_ref(), &create.account_id)?;
        let (record, secret) = self.manager.create(create).await?;
        Ok(Response::new(proto::CreateKeyResponse {
            key: Some(convert::key_from_record(&record, self.manager.catalog())),
            secret: secret.into_exposed(),
        }))
    }

    async fn revoke_key(
        &self,
        request: Request<proto::RevokeKeyRequest>,
    ) -> Result<Response<proto::RevokeKeyResponse>, Status> {
        let account_id = convert::account_id(&request.get_ref().account_id)?;
        check_account(request.extensions().get(), &account_id)?;
        let request = request.into_inner();
        let key_id = convert::key_id("key_id", &request.key_id)?;
        let record = self.manager.revoke(&account_id, &key_id).await?;
        Ok(Response::new(proto::RevokeKeyResponse {
            key: Some(convert::key_from_record(&record, self.manager.catalog())),
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
        let request = request.into_inner();
        let key_id = convert::key_id("key_id", &request.key_id)?;
        let change = ChangeKey::try_from(&request)?;
        let record = self.manager.update(&account_id, &key_id, change).await?;
        Ok(Response::new(proto::UpdateKeyResponse {
            key: Some(convert::key_from_record(&record, self.manager.catalog())),
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
        let stream = watch::start(
            Arc::clone(&self.feed),
            request.after_seq,
            account,
            caller.identity.clone(),
        )
        .await?;
        Ok(Response::new(stream))
    }
}
