//! Who may call which RPC. keyward's own callers prove who they are with
//! `authorization: Bearer <token>` gRPC metadata, where the token is either a
//! service token (configured only as its SHA-256, each allowed a list of
//! RPCs) or a user JWT (Carboncopy's "Privy JWT", verified by [`jwt`]) whose
//! subject is the one account its holder may manage.
//!
//! The policy works on gRPC method paths, so it covers every service the
//! server hosts, including ones added later (Envoy's
//! `envoy.service.auth.v3.Authorization/Check`). The tower layer in
//! `api/request_gate.rs` applies it before any handler runs; handlers of
//! account-scoped RPCs then compare the request's account with
//! [`Caller::User`].
//!
//! - Management RPCs (CreateKey, RevokeKey, UpdateKey, GetKey, ListKeys,
//!   RotateKey, ImportKeys, ListKeyEvents) need a credential allowed that RPC once any management credential is
//!   configured. With none configured they are open, and the server refuses
//!   to start on a non-loopback address unless told
//!   `--insecure-open-management`.
//! - Hot-path RPCs (Authenticate, CheckScope, WatchRevocations,
//!   RecordUsage, Check) need
//!   a service token allowed that RPC whenever management needs credentials
//!   or the server listens on a non-loopback address, unless the operator
//!   opts out (`auth.hot_path_requires_token = false` or
//!   `--insecure-open-hot-path`); see [`HotPathAccess`]. A user JWT may call
//!   CheckScope and WatchRevocations when `auth.jwt.rpcs` lists them, and
//!   then sees only its own account's keys and events.
//! - Everything else (ListScopes, health, reflection) is open: it reveals
//!   the catalog and the serving status, never a key.
//!
//! Hot-path handlers learn who called from a [`HotPathCaller`]: whose share
//! of watch streams a call uses, which account a JWT confines it to, and
//! whether the end-client address the request states (`client_ip`, Envoy's
//! client address) is believed. Only service tokens given
//! `trust_client_ip = true` are (and, when no service token is configured,
//! callers on loopback); anyone else's failed attempts count against their
//! own address, so nobody can get a stranger banned.
//!
//! Missing or unrecognised credentials are UNAUTHENTICATED; a recognised
//! caller without the right is PERMISSION_DENIED. Tokens and JWTs are never
//! logged or echoed.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::domain::AccountId;

pub mod jwt;
pub mod settings;

pub use jwt::{JwtSettings, JwtVerifier};

/// An RPC keyward knows by name, across all the services it hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    Authenticate,
    CheckScope,
    CreateKey,
    RevokeKey,
    GetKey,
    ListKeys,
    UpdateKey,
    ListScopes,
    WatchRevocations,
    /// Reports of keys verified in a caller's own process (keyward-client).
    RecordUsage,
    /// Envoy's `envoy.service.auth.v3.Authorization/Check`.
    Check,
    RotateKey,
    ImportKeys,
    ListKeyEvents,
}

/// How the policy treats an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcClass {
    Management,
    HotPath,
    Open,
}

impl Rpc {
    /// In declaration order: telemetry indexes its labels by `rpc as usize`.
    pub const ALL: [Rpc; 14] = [
        Rpc::Authenticate,
        Rpc::CheckScope,
        Rpc::CreateKey,
        Rpc::RevokeKey,
        Rpc::GetKey,
        Rpc::ListKeys,
        Rpc::UpdateKey,
        Rpc::ListScopes,
        Rpc::WatchRevocations,
        Rpc::RecordUsage,
        Rpc::Check,
        Rpc::RotateKey,
        Rpc::ImportKeys,
        Rpc::ListKeyEvents,
    ];

    pub const MANAGEMENT: [Rpc; 8] = [
        Rpc::CreateKey,
        Rpc::RevokeKey,
        Rpc::UpdateKey,
        Rpc::GetKey,
        Rpc::ListKeys,
        Rpc::RotateKey,
        Rpc::ImportKeys,
        Rpc::ListKeyEvents,
    ];

