//! Proto messages to domain requests and back. Every field a caller sends is
//! checked here, and a bad one becomes INVALID_ARGUMENT naming it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost_types::Timestamp;
use tonic::Status;

use super::status::invalid_argument;
use crate::authenticator::Required;
use crate::denial::{Denial, Reason};
use crate::domain::{AccountId, KeyDigest, KeyId, KeyName, Quota, RateLimit, Refill, UnixMillis};
use crate::key_cache::CachedKey;
use crate::key_management::{ChangeKey, CreateKey, ImportKey, MAX_IMPORT_KEYS};
use crate::key_metadata;
use crate::proto;
use crate::proto::authenticate_reply::{EncodedFields, EncodedKey, PickedEntries};
use crate::rate_limits::RateLimitStatus;
use crate::scope_catalog::{
    MAX_SCOPE_NAME_LEN, ScopeCatalog, ScopeIndex, ScopeSet, valid_scope_name,
};
use crate::storage::{KeyRecord, Metadata};

/// More required scopes than this in one request is a caller bug.
pub const MAX_REQUIRED_SCOPES: usize = 64;
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 1_000;
/// Year 9999, the end of RFC 3339.
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

pub fn account_id(raw: &str) -> Result<AccountId, Status> {
    AccountId::parse(raw).map_err(|e| invalid_argument("account_id", e))
}

pub fn key_id(field: &str, raw: &str) -> Result<KeyId, Status> {
    KeyId::parse(raw).map_err(|e| invalid_argument(field, e))
}

pub fn key_name(raw: &str) -> Result<KeyName, Status> {
    KeyName::parse(raw).map_err(|e| invalid_argument("name", e))
}

/// Errors name the subfield: `rate_limit.requests` or `rate_limit.per_seconds`.
pub fn rate_limit(raw: &proto::RateLimit) -> Result<RateLimit, Status> {
    rate_limit_at("rate_limit", raw)
}

/// [`rate_limit`] for a field named `field` (`keys[3].rate_limit`).
fn rate_limit_at(field: &str, raw: &proto::RateLimit) -> Result<RateLimit, Status> {
    RateLimit::new(raw.requests, raw.per_seconds).map_err(|e| {
        // RateLimit checks `requests` first.
        let subfield = if raw.requests == 0 {
            "requests"
        } else {
            "per_seconds"
        };
        invalid_argument(&format!("{field}.{subfield}"), e)
    })
}

/// Errors name the subfield: `quota.requests` or `quota.refill`.
pub fn quota(raw: &proto::Quota) -> Result<Quota, Status> {
    use proto::quota::Refill as P;
    let refill = match P::try_from(raw.refill) {
        Ok(P::Never) => Refill::Never,
        Ok(P::Daily) => Refill::Daily,
        Ok(P::Monthly) => Refill::Monthly,
        Ok(P::Unspecified) | Err(_) => {
            return Err(invalid_argument(
                "quota.refill",
                format!(
                    "{} is not a refill; use NEVER (1), DAILY (2) or MONTHLY (3)",
                    raw.refill
                ),
            ));
        }
    };
    Quota::new(raw.requests, refill).map_err(|e| invalid_argument("quota.requests", e))
}

fn proto_quota(quota: Option<Quota>) -> Option<proto::Quota> {
    use proto::quota::Refill as P;
    quota.map(|q| proto::Quota {
        requests: q.requests(),
        refill: match q.refill() {
            Refill::Never => P::Never,
            Refill::Daily => P::Daily,
            Refill::Monthly => P::Monthly,
        } as i32,
    })
}

pub fn client_ip(raw: &str) -> Result<Option<IpAddr>, Status> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    trimmed.parse().map(Some).map_err(|_| {
        invalid_argument(
            "client_ip",
            "must be an IPv4 or IPv6 address like 203.0.113.7 (no port)",
        )
    })
}

