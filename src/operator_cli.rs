//! `keyward keys ...`: the operator CLI, a gRPC client of a running server.
//! It sends the token as `authorization: Bearer ...` (never printing it),
//! speaks TLS and mutual TLS when asked, and prints keys as a table or as
//! JSON. The only secrets it ever prints are the ones CreateKey and
//! RotateKey return, once.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::cli::{ConnectionArgs, KeysCommand, RateLimitArg, RateLimitChange};
use crate::proto;
use crate::proto::key_service_client::KeyServiceClient;

/// What went wrong, for the one line the binary prints.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("{rpc} failed: {code:?}: {message}")]
    Rpc {
        rpc: &'static str,
        code: tonic::Code,
        message: String,
    },
}

/// Runs one `keys` command and returns what to print on stdout.
pub async fn run(command: KeysCommand) -> Result<String, CliError> {
    match command {
        KeysCommand::Create {
            connection,
            account,
            scopes,
            preset,
            name,
            expires_in,
            rate_limit,
            meta,
            allow_network,
        } => {
            let request = proto::CreateKeyRequest {
                account_id: account,
                name,
                scopes,
                preset: preset.unwrap_or_default(),
                expires_at: expires_in.map(expiry).transpose()?,
                rate_limit: rate_limit.map(proto_rate_limit),
                metadata: meta.into_iter().collect(),
                allowed_networks: allow_network,
                quota: None,
            };
            create(&connection, request).await
        }
        KeysCommand::List {
            connection,
            account,
            include_revoked,
        } => list(&connection, account, include_revoked).await,
        KeysCommand::Get {
            connection,
            account,
            id,
        } => {
            let mut client = Client::connect(&connection).await?;
            let request = proto::GetKeyRequest {
                account_id: account,
                key_id: id,
            };
            let response = client
                .call("GetKey", request, |c, r| Box::pin(c.get_key(r)))
                .await?;
            Ok(show(&connection, response.key))
        }
        KeysCommand::Update {
            connection,
            account,
            id,
            name,
            scopes,
            rate_limit,
            meta,
            clear_meta,
            allow_network,
            clear_networks,
        } => {
            let restrictions = Restrictions {
                metadata: (clear_meta || !meta.is_empty()).then(|| meta.into_iter().collect()),
                allowed_networks: (clear_networks || !allow_network.is_empty())
                    .then_some(allow_network),
            };
            update(
                &connection,
                account,
                id,
                name,
                scopes,
                rate_limit,
                restrictions,
            )
            .await
        }
        KeysCommand::Revoke {
            connection,
            account,
            id,
        } => {
            let mut client = Client::connect(&connection).await?;
            let request = proto::RevokeKeyRequest {
                account_id: account,
                key_id: id,
            };
            let response = client
                .call("RevokeKey", request, |c, r| Box::pin(c.revoke_key(r)))
                .await?;
            Ok(show(&connection, response.key))
        }
        KeysCommand::Rotate {
            connection,
            account,
            grace,
            key_id,
        } => rotate(&connection, account, key_id, grace).await,
        KeysCommand::Import { connection, file } => import(&connection, &file).await,
        KeysCommand::Events {
            connection,
            account,
            key_id,
        } => events(&connection, account, key_id.unwrap_or_default()).await,
    }
}

async fn rotate(
    connection: &ConnectionArgs,
    account: String,
    key_id: String,
    grace: Option<Duration>,
) -> Result<String, CliError> {
    let mut client = Client::connect(connection).await?;
    let request = proto::RotateKeyRequest {
        account_id: account,
        key_id,
        grace_period: grace.map(|grace| prost_types::Duration {
            seconds: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
            nanos: grace.subsec_nanos() as i32,
        }),
    };
    let response = client
        .call("RotateKey", request, |c, r| Box::pin(c.rotate_key(r)))
        .await?;
    let key = KeyView::from(response.key.unwrap_or_default());
    let previous = KeyView::from(response.previous.unwrap_or_default());
    if connection.json {
        return Ok(json(&RotatedView {
            key,
            secret: response.secret,
            previous,
        }));
    }
    let mut out = String::from("new key:\n");
    out.push_str(&table(std::slice::from_ref(&key)));
    out.push_str("\nold key (as the rotation left it):\n");
    out.push_str(&table(std::slice::from_ref(&previous)));
    let _ = writeln!(
        out,
        "\nsecret (shown only now; keyward keeps only its hash):\n{}",
        response.secret
    );
    Ok(out)
}

/// Keys per ImportKeys call (the server's maximum).
const IMPORT_BATCH: usize = 1_000;