    /// The method's name as written in config files and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Rpc::Authenticate => "Authenticate",
            Rpc::CheckScope => "CheckScope",
            Rpc::CreateKey => "CreateKey",
            Rpc::RevokeKey => "RevokeKey",
            Rpc::GetKey => "GetKey",
            Rpc::ListKeys => "ListKeys",
            Rpc::UpdateKey => "UpdateKey",
            Rpc::ListScopes => "ListScopes",
            Rpc::WatchRevocations => "WatchRevocations",
            Rpc::RecordUsage => "RecordUsage",
            Rpc::Check => "Check",
            Rpc::RotateKey => "RotateKey",
            Rpc::ImportKeys => "ImportKeys",
            Rpc::ListKeyEvents => "ListKeyEvents",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|rpc| rpc.as_str() == name)
    }

    /// The RPC a gRPC request path names, if keyward knows it.
    pub fn from_path(path: &str) -> Option<Self> {
        if let Some(method) = path.strip_prefix("/keyward.v1.KeyService/") {
            return Self::from_name(method).filter(|rpc| *rpc != Rpc::Check);
        }
        (path == "/envoy.service.auth.v3.Authorization/Check").then_some(Rpc::Check)
    }

    pub fn class(self) -> RpcClass {
        match self {
            Rpc::CreateKey
            | Rpc::RevokeKey
            | Rpc::UpdateKey
            | Rpc::GetKey
            | Rpc::ListKeys
            | Rpc::RotateKey
            | Rpc::ImportKeys
            | Rpc::ListKeyEvents => RpcClass::Management,
            Rpc::Authenticate
            | Rpc::CheckScope
            | Rpc::WatchRevocations
            | Rpc::RecordUsage
            | Rpc::Check => RpcClass::HotPath,
            Rpc::ListScopes => RpcClass::Open,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    pub(crate) fn names() -> String {
        Self::ALL
            .iter()
            .map(|rpc| rpc.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of RPCs (one bit each).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct RpcSet(u16);

impl RpcSet {
    pub fn contains(self, rpc: Rpc) -> bool {
        self.0 & rpc.bit() != 0
    }

    pub fn insert(&mut self, rpc: Rpc) {
        self.0 |= rpc.bit();
    }

    pub fn iter(self) -> impl Iterator<Item = Rpc> {
        Rpc::ALL.into_iter().filter(move |rpc| self.contains(*rpc))
    }

    pub fn any_management(self) -> bool {
        Rpc::MANAGEMENT.iter().any(|rpc| self.contains(*rpc))
    }
}

impl fmt::Debug for RpcSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Rpc> for RpcSet {
    fn from_iter<I: IntoIterator<Item = Rpc>>(iter: I) -> Self {
        let mut set = Self::default();
        for rpc in iter {
            set.insert(rpc);
        }
        set
    }
}

/// A configured service token: its name (for logs) and what it may call.
/// Only the SHA-256 of the token is ever held.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceToken {
    pub name: Arc<str>,
    pub sha256: [u8; 32],
    pub rpcs: RpcSet,
    /// Whether its callers may state the end client's address (`client_ip`,
    /// Envoy's client address) for failed-authentication bans.
    pub trust_client_ip: bool,
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceToken")
            .field("name", &self.name)
            .field("rpcs", &self.rpcs)
            .field("trust_client_ip", &self.trust_client_ip)
            .finish_non_exhaustive()
    }
}

/// The validated `[auth]` section.
#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    pub service_tokens: Vec<ServiceToken>,
    pub jwt: Option<JwtSettings>,
    /// `auth.hot_path_requires_token` as written; `None` leaves the choice
    /// to [`HotPathAccess::decide`] at startup, once the listen address is
    /// known.
    pub hot_path_requires_token: Option<bool>,
}

impl AccessSettings {
    /// Whether anyone at all can present a credential for management RPCs.
    /// Without one, management is open (and only allowed on loopback).
    pub fn management_locked(&self) -> bool {
        self.jwt.is_some()
            || self
                .service_tokens
                .iter()
                .any(|token| token.rpcs.any_management())
    }

    /// Whether some credential can open a hot-path RPC: a service token
    /// listing one, or user JWTs allowed one.
    pub fn any_hot_path_credential(&self) -> bool {
        let hot = |rpcs: RpcSet| rpcs.iter().any(|rpc| rpc.class() == RpcClass::HotPath);
        self.service_tokens.iter().any(|token| hot(token.rpcs))
            || self.jwt.as_ref().is_some_and(|jwt| hot(jwt.rpcs))
    }
}

/// Whether the hot path needs a credential, and why; decided once at
/// startup from `[auth]`, the listen address and the
/// `--insecure-open-hot-path` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotPathAccess {
    /// A service token (or, for CheckScope and WatchRevocations, a user JWT
    /// allowed it) is required.
    Locked,
    /// Open to anyone who can reach the port.
    Open {
        /// The operator opened it although the default would have locked
        /// it (management needs credentials, or a non-loopback address).
        against_default: bool,
    },
}

impl HotPathAccess {
    /// Locked when `auth.hot_path_requires_token = true`; open when it is
    /// `false` or `insecure_open` (the flag) is set; otherwise locked
    /// exactly when management needs credentials or `listen` is not a
    /// loopback address.
    pub fn decide(settings: &AccessSettings, listen: SocketAddr, insecure_open: bool) -> Self {
        let default_locked = settings.management_locked() || !listen.ip().is_loopback();
        match (settings.hot_path_requires_token, insecure_open) {
            (Some(true), false) => Self::Locked,
            (Some(false), _) | (_, true) => Self::Open {
                against_default: default_locked,
            },
            (None, false) if default_locked => Self::Locked,
            (None, false) => Self::Open {
                against_default: false,
            },
        }
    }