/// The scopes a hot-path request requires, in the order it named them.
/// A well-formed name the catalog does not know is no error: no key holds
/// it, so a live key is denied INSUFFICIENT_SCOPE naming it (as ext_authz
/// does), and a service that ships a new scope before this deployment's
/// catalog has it gets 403s, not exceptions.
#[derive(Debug)]
pub struct RequiredScopes {
    known: Vec<ScopeIndex>,
    /// Names in request order, each known (an index into `known`) or not.
    named: Vec<Result<ScopeIndex, String>>,
}

impl RequiredScopes {
    /// What the authenticator checks: the first unknown name, if any (it
    /// is missing whatever the key holds), else the known scopes.
    pub fn as_required(&self) -> Required<'_> {
        match self.named.iter().find_map(|named| named.as_ref().err()) {
            Some(unknown) => Required::Unknown(unknown),
            None => Required::Scopes(&self.known),
        }
    }

    /// The names `effective` does not cover, in request order (unknown
    /// names always).
    pub fn missing(&self, effective: ScopeSet, catalog: &ScopeCatalog) -> Vec<String> {
        self.named
            .iter()
            .filter_map(|named| match named {
                Ok(index) if effective.contains(*index) => None,
                Ok(index) => Some(catalog.name(*index).to_owned()),
                Err(unknown) => Some(unknown.clone()),
            })
            .collect()
    }
}

/// Scope names a request requires, resolved against the catalog. A name
/// that no catalog could hold (not `[a-z0-9][a-z0-9:_.-]*`, at most
/// 128 bytes) is a caller bug: INVALID_ARGUMENT naming `field`.
pub fn required_scopes(
    field: &str,
    names: &[String],
    catalog: &ScopeCatalog,
) -> Result<RequiredScopes, Status> {
    if names.len() > MAX_REQUIRED_SCOPES {
        return Err(invalid_argument(
            field,
            format!("at most {MAX_REQUIRED_SCOPES} scopes, got {}", names.len()),
        ));
    }
    let mut required = RequiredScopes {
        known: Vec::with_capacity(names.len()),
        named: Vec::with_capacity(names.len()),
    };
    for (index, name) in names.iter().enumerate() {
        match catalog.lookup(name) {
            Some(scope) => {
                required.known.push(scope);
                required.named.push(Ok(scope));
            }
            None if valid_scope_name(name) => required.named.push(Err(name.clone())),
            None => {
                return Err(invalid_argument(
                    &format!("{field}[{index}]"),
                    format!(
                        "{:?} is not a scope name: 1 to {MAX_SCOPE_NAME_LEN} bytes of a-z, 0-9, \
                         ':', '_', '-', '.', starting with a letter or digit",
                        name.chars().take(MAX_SCOPE_NAME_LEN).collect::<String>()
                    ),
                ));
            }
        }
    }
    Ok(required)
}

pub fn timestamp_to_millis(field: &str, raw: &Timestamp) -> Result<UnixMillis, Status> {
    if !(0..1_000_000_000).contains(&raw.nanos) {
        return Err(invalid_argument(
            field,
            format!("nanos must be between 0 and 999999999; got {}", raw.nanos),
        ));
    }
    if !(0..=MAX_TIMESTAMP_SECONDS).contains(&raw.seconds) {
        return Err(invalid_argument(
            field,
            format!(
                "must be between 1970-01-01 and 9999-12-31; got seconds = {}",
                raw.seconds
            ),
        ));
    }
    Ok(UnixMillis(
        raw.seconds * 1000 + i64::from(raw.nanos / 1_000_000),
    ))
}

pub fn millis_to_timestamp(at: UnixMillis) -> Timestamp {
    Timestamp {
        seconds: at.0.div_euclid(1000),
        nanos: (at.0.rem_euclid(1000) * 1_000_000) as i32,
    }
}

impl TryFrom<proto::CreateKeyRequest> for CreateKey {
    type Error = Status;