/// One line of an import file: ImportedKey's fields, times in RFC 3339.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    account_id: String,
    name: String,
    sha256_hex: String,
    start: String,
    #[serde(default)]
    scopes: Vec<String>,
    created_at: Option<String>,
    expires_at: Option<String>,
    rate_limit: Option<RateLimitView>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

impl ImportLine {
    fn into_proto(self) -> Result<proto::ImportedKey, String> {
        let time = |field: &str, text: Option<String>| {
            text.map(|text| {
                let at = humantime::parse_rfc3339(&text).map_err(|e| {
                    format!("{field}: {e}; use RFC 3339 UTC, like 2026-01-31T12:00:00Z")
                })?;
                let since = at
                    .duration_since(UNIX_EPOCH)
                    .map_err(|_| format!("{field}: before 1970"))?;
                Ok::<_, String>(prost_types::Timestamp {
                    seconds: i64::try_from(since.as_secs())
                        .map_err(|_| format!("{field}: too far"))?,
                    nanos: since.subsec_nanos() as i32,
                })
            })
            .transpose()
        };
        Ok(proto::ImportedKey {
            created_at: time("created_at", self.created_at)?,
            expires_at: time("expires_at", self.expires_at)?,
            account_id: self.account_id,
            name: self.name,
            sha256_hex: self.sha256_hex,
            start: self.start,
            scopes: self.scopes,
            rate_limit: self.rate_limit.map(|limit| proto::RateLimit {
                requests: limit.requests,
                per_seconds: limit.per_seconds,
            }),
            metadata: self.metadata,
        })
    }
}

/// `keys import FILE`: batches of up to 1,000 lines, each all or nothing;
/// a batch with a bad line is not sent. Progress goes to stderr; the
/// result (or every error, by line number) is what this returns.
async fn import(connection: &ConnectionArgs, file: &std::path::Path) -> Result<String, CliError> {
    let bytes = read("FILE", file)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError::Usage(format!("{}: not UTF-8 text", file.display())))?;
    // (line number, the line's key or why it is bad), blank lines skipped.
    let lines: Vec<(usize, Result<proto::ImportedKey, String>)> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let parsed = serde_json::from_str::<ImportLine>(line)
                .map_err(|e| e.to_string())
                .and_then(ImportLine::into_proto);
            (index + 1, parsed)
        })
        .collect();
    if lines.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: no keys to import",
            file.display()
        )));
    }
    let mut client = Client::connect(connection).await?;
    let batches = lines.len().div_ceil(IMPORT_BATCH);
    let mut imported = 0;
    let mut revision = 0;
    let mut errors = Vec::new();
    for (batch_index, batch) in lines.chunks(IMPORT_BATCH).enumerate() {
        let (first, last) = (batch[0].0, batch[batch.len() - 1].0);
        let bad: Vec<String> = batch
            .iter()
            .filter_map(|(line, parsed)| parsed.as_ref().err().map(|e| format!("line {line}: {e}")))
            .collect();
        if !bad.is_empty() {
            eprintln!(
                "batch {}/{batches} (lines {first}-{last}): not sent, {} bad line(s)",
                batch_index + 1,
                bad.len()
            );
            errors.extend(bad);
            continue;
        }
        let keys: Vec<proto::ImportedKey> = batch
            .iter()
            .filter_map(|(_, parsed)| parsed.as_ref().ok().cloned())
            .collect();
        let count = keys.len();
        match client
            .call("ImportKeys", proto::ImportKeysRequest { keys }, |c, r| {
                Box::pin(c.import_keys(r))
            })
            .await
        {
            Ok(response) => {
                imported += response.keys.len();
                revision = response.revision;
                eprintln!(
                    "batch {}/{batches} (lines {first}-{last}): imported {count} keys",
                    batch_index + 1
                );
            }
            Err(CliError::Rpc { code, message, .. }) => {
                eprintln!(
                    "batch {}/{batches} (lines {first}-{last}): refused, nothing imported",
                    batch_index + 1
                );
                errors.push(format!(
                    "{}: {code:?}: {message}",
                    name_line(&message, batch)
                ));
            }
            Err(other) => return Err(other),
        }
    }
    let summary = format!(
        "imported {imported} of {} keys (revision {revision})",
        lines.len()
    );
    if errors.is_empty() {
        Ok(format!("{summary}\n"))
    } else {
        Err(CliError::Usage(format!(
            "{summary}; not imported:\n{}",
            errors.join("\n")
        )))
    }
}