    pub fn is_locked(self) -> bool {
        self == Self::Locked
    }
}

/// Who a request's credential proved the caller to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credential was needed (an open RPC or open management).
    Anonymous,
    /// A configured service token, by name. May act for any account.
    Service {
        name: Arc<str>,
        trust_client_ip: bool,
    },
    /// A verified JWT. May act only for this account.
    User { account: AccountId },
}

/// What a hot-path handler knows of its caller; the request gate puts one
/// in the extensions of every hot-path request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotPathCaller {
    /// Whose share of WatchRevocations streams a stream takes.
    pub identity: CallerIdentity,
    /// A user JWT's account: the call sees only this account's keys and
    /// events.
    pub account: Option<AccountId>,
    /// Whether the end-client address the request states is believed.
    pub client_address: ClientAddress,
}

/// A caller, as per-caller limits count it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerIdentity {
    Token(Arc<str>),
    User(AccountId),
    /// An anonymous caller, by its connection's address.
    Address(IpAddr),
    /// An anonymous caller whose address is unknown (not over TCP).
    Unknown,
}

impl fmt::Display for CallerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(name) => write!(f, "service token {name:?}"),
            Self::User(account) => write!(f, "the JWT of account {account}"),
            Self::Address(address) => write!(f, "{address}"),
            Self::Unknown => f.write_str("an anonymous caller"),
        }
    }
}

/// Where failed-authentication attempts are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddress {
    /// The caller is trusted to state the end client's address.
    Stated,
    /// The caller is not: its attempts count against its own address.
    Peer(Option<IpAddr>),
}

impl HotPathCaller {
    /// A caller in-process (tests, benchmarks), with no connection: trusted,
    /// unconfined.
    pub const IN_PROCESS: Self = Self {
        identity: CallerIdentity::Unknown,
        account: None,
        client_address: ClientAddress::Stated,
    };

    /// The caller of a hot-path request, as the request gate put it in the
    /// extensions; a handler called in-process (tests, benchmarks) has no
    /// gate and no connection, and gets [`HotPathCaller::IN_PROCESS`].
    pub fn of(extensions: &tonic::Extensions) -> &Self {
        static IN_PROCESS: HotPathCaller = HotPathCaller::IN_PROCESS;
        extensions.get::<Self>().unwrap_or(&IN_PROCESS)
    }

    /// The address bans are counted against, given the one the request
    /// states.
    pub fn client(&self, stated: Option<IpAddr>) -> Option<IpAddr> {
        match self.client_address {
            ClientAddress::Stated => stated,
            ClientAddress::Peer(peer) => peer,
        }
    }
}

impl Caller {
    /// Who this caller is in the audit trail, on a connection from `peer`:
    /// `token:<name>`, `jwt:<subject>` (the subject is the account), or
    /// `local` (no credential was needed: management is open).
    pub fn actor(&self, peer: Option<std::net::IpAddr>) -> crate::audit::Actor {
        let actor = match self {
            Caller::Service { name, .. } => format!("token:{name}"),
            Caller::User { account } => format!("jwt:{account}"),
            Caller::Anonymous => "local".into(),
        };
        crate::audit::Actor::new(actor, peer)
    }