    fn try_from(request: proto::CreateKeyRequest) -> Result<Self, Self::Error> {
        Ok(CreateKey {
            account_id: account_id(&request.account_id)?,
            name: key_name(&request.name)?,
            scopes: request.scopes,
            preset: (!request.preset.is_empty()).then_some(request.preset),
            expires_at: request
                .expires_at
                .as_ref()
                .map(|t| timestamp_to_millis("expires_at", t))
                .transpose()?,
            rate_limit: request.rate_limit.as_ref().map(rate_limit).transpose()?,
            quota: request.quota.as_ref().map(quota).transpose()?,
            metadata: metadata(&request.metadata)?,
            allowed_networks: allowed_networks(&request.allowed_networks)?,
        })
    }
}

/// A caller's metadata, validated; an error names the entry
/// (`metadata["Plan"]`) or `metadata` for the count.
pub fn metadata(raw: &HashMap<String, String>) -> Result<Metadata, Status> {
    key_metadata::parse(raw).map_err(|e| invalid_argument(&e.field, e.reason))
}

/// A caller's allowed networks, normalised; an error names
/// `allowed_networks[i]`, or `allowed_networks` for the count.
pub fn allowed_networks(raw: &[String]) -> Result<Vec<String>, Status> {
    crate::allowed_networks::parse(raw).map_err(|e| invalid_argument(&e.field, e.reason))
}

/// The fields UpdateKey may change.
const UPDATABLE: &str = "name, scopes, rate_limit, quota, metadata, allowed_networks";

impl TryFrom<&proto::UpdateKeyRequest> for ChangeKey {
    type Error = Status;

    fn try_from(request: &proto::UpdateKeyRequest) -> Result<Self, Self::Error> {
        let paths: Vec<&str> = match &request.update_mask {
            Some(mask) if !mask.paths.is_empty() => mask.paths.iter().map(String::as_str).collect(),
            // No mask: every field that is set.
            _ => {
                let mut inferred = Vec::new();
                if !request.name.is_empty() {
                    inferred.push("name");
                }
                if !request.scopes.is_empty() {
                    inferred.push("scopes");
                }
                if request.rate_limit.is_some() {
                    inferred.push("rate_limit");
                }
                if request.quota.is_some() {
                    inferred.push("quota");
                }
                if !request.metadata.is_empty() {
                    inferred.push("metadata");
                }
                if !request.allowed_networks.is_empty() {
                    inferred.push("allowed_networks");
                }
                if inferred.is_empty() {
                    return Err(invalid_argument(
                        "update_mask",
                        format!("nothing to update; set update_mask to some of: {UPDATABLE}"),
                    ));
                }
                inferred
            }
        };
        let mut change = ChangeKey::default();
        for path in paths {
            let duplicate = match path {
                "name" => change.name.replace(key_name(&request.name)?).is_some(),
                "scopes" => change.scopes.replace(request.scopes.clone()).is_some(),
                "rate_limit" => change
                    .rate_limit
                    .replace(request.rate_limit.as_ref().map(rate_limit).transpose()?)
                    .is_some(),
                "quota" => change
                    .quota
                    .replace(request.quota.as_ref().map(quota).transpose()?)
                    .is_some(),
                "metadata" => change
                    .metadata
                    .replace(metadata(&request.metadata)?)
                    .is_some(),
                "allowed_networks" => change
                    .allowed_networks
                    .replace(allowed_networks(&request.allowed_networks)?)
                    .is_some(),
                other => {
                    return Err(invalid_argument(
                        "update_mask",
                        format!(
                            "unknown path {:?}; updatable: {UPDATABLE}",
                            other.chars().take(64).collect::<String>()
                        ),
                    ));
                }
            };
            if duplicate {
                return Err(invalid_argument(
                    "update_mask",
                    format!("path {path:?} is listed twice"),
                ));
            }
        }
        Ok(change)
    }
}

pub fn page_size(raw: i32) -> Result<u32, Status> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(invalid_argument("page_size", "must not be negative")),
        n => Ok((n as u32).min(MAX_PAGE_SIZE)),
    }
}

const PAGE_TOKEN_TAG: &str = "k1:";

pub fn encode_page_token(after: &KeyId) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PAGE_TOKEN_TAG}{after}"))
}

const EVENT_PAGE_TOKEN_TAG: &str = "e1:";