/// The file line a server error's `keys[i]` names, or the batch's lines.
fn name_line(message: &str, batch: &[(usize, Result<proto::ImportedKey, String>)]) -> String {
    let index = message
        .strip_prefix("keys[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(index, _)| index.parse::<usize>().ok());
    match index.and_then(|index| batch.get(index)) {
        Some((line, _)) => format!("line {line}"),
        None => format!("lines {}-{}", batch[0].0, batch[batch.len() - 1].0),
    }
}

/// Every page of ListKeyEvents, oldest first.
async fn events(
    connection: &ConnectionArgs,
    account: String,
    key_id: String,
) -> Result<String, CliError> {
    let mut client = Client::connect(connection).await?;
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = proto::ListKeyEventsRequest {
            account_id: account.clone(),
            key_id: key_id.clone(),
            page_size: 1_000,
            page_token: page_token.clone(),
        };
        let page = client
            .call("ListKeyEvents", request, |c, r| {
                Box::pin(c.list_key_events(r))
            })
            .await?;
        events.extend(page.events.into_iter().map(EventView::from));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(if connection.json {
        json(&events)
    } else {
        events_table(&events)
    })
}

/// One audit-trail row as printed (table or JSON). Times are RFC 3339 UTC.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub seq: u64,
    pub at: Option<String>,
    pub kind: String,
    pub key_id: String,
    pub account_id: String,
    pub actor: String,
    pub peer: String,
}

impl From<proto::KeyEvent> for EventView {
    fn from(event: proto::KeyEvent) -> Self {
        Self {
            seq: event.seq,
            at: rfc3339(event.at),
            kind: event.kind,
            key_id: event.key_id,
            account_id: event.account_id,
            actor: event.actor,
            peer: event.peer,
        }
    }
}

/// Aligned columns, one row per event: seq, at, kind, key, actor, peer.
/// Columns padded to their widest cell, two spaces apart; `(empty)` when
/// there are no rows.
fn padded_table<const N: usize>(header: &[&str; N], rows: &[[String; N]], empty: &str) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(&row.each_ref().map(String::as_str));
    }
    if rows.is_empty() {
        let _ = writeln!(out, "({empty})");
    }
    out
}

fn events_table(events: &[EventView]) -> String {
    let header = ["SEQ", "AT", "KIND", "KEY", "ACTOR", "PEER"];
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|event| {
            [
                event.seq.to_string(),
                event.at.clone().unwrap_or_else(|| "-".into()),
                event.kind.clone(),
                event.key_id.clone(),
                event.actor.clone(),
                if event.peer.is_empty() {
                    "-".into()
                } else {
                    event.peer.clone()
                },
            ]
        })
        .collect();
    padded_table(&header, &rows, "no events")
}

async fn create(
    connection: &ConnectionArgs,
    request: proto::CreateKeyRequest,
) -> Result<String, CliError> {
    let mut client = Client::connect(connection).await?;
    let response = client
        .call("CreateKey", request, |c, r| Box::pin(c.create_key(r)))
        .await?;
    let key = KeyView::from(response.key.unwrap_or_default());
    if connection.json {
        return Ok(json(&CreatedView {
            key,
            secret: response.secret,
        }));
    }
    let mut out = table(std::slice::from_ref(&key));
    let _ = writeln!(
        out,
        "\nsecret (shown only now; keyward keeps only its hash):\n{}",
        response.secret
    );
    Ok(out)
}

/// Every page of the account's keys.
async fn list(
    connection: &ConnectionArgs,
    account: String,
    include_revoked: bool,
) -> Result<String, CliError> {
    let mut client = Client::connect(connection).await?;
    let mut keys = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = proto::ListKeysRequest {
            account_id: account.clone(),
            include_revoked,
            page_size: 1_000,
            page_token: page_token.clone(),
        };
        let page = client
            .call("ListKeys", request, |c, r| Box::pin(c.list_keys(r)))
            .await?;
        keys.extend(page.keys.into_iter().map(KeyView::from));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(if connection.json {
        json(&keys)
    } else {
        table(&keys)
    })
}

