//! The audit trail of key management: who changed which key, how, when and
//! from where. Every management write appends its rows to `key_audit` in
//! the same transaction as the change itself (see `storage/shared.rs`,
//! `append_audit_fn!`), and `ListKeyEvents` reads them back, oldest first.
//!
//! The trail is separate from the event log (`key_events`): the log exists
//! for replicas to follow and is pruned on the change feed's short
//! retention; the trail is for people, kept for `audit.retention_days`
//! (default 365) and pruned by its own task. It holds no secret and no
//! digest: a key id, its account, the kind of change, the time, the actor
//! and the peer address.
//!
//! Values only (a layer-1 module, like `domain.rs`): the store writes and
//! reads the rows (`storage/`), `access_control::Caller::actor` names the
//! actor, and `replica.rs` runs the daily pruner.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{AccountId, KeyId, UnixMillis};
use crate::settings::{SettingError, in_range};

/// Who made a management change, as the trail records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `token:<name>` (a service token), `jwt:<subject>` (a user JWT), or
    /// `local` (management open to loopback, or an in-process caller).
    pub actor: String,
    /// The caller's IP address (`127.0.0.1`; the port is ephemeral and
    /// says nothing); empty when not over TCP.
    pub peer: String,
}

impl Actor {
    /// A caller in this process (tests, benchmarks): `local`, no peer.
    pub fn in_process() -> Self {
        Self {
            actor: "local".into(),
            peer: String::new(),
        }
    }

    /// An actor by name (`token:<name>`, `jwt:<subject>`, `local`), on a
    /// connection from `peer` (see `access_control::Caller::actor`).
    pub fn new(actor: String, peer: Option<IpAddr>) -> Self {
        Self {
            actor,
            peer: peer.map(|peer| peer.to_string()).unwrap_or_default(),
        }
    }
}

/// What a management write did to a key, as the trail names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Created,
    Imported,
    Rotated,
    Revoked,
    ScopesChanged,
    Renamed,
    RateLimitChanged,
    QuotaChanged,
    MetadataChanged,
    NetworksChanged,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Created => "created",
            AuditKind::Imported => "imported",
            AuditKind::Rotated => "rotated",
            AuditKind::Revoked => "revoked",
            AuditKind::ScopesChanged => "scopes_changed",
            AuditKind::Renamed => "renamed",
            AuditKind::RateLimitChanged => "rate_limit_changed",
            AuditKind::QuotaChanged => "quota_changed",
            AuditKind::MetadataChanged => "metadata_changed",
            AuditKind::NetworksChanged => "networks_changed",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    pub key_id: KeyId,
    pub account_id: AccountId,
    /// One of the kinds [`AuditKind::as_str`] names.
    pub kind: String,
    pub at: UnixMillis,
    pub actor: String,
    pub peer: String,
}

pub const DEFAULT_RETENTION_DAYS: u32 = 365;
/// How often the trail is pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// `[audit]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    pub retention_days: Option<u32>,
}

/// Validated `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Rows older than this are pruned.
    pub retention: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention: days(DEFAULT_RETENTION_DAYS),
        }
    }
}

fn days(count: u32) -> Duration {
    Duration::from_secs(u64::from(count) * 24 * 3600)
}

impl AuditSettings {
    /// Validates `[audit]`.
    pub fn from_raw(raw: RawAudit) -> Result<Self, SettingError> {
        let retention_days = in_range(
            raw.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS),
            1,
            36_500,
        )
        .map_err(SettingError::at("audit.retention_days"))?;
        Ok(Self {
            retention: days(retention_days),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_defaults_to_a_year_and_is_bounded() {
        let default = AuditSettings::from_raw(RawAudit::default()).unwrap();
        assert_eq!(default.retention, days(365));
        for bad in [0, 36_501] {
            let error = AuditSettings::from_raw(RawAudit {
                retention_days: Some(bad),
            })
            .unwrap_err();
            assert_eq!(error.key, "audit.retention_days");
        }
        let short = AuditSettings::from_raw(RawAudit {
            retention_days: Some(1),
        })
        .unwrap();
        assert_eq!(short.retention, days(1));
    }
}