/// ListKeyEvents' page token: the last sequence of the previous page.
pub fn encode_event_page_token(after_seq: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{EVENT_PAGE_TOKEN_TAG}{after_seq}"))
}

/// The sequence to read after (0 for the first page).
pub fn decode_event_page_token(raw: &str) -> Result<u64, Status> {
    if raw.is_empty() {
        return Ok(0);
    }
    let bad = || {
        invalid_argument(
            "page_token",
            "not a token from a previous ListKeyEvents response",
        )
    };
    if raw.len() > 64 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let seq = text.strip_prefix(EVENT_PAGE_TOKEN_TAG).ok_or_else(bad)?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    seq.parse().map_err(|_| bad())
}

/// One audit row as the API shows it.
pub fn key_event(entry: &crate::audit::AuditEntry) -> proto::KeyEvent {
    proto::KeyEvent {
        seq: entry.seq,
        key_id: entry.key_id.to_string(),
        account_id: entry.account_id.to_string(),
        kind: entry.kind.clone(),
        at: Some(millis_to_timestamp(entry.at)),
        actor: entry.actor.clone(),
        peer: entry.peer.clone(),
    }
}

pub fn decode_page_token(raw: &str) -> Result<Option<KeyId>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || {
        invalid_argument(
            "page_token",
            "not a token from a previous ListKeys response",
        )
    };
    if raw.len() > 256 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let id = text.strip_prefix(PAGE_TOKEN_TAG).ok_or_else(bad)?;
    KeyId::parse(id).map(Some).map_err(|_| bad())
}

fn proto_rate_limit(limit: Option<RateLimit>) -> Option<proto::RateLimit> {
    limit.map(|l| proto::RateLimit {
        requests: l.requests(),
        per_seconds: l.per_seconds(),
    })
}

pub fn key_from_record(record: &KeyRecord, catalog: &ScopeCatalog) -> proto::Key {
    let (granted, _) = catalog.granted_from_names(record.scopes.iter().map(String::as_str));
    proto::Key {
        id: record.id.as_str().to_owned(),
        account_id: record.account_id.as_str().to_owned(),
        name: record.name.clone(),
        start: record.start.clone(),
        scopes: record.scopes.clone(),
        created_at: Some(millis_to_timestamp(record.created_at)),
        expires_at: record.expires_at.map(millis_to_timestamp),
        revoked_at: record.revoked_at.map(millis_to_timestamp),
        last_used_at: record.last_used_at.map(millis_to_timestamp),
        rate_limit: proto_rate_limit(record.rate_limit),
        quota: proto_quota(record.quota),
        effective_scopes: catalog.sorted_names(catalog.effective(granted)),
        rotated_from: record
            .rotated_from
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
        metadata: record
            .metadata
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        allowed_networks: record.allowed_networks.clone(),
    }
}

/// A cached key as Authenticate's reply carries it: the fields that hold
/// its strings (id, account, name, start, predecessor, metadata, allowed
/// networks) are copied from the cached key's own bytes, which are written
/// as those fields (`key_cache/cached_key.rs`); the rest of `Key` is built
/// per call.
pub fn encoded_key(
    key: &Arc<CachedKey>,
    catalog: &ScopeCatalog,
    fields: &ScopeFields,
) -> EncodedKey {
    let (_, head, end) = key.encoded_fields();
    EncodedKey {
        key: key_from_cached(key),
        encoded: Some(EncodedFields {
            bytes: Arc::clone(key) as Arc<dyn AsRef<[u8]> + Send + Sync>,
            head,
            end,
        }),
        scopes: Some(PickedEntries {
            table: Arc::clone(&fields.scopes),
            picked: key.granted.bits(),
        }),
        effective_scopes: Some(PickedEntries {
            table: Arc::clone(&fields.effective_scopes),
            picked: catalog.sorted_bits(key.effective),
        }),
    }
}