async fn update(
    connection: &ConnectionArgs,
    account: String,
    id: String,
    name: Option<String>,
    scopes: Option<Vec<String>>,
    rate_limit: Option<RateLimitChange>,
    restrictions: Restrictions,
) -> Result<String, CliError> {
    let mut paths = Vec::new();
    if name.is_some() {
        paths.push("name".to_owned());
    }
    if scopes.is_some() {
        paths.push("scopes".to_owned());
    }
    if rate_limit.is_some() {
        paths.push("rate_limit".to_owned());
    }
    if restrictions.metadata.is_some() {
        paths.push("metadata".to_owned());
    }
    if restrictions.allowed_networks.is_some() {
        paths.push("allowed_networks".to_owned());
    }
    if paths.is_empty() {
        return Err(CliError::Usage(
            "nothing to update: pass --name, --scopes, --rate-limit, --meta, --clear-meta, \
             --allow-network and/or --clear-networks"
                .into(),
        ));
    }
    let mut client = Client::connect(connection).await?;
    let request = proto::UpdateKeyRequest {
        account_id: account,
        key_id: id,
        name: name.unwrap_or_default(),
        scopes: scopes.unwrap_or_default(),
        update_mask: Some(prost_types::FieldMask { paths }),
        // `rate_limit` in the mask without a value clears it.
        rate_limit: match rate_limit {
            Some(RateLimitChange::Set(limit)) => Some(proto_rate_limit(limit)),
            Some(RateLimitChange::Default) | None => None,
        },
        metadata: restrictions.metadata.unwrap_or_default(),
        allowed_networks: restrictions.allowed_networks.unwrap_or_default(),
        quota: None,
    };
    let response = client
        .call("UpdateKey", request, |c, r| Box::pin(c.update_key(r)))
        .await?;
    Ok(show(connection, response.key))
}

/// `keys update`'s metadata and allowlist changes; `Some` replaces the
/// whole map or list (empty: clears it).
struct Restrictions {
    metadata: Option<HashMap<String, String>>,
    allowed_networks: Option<Vec<String>>,
}

fn expiry(lifetime: Duration) -> Result<prost_types::Timestamp, CliError> {
    let at = SystemTime::now()
        .checked_add(lifetime)
        .ok_or_else(|| CliError::Usage("--expires-in is too far in the future".into()))?;
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(prost_types::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs())
            .map_err(|_| CliError::Usage("--expires-in is too far in the future".into()))?,
        nanos: 0,
    })
}

fn proto_rate_limit(limit: RateLimitArg) -> proto::RateLimit {
    proto::RateLimit {
        requests: limit.requests,
        per_seconds: limit.per_seconds,
    }
}

fn show(connection: &ConnectionArgs, key: Option<proto::Key>) -> String {
    let key = KeyView::from(key.unwrap_or_default());
    if connection.json {
        json(&key)
    } else {
        table(&[key])
    }
}

type CallFuture<'a, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'a>>;

struct Client {
    keys: KeyServiceClient<Channel>,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Client {
    async fn connect(connection: &ConnectionArgs) -> Result<Self, CliError> {
        let fail = |reason: String| CliError::Connect {
            server: connection.server.clone(),
            reason,
        };
        // Checked before connecting, so a bad token is named even when the
        // server is unreachable.
        let authorization = connection
            .token
            .as_deref()
            .map(|token| {
                format!("Bearer {}", token.trim()).parse().map_err(|_| {
                    CliError::Usage("--token holds characters not allowed in metadata".into())
                })
            })
            .transpose()?;
        let mut endpoint = Endpoint::from_shared(connection.server.clone())
            .map_err(|e| CliError::Usage(format!("--server {:?}: {e}", connection.server)))?
            .connect_timeout(Duration::from_secs(10));
        let https = connection.server.starts_with("https://");
        if https {
            let ca_path = connection.tls_ca.as_ref().ok_or_else(|| {
                CliError::Usage(
                    "an https:// server needs --tls-ca (the CA that signed its certificate)".into(),
                )
            })?;
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read("--tls-ca", ca_path)?));
            match (&connection.tls_cert, &connection.tls_key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(
                        read("--tls-cert", cert)?,
                        read("--tls-key", key)?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(CliError::Usage(
                        "--tls-cert and --tls-key go together".into(),
                    ));
                }
            }
            if let Some(domain) = &connection.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| fail(format!("TLS setup: {e}")))?;
        } else if connection.tls_ca.is_some()
            || connection.tls_cert.is_some()
            || connection.tls_key.is_some()
            || connection.tls_domain.is_some()
        {
            return Err(CliError::Usage(
                "TLS options (--tls-ca, --tls-cert, --tls-key, --tls-domain) need an \
                 https:// --server"
                    .into(),
            ));
        }
        let channel = endpoint.connect().await.map_err(|e| {
            fail(
                std::error::Error::source(&e)
                    .map_or_else(|| e.to_string(), |source| format!("{e}: {source}")),
            )
        })?;
        Ok(Self {
            keys: KeyServiceClient::new(channel),
            authorization,
        })
    }

    async fn call<Q, R>(
        &mut self,
        rpc: &'static str,
        message: Q,
        send: impl for<'a> FnOnce(
            &'a mut KeyServiceClient<Channel>,
            tonic::Request<Q>,
        ) -> CallFuture<'a, R>,
    ) -> Result<R, CliError> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(Duration::from_secs(30));
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        send(&mut self.keys, request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| CliError::Rpc {
                rpc,
                code: status.code(),
                message: status.message().to_owned(),
            })
    }
}