    /// Refuses a request that names an account this caller may not act for.
    pub fn may_act_for(&self, account: &AccountId) -> Result<(), Refusal> {
        match self {
            Caller::User { account: own } if own != account => Err(Refusal::PermissionDenied(
                "this JWT may manage only its own account's keys; the request names another account"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Why a request was refused before reaching its handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Mapped to UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),
    /// Mapped to PERMISSION_DENIED.
    #[error("{0}")]
    PermissionDenied(String),
}

/// The policy, built once at startup.
pub struct AccessPolicy {
    tokens_by_hash: HashMap<[u8; 32], ServiceToken>,
    jwt: Option<JwtVerifier>,
    hot_path: HotPathAccess,
    management_locked: bool,
}

impl AccessPolicy {
    pub fn new(settings: &AccessSettings, hot_path: HotPathAccess) -> Self {
        Self {
            tokens_by_hash: settings
                .service_tokens
                .iter()
                .map(|token| (token.sha256, token.clone()))
                .collect(),
            jwt: settings.jwt.clone().map(JwtVerifier::new),
            hot_path,
            management_locked: settings.management_locked(),
        }
    }

    /// Whether a request for `rpc` needs its credential checked at all.
    /// Open requests skip reading the metadata entirely.
    pub fn needs_credential(&self, rpc: Option<Rpc>) -> bool {
        match rpc.map(Rpc::class) {
            Some(RpcClass::Management) => self.management_locked,
            Some(RpcClass::HotPath) => self.hot_path.is_locked(),
            Some(RpcClass::Open) | None => false,
        }
    }

    /// What a hot-path handler may know of `caller`, who called from
    /// `peer`. Anonymous callers are trusted with `client_ip` only on
    /// loopback and only while no service token exists (a deployment with
    /// tokens says who is trusted).
    pub fn hot_path_caller(&self, caller: Caller, peer: Option<SocketAddr>) -> HotPathCaller {
        let peer_ip = peer.map(|peer| peer.ip());
        let (identity, account, trusted) = match caller {
            Caller::Service {
                name,
                trust_client_ip,
            } => (CallerIdentity::Token(name), None, trust_client_ip),
            Caller::User { account } => {
                (CallerIdentity::User(account.clone()), Some(account), false)
            }
            Caller::Anonymous => (
                peer_ip.map_or(CallerIdentity::Unknown, CallerIdentity::Address),
                None,
                self.tokens_by_hash.is_empty() && peer_ip.is_some_and(|ip| ip.is_loopback()),
            ),
        };
        HotPathCaller {
            identity,
            account,
            client_address: if trusted {
                ClientAddress::Stated
            } else {
                ClientAddress::Peer(peer_ip)
            },
        }
    }

    /// Whether a request for `rpc` has its credential read: when it needs
    /// one, and on an open hot path when it carries one anyway (a token
    /// that may state client addresses, a JWT that confines the caller to
    /// its account; a wrong one is refused rather than ignored).
    pub fn reads_credential(&self, rpc: Option<Rpc>, carries_one: bool) -> bool {
        self.needs_credential(rpc)
            || (carries_one && rpc.map(Rpc::class) == Some(RpcClass::HotPath))
    }

    /// Decides a request for `rpc` carrying this `authorization` value.
    pub fn check(&self, rpc: Option<Rpc>, authorization: Option<&[u8]>) -> Result<Caller, Refusal> {
        let Some(rpc) =
            rpc.filter(|rpc| self.reads_credential(Some(*rpc), authorization.is_some()))
        else {
            return Ok(Caller::Anonymous);
        };
        let token = bearer_token(authorization)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(service) = self.tokens_by_hash.get(&hash) {
            if service.rpcs.contains(rpc) {
                return Ok(Caller::Service {
                    name: Arc::clone(&service.name),
                    trust_client_ip: service.trust_client_ip,
                });
            }
            return Err(Refusal::PermissionDenied(format!(
                "service token {:?} may not call {rpc}",
                service.name
            )));
        }
        match (&self.jwt, rpc.class()) {
            (Some(verifier), RpcClass::Management | RpcClass::HotPath) if looks_like_jwt(token) => {
                let account = verifier.verify(token).map_err(|problem| {
                    Refusal::Unauthenticated(format!("invalid JWT: {problem}"))
                })?;
                if verifier.settings().rpcs.contains(rpc) {
                    Ok(Caller::User { account })
                } else {
                    Err(Refusal::PermissionDenied(format!(
                        "user JWTs may not call {rpc}"
                    )))
                }
            }
            (None, RpcClass::HotPath) => Err(Refusal::Unauthenticated(format!(
                "{rpc} needs a service token; the bearer token is not one"
            ))),
            _ => Err(Refusal::Unauthenticated(
                "the bearer token is neither a known service token nor a valid JWT".into(),
            )),
        }
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer_token(authorization: Option<&[u8]>) -> Result<&str, Refusal> {
    let Some(value) = authorization else {
        return Err(Refusal::Unauthenticated(
            "missing credentials: send `authorization: Bearer <service token or JWT>` metadata"
                .into(),
        ));
    };
    let malformed = || {
        Refusal::Unauthenticated(
            "the authorization metadata must be `Bearer <service token or JWT>`".into(),
        )
    };
    let text = std::str::from_utf8(value).map_err(|_| malformed())?.trim();
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}

/// Three base64url parts separated by dots.
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The SHA-256 of a token as 64 lowercase hex digits, as the config holds it.
pub fn token_sha256_hex(token: &str) -> String {
    hex_lower(&Sha256::digest(token.as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// Parses a configured `sha256` value.
pub fn parse_sha256_hex(text: &str) -> Result<[u8; 32], String> {
    let valid = text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        return Err(
            "must be the token's SHA-256 as 64 lowercase hex digits (`printf %s \"$TOKEN\" | sha256sum`), never the token itself"
                .into(),
        );
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(hash)
}

/// A fresh service token (256 bits from the OS CSPRNG) as `kwt_` and 64 hex
/// digits, for `keyward service-token`.
pub fn generate_service_token() -> Result<String, getrandom::Error> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)?;
    Ok(format!("kwt_{}", hex_lower(&random)))
}

#[cfg(test)]
mod tests;