/// Every scope name of the catalog encoded once as `Key`'s field 5
/// (`scopes`, catalog order, as a key's granted set numbers them) and 11
/// (`effective_scopes`, alphabetical), so that a reply picks a key's names
/// instead of allocating them per call.
pub struct ScopeFields {
    scopes: Arc<[Box<[u8]>]>,
    effective_scopes: Arc<[Box<[u8]>]>,
}

impl ScopeFields {
    pub fn new(catalog: &ScopeCatalog) -> Self {
        fn table<'a>(field: u32, names: impl Iterator<Item = &'a str>) -> Arc<[Box<[u8]>]> {
            names
                .map(|name| {
                    let mut entry = Vec::new();
                    prost::encoding::string::encode(field, &name.to_owned(), &mut entry);
                    entry.into_boxed_slice()
                })
                .collect()
        }
        Self {
            scopes: table(5, catalog.all_names()),
            effective_scopes: table(11, catalog.all_names_sorted()),
        }
    }
}

/// Everything of a cached key but what `encoded_key` copies as bytes or
/// picks from [`ScopeFields`].
fn key_from_cached(key: &CachedKey) -> proto::Key {
    proto::Key {
        created_at: Some(millis_to_timestamp(key.created_at)),
        expires_at: key.expires_at().map(millis_to_timestamp),
        revoked_at: key.revoked_at().map(millis_to_timestamp),
        last_used_at: key.last_used_at().map(millis_to_timestamp),
        rate_limit: proto_rate_limit(key.rate_limit()),
        quota: proto_quota(key.quota()),
        ..Default::default()
    }
}

/// RotateKey's `grace_period`: unset is `None` (revoke at once); negative
/// or malformed durations are refused (the maximum is the manager's).
pub fn grace_period(raw: Option<&prost_types::Duration>) -> Result<Option<Duration>, Status> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if !(0..1_000_000_000).contains(&raw.nanos) || raw.seconds < 0 {
        return Err(invalid_argument(
            "grace_period",
            "must be a non-negative duration (seconds >= 0, nanos 0 to 999999999)",
        ));
    }
    Ok(Some(Duration::new(raw.seconds as u64, raw.nanos as u32)))
}

/// An ImportKeys request's entries, each field checked where it can be
/// without the catalog and the key format (the manager checks the rest).
/// Errors name `keys[i].<field>`.
pub fn imported_keys(request: proto::ImportKeysRequest) -> Result<Vec<ImportKey>, Status> {
    if request.keys.is_empty() || request.keys.len() > MAX_IMPORT_KEYS {
        return Err(invalid_argument(
            "keys",
            format!("1 to {MAX_IMPORT_KEYS} keys, got {}", request.keys.len()),
        ));
    }
    request
        .keys
        .into_iter()
        .enumerate()
        .map(|(index, key)| {
            let field = |name: &str| format!("keys[{index}].{name}");
            let bad =
                |name: &str, reason: &dyn std::fmt::Display| invalid_argument(&field(name), reason);
            let account_id =
                AccountId::parse(&key.account_id).map_err(|e| bad("account_id", &e))?;
            let name = KeyName::parse(&key.name).map_err(|e| bad("name", &e))?;
            let digest = sha256_hex(&key.sha256_hex).map_err(|e| bad("sha256_hex", &e))?;
            let created_at = key
                .created_at
                .as_ref()
                .map(|t| timestamp_to_millis(&field("created_at"), t))
                .transpose()?;
            let expires_at = key
                .expires_at
                .as_ref()
                .map(|t| timestamp_to_millis(&field("expires_at"), t))
                .transpose()?;
            let rate_limit = key
                .rate_limit
                .as_ref()
                .map(|raw| rate_limit_at(&field("rate_limit"), raw))
                .transpose()?;
            Ok(ImportKey {
                account_id,
                name,
                digest,
                start: key.start,
                scopes: key.scopes,
                created_at,
                expires_at,
                rate_limit,
                // `metadata["plan"]` becomes `keys[3].metadata["plan"]`.
                metadata: key_metadata::parse(&key.metadata)
                    .map_err(|e| invalid_argument(&field(&e.field), e.reason))?,
            })
        })
        .collect()
}