fn read(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("{flag} {}: cannot read: {e}", path.display())))
}

/// A key as printed (table or JSON). Times are RFC 3339 UTC.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub start: String,
    pub scopes: Vec<String>,
    pub effective_scopes: Vec<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    /// The key's own limit; `None`: the server's default applies.
    pub rate_limit: Option<RateLimitView>,
    /// The owner's labels, in name order.
    pub metadata: BTreeMap<String, String>,
    /// Where the key may be used from; empty: any address.
    pub allowed_networks: Vec<String>,
    /// The key this one replaced (RotateKey); `None` otherwise.
    pub rotated_from: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitView {
    pub requests: u32,
    pub per_seconds: u32,
}

#[derive(Serialize)]
struct CreatedView {
    key: KeyView,
    secret: String,
}

#[derive(Serialize)]
struct RotatedView {
    key: KeyView,
    secret: String,
    previous: KeyView,
}

fn rfc3339(at: Option<prost_types::Timestamp>) -> Option<String> {
    let at = at?;
    let seconds = u64::try_from(at.seconds).ok()?;
    Some(humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string())
}

impl From<proto::Key> for KeyView {
    fn from(key: proto::Key) -> Self {
        Self {
            created_at: rfc3339(key.created_at),
            expires_at: rfc3339(key.expires_at),
            revoked_at: rfc3339(key.revoked_at),
            last_used_at: rfc3339(key.last_used_at),
            rate_limit: key.rate_limit.map(|limit| RateLimitView {
                requests: limit.requests,
                per_seconds: limit.per_seconds,
            }),
            id: key.id,
            account_id: key.account_id,
            name: key.name,
            start: key.start,
            scopes: key.scopes,
            effective_scopes: key.effective_scopes,
            metadata: key.metadata.into_iter().collect(),
            allowed_networks: key.allowed_networks,
            rotated_from: Some(key.rotated_from).filter(|id| !id.is_empty()),
        }
    }
}

fn json<T: Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("views serialize");
    text.push('\n');
    text
}

/// Aligned columns, one row per key.
fn table(keys: &[KeyView]) -> String {
    let header = [
        "ID",
        "NAME",
        "START",
        "SCOPES",
        "CREATED",
        "EXPIRES",
        "REVOKED",
        "LAST USED",
        "RATE LIMIT",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<[String; 9]> = keys
        .iter()
        .map(|key| {
            [
                key.id.clone(),
                key.name.clone(),
                format!("{}...", key.start),
                if key.scopes.is_empty() {
                    dash()
                } else {
                    key.scopes.join(",")
                },
                key.created_at.clone().unwrap_or_else(dash),
                key.expires_at.clone().unwrap_or_else(dash),
                key.revoked_at.clone().unwrap_or_else(dash),
                key.last_used_at.clone().unwrap_or_else(dash),
                key.rate_limit.map_or_else(
                    || "default".to_owned(),
                    |limit| format!("{}/{}s", limit.requests, limit.per_seconds),
                ),
            ]
        })
        .collect();
    let mut out = padded_table(&header, &rows, "no keys");
    restrictions_lines(keys, &mut out);
    out
}

/// Under the table, one line per key that was rotated from another or has
/// metadata or allowed networks (they do not fit a column): `key_...
/// rotated from key_...; metadata: plan="pro"; allowed networks:
/// 10.0.0.0/8`.
fn restrictions_lines(keys: &[KeyView], out: &mut String) {
    for key in keys {
        if key.rotated_from.is_none() && key.metadata.is_empty() && key.allowed_networks.is_empty()
        {
            continue;
        }
        let mut parts = Vec::new();
        if let Some(old) = &key.rotated_from {
            parts.push(format!("rotated from {old}"));
        }
        if !key.metadata.is_empty() {
            let entries: Vec<String> = key
                .metadata
                .iter()
                .map(|(name, value)| format!("{name}={value:?}"))
                .collect();
            parts.push(format!("metadata: {}", entries.join(" ")));
        }
        if !key.allowed_networks.is_empty() {
            parts.push(format!(
                "allowed networks: {}",
                key.allowed_networks.join(" ")
            ));
        }
        let _ = writeln!(out, "{} {}", key.id, parts.join("; "));
    }
}