/// 64 lowercase hex digits: a SHA-256 digest as another system stored it.
fn sha256_hex(raw: &str) -> Result<KeyDigest, String> {
    if raw.len() != 64 {
        return Err(format!(
            "must be 64 lowercase hex characters (a SHA-256 digest), got {} characters",
            raw.chars().count()
        ));
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("must be 64 lowercase hex characters (0-9, a-f)".into());
    }
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16).expect("checked hex"))
        .collect();
    Ok(KeyDigest::from_bytes(&bytes).expect("32 bytes"))
}

fn reason(reason: Reason) -> proto::denial::Reason {
    use proto::denial::Reason as P;
    match reason {
        Reason::MissingCredential => P::MissingCredential,
        Reason::MalformedCredential => P::MalformedCredential,
        Reason::UnknownKey => P::UnknownKey,
        Reason::Revoked => P::Revoked,
        Reason::Expired => P::Expired,
        Reason::InsufficientScope => P::InsufficientScope,
        Reason::RateLimited => P::RateLimited,
        Reason::TooManyFailedAttempts => P::TooManyFailedAttempts,
        Reason::Unavailable => P::Unavailable,
        Reason::IpNotAllowed => P::IpNotAllowed,
        Reason::QuotaExceeded => P::QuotaExceeded,
    }
}

pub fn denial(denial: &Denial) -> proto::Denial {
    proto::Denial {
        reason: reason(denial.reason) as i32,
        code: denial.code.to_string(),
        message: denial.message.to_string(),
        http_status: u32::from(denial.http_status),
        required_scope: denial.required_scope.clone().unwrap_or_default(),
        retry_after_ms: denial.retry_after_ms,
    }
}

pub fn rate_limit_status(status: RateLimitStatus) -> proto::RateLimitStatus {
    proto::RateLimitStatus {
        limit: status.limit,
        remaining: status.remaining,
        reset_ms: u64::try_from(status.reset.as_millis()).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let id = KeyId::generate();
        assert_eq!(
            decode_page_token(&encode_page_token(&id)).unwrap(),
            Some(id)
        );
        assert_eq!(decode_page_token("").unwrap(), None);
        for garbage in ["%%%", "aGVsbG8", &"A".repeat(300), "azE6a2V5XzEyMw"] {
            let status = decode_page_token(garbage).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{garbage}");
            assert!(status.message().starts_with("page_token:"));
        }
    }

    #[test]
    fn event_page_tokens_round_trip_and_garbage_is_refused() {
        for seq in [1, 42, u64::MAX] {
            assert_eq!(
                decode_event_page_token(&encode_event_page_token(seq)).unwrap(),
                seq
            );
        }
        assert_eq!(decode_event_page_token("").unwrap(), 0);
        let key_token = encode_page_token(&KeyId::generate());
        let not_a_number = URL_SAFE_NO_PAD.encode("e1:-5");
        for garbage in [
            "%%%",
            "aGVsbG8",
            &"A".repeat(300),
            &key_token,
            &not_a_number,
        ] {
            let status = decode_event_page_token(garbage).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{garbage}");
            assert!(status.message().starts_with("page_token:"));
        }
    }

    #[test]
    fn page_sizes_default_clamp_and_refuse_negatives() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(5_000).unwrap(), MAX_PAGE_SIZE);
        assert_eq!(page_size(i32::MAX).unwrap(), MAX_PAGE_SIZE);
        for negative in [-1, i32::MIN] {
            let status = page_size(negative).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with("page_size:"), "{status:?}");
        }
    }

    #[test]
    fn timestamps_convert_and_out_of_range_is_refused() {
        let at = UnixMillis(1_700_000_000_123);
        assert_eq!(
            timestamp_to_millis("t", &millis_to_timestamp(at)).unwrap(),
            at
        );
        let bad_nanos = Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert!(timestamp_to_millis("t", &bad_nanos).is_err());
        let far = Timestamp {
            seconds: MAX_TIMESTAMP_SECONDS + 1,
            nanos: 0,
        };
        assert!(timestamp_to_millis("t", &far).is_err());
    }
}
