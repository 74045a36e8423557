//! `[management_api]`: the key-management HTTP API of a profile, as
//! written (serde) and validated. Routes, JSON field names, the shape of
//! scopes, capability toggles, error codes and CORS origins are all
//! configuration, so a product's documented API needs no code of its own.

use serde::Deserialize;

use crate::denial::{DenialText, RawDenialText, denial_text_from_raw};
use crate::scope_catalog::ScopeCatalog;
use crate::settings::SettingError;

/// What the API does, one route each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    List,
    Get,
    Update,
    Revoke,
    Scopes,
    /// keyward's RotateKey (a successor inherits the key; the old one is
    /// revoked or expires after a grace period).
    Rotate,
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Self::Create,
        Self::List,
        Self::Get,
        Self::Update,
        Self::Revoke,
        Self::Scopes,
        Self::Rotate,
    ];

    /// The TOML key naming its route, and its metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::List => "list",
            Self::Get => "get",
            Self::Update => "update",
            Self::Revoke => "revoke",
            Self::Scopes => "scopes",
            Self::Rotate => "rotate",
        }
    }

    /// Whether the route's path names a key (`{key_id}`).
    fn names_a_key(self) -> bool {
        matches!(self, Self::Get | Self::Update | Self::Revoke | Self::Rotate)
    }

    fn default_route(self) -> &'static str {
        match self {
            Self::Create => "POST /v1/keys",
            Self::List => "GET /v1/keys",
            Self::Get => "GET /v1/keys/{key_id}",
            Self::Update => "PATCH /v1/keys/{key_id}",
            Self::Revoke => "DELETE /v1/keys/{key_id}",
            Self::Scopes => "GET /v1/scopes",
            Self::Rotate => "POST /v1/keys/{key_id}/rotate",
        }
    }
}

/// One served route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRoute {
    pub operation: Operation,
    pub method: http::Method,
    /// As axum matches it: literal segments and `{key_id}`.
    pub path: String,
}

/// The JSON names of a key's fields; `None`: the field is not shown (and
/// not accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNames {
    pub id: Option<String>,
    pub name: Option<String>,
    pub secret: Option<String>,
    pub start: Option<String>,
    pub scopes: Option<String>,
    pub preset: Option<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// How scopes are written in bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopesShape {
    /// `["read:trades", "write:trades"]`.
    Names,
    /// `{"portfolio": "read", "traders": "write"}`: scope names are
    /// `resource:level`; `none` grants nothing for the resource.
    Levels,
}

/// A boolean field that grants or withdraws one scope (CSBoard's "Trading
/// enabled").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toggle {
    pub field: String,
    pub scope: String,
}

/// The API's errors: each kind's code and HTTP status (the message says
/// what was wrong, field first for bad input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiErrors {
    pub unauthenticated: DenialText,
    pub permission_denied: DenialText,
    pub invalid: DenialText,
    pub not_found: DenialText,
    pub key_limit: DenialText,
    pub key_revoked: DenialText,
    pub unavailable: DenialText,
}

impl Default for ApiErrors {
    fn default() -> Self {
        Self {
            unauthenticated: DenialText::new("unauthorized", "missing or invalid credentials", 401),
            permission_denied: DenialText::new("forbidden", "not allowed", 403),
            invalid: DenialText::new("invalid_request", "the request is invalid", 400),
            not_found: DenialText::new("not_found", "key not found", 404),
            key_limit: DenialText::new("key_limit_reached", "too many active keys", 409),
            key_revoked: DenialText::new("key_revoked", "the key is revoked", 409),
            unavailable: DenialText::new("unavailable", "try again later", 503),
        }
    }
}

/// The validated `[management_api]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementApiSettings {
    pub routes: Vec<ApiRoute>,
    pub fields: FieldNames,
    pub scopes_shape: ScopesShape,
    pub toggles: Vec<Toggle>,
    /// `Origin`s a browser may call the API from (CORS); empty: none.
    pub cors_allowed_origins: Vec<http::HeaderValue>,
    pub errors: ApiErrors,
}

/// `[management_api]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawManagementApi {
    pub create: Option<String>,
    pub list: Option<String>,
    pub get: Option<String>,
    pub update: Option<String>,
    pub revoke: Option<String>,
    pub scopes: Option<String>,
    pub rotate: Option<String>,
    pub scopes_shape: Option<String>,
    pub fields: RawFieldNames,
    pub toggles: Vec<RawToggle>,
    pub cors_allowed_origins: Vec<String>,
    pub errors: RawApiErrors,
}

/// `[management_api.fields]`: each key's JSON name; `""` leaves it out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFieldNames {
    pub id: Option<String>,
    pub name: Option<String>,
    pub secret: Option<String>,
    pub start: Option<String>,
    pub scopes: Option<String>,
    pub preset: Option<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToggle {
    pub field: String,
    pub scope: String,
}

/// `[management_api.errors.<kind>]`: code, message and status per kind.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApiErrors {
    pub unauthenticated: Option<RawDenialText>,
    pub permission_denied: Option<RawDenialText>,
    pub invalid: Option<RawDenialText>,
    pub not_found: Option<RawDenialText>,
    pub key_limit: Option<RawDenialText>,
    pub key_revoked: Option<RawDenialText>,
    pub unavailable: Option<RawDenialText>,
}

/// Longest JSON field name.
const MAX_FIELD_NAME_LEN: usize = 64;

impl ManagementApiSettings {
    pub fn from_raw(raw: RawManagementApi, catalog: &ScopeCatalog) -> Result<Self, SettingError> {
        let routes = routes(&raw)?;
        let fields = field_names(raw.fields)?;
        let scopes_shape = match raw.scopes_shape.as_deref().unwrap_or("names") {
            "names" => ScopesShape::Names,
            "levels" => ScopesShape::Levels,
            other => {
                return Err(SettingError::new(
                    "management_api.scopes_shape",
                    format!("{other:?} is not one of: names, levels"),
                ));
            }
        };
        if scopes_shape == ScopesShape::Levels
            && let Some(scope) = catalog.definitions().iter().find(|s| !s.name.contains(':'))
        {
            return Err(SettingError::new(
                "management_api.scopes_shape",
                format!(
                    "levels needs every scope named resource:level; {:?} is not",
                    scope.name
                ),
            ));
        }
        let toggles = toggles(raw.toggles, &fields, catalog)?;
        if routes
            .iter()
            .any(|r| matches!(r.operation, Operation::Create | Operation::Rotate))
            && fields.secret.is_none()
        {
            return Err(SettingError::new(
                "management_api.fields.secret",
                "must name a field while keys are created or rotated: the secret is shown only there",
            ));
        }
        let cors_allowed_origins = raw
            .cors_allowed_origins
            .iter()
            .enumerate()
            .map(|(i, origin)| {
                cors_origin(origin).map_err(SettingError::at(&format!(
                    "management_api.cors_allowed_origins[{i}]"
                )))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            routes,
            fields,
            scopes_shape,
            toggles,
            cors_allowed_origins,
            errors: api_errors(raw.errors)?,
        })
    }

    /// The route serving `operation`, if the profile serves it.
    pub fn route(&self, operation: Operation) -> Option<&ApiRoute> {
        self.routes
            .iter()
            .find(|route| route.operation == operation)
    }
}

fn routes(raw: &RawManagementApi) -> Result<Vec<ApiRoute>, SettingError> {
    let mut routes: Vec<ApiRoute> = Vec::new();
    for operation in Operation::ALL {
        let written = match operation {
            Operation::Create => &raw.create,
            Operation::List => &raw.list,
            Operation::Get => &raw.get,
            Operation::Update => &raw.update,
            Operation::Revoke => &raw.revoke,
            Operation::Scopes => &raw.scopes,
            Operation::Rotate => &raw.rotate,
        };
        let text = written.as_deref().unwrap_or(operation.default_route());
        if text.is_empty() {
            continue;
        }
        let key = format!("management_api.{}", operation.as_str());
        let route = route(operation, text).map_err(SettingError::at(&key))?;
        if routes
            .iter()
            .any(|r| r.method == route.method && r.path == route.path)
        {
            return Err(SettingError::new(
                key,
                format!("{text:?} is already another route"),
            ));
        }
        routes.push(route);
    }
    Ok(routes)
}

/// `"METHOD /path/{key_id}"`.
fn route(operation: Operation, text: &str) -> Result<ApiRoute, String> {
    let shape =
        || format!("{text:?} is not a route like \"GET /v1/keys/{{key_id}}\" (\"\" to serve none)");
    let (method, path) = text.split_once(' ').ok_or_else(shape)?;
    let method = match method {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => {
            http::Method::from_bytes(method.as_bytes()).map_err(|_| shape())?
        }
        _ => {
            return Err(format!(
                "{method:?} is not one of GET, POST, PUT, PATCH, DELETE"
            ));
        }
    };
    let Some(rest) = path.strip_prefix('/') else {
        return Err(shape());
    };
    if path.len() > 256 {
        return Err("a path is at most 256 characters".into());
    }
    let mut key_ids = 0;
    for segment in rest.split('/') {
        if segment == "{key_id}" {
            key_ids += 1;
        } else if segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        {
            return Err(format!(
                "{path:?}: segments are literal (a-z A-Z 0-9 - _ . ~) or {{key_id}}"
            ));
        }
    }
    match (operation.names_a_key(), key_ids) {
        (true, 1) | (false, 0) => Ok(ApiRoute {
            operation,
            method,
            path: path.to_owned(),
        }),
        (true, _) => Err(format!("{path:?} must name the key once, as {{key_id}}")),
        (false, _) => Err(format!("{path:?} names no key here; drop {{key_id}}")),
    }
}

fn field_names(raw: RawFieldNames) -> Result<FieldNames, SettingError> {
    let name = |key: &str,
                written: Option<String>,
                default: &str|
     -> Result<Option<String>, SettingError> {
        let text = written.unwrap_or_else(|| default.to_owned());
        if text.is_empty() {
            return Ok(None);
        }
        check_field_name(&text)
            .map_err(SettingError::at(&format!("management_api.fields.{key}")))?;
        Ok(Some(text))
    };
    let fields = FieldNames {
        id: name("id", raw.id, "id")?,
        name: name("name", raw.name, "name")?,
        secret: name("secret", raw.secret, "secret")?,
        start: name("start", raw.start, "start")?,
        scopes: name("scopes", raw.scopes, "scopes")?,
        preset: name("preset", raw.preset, "preset")?,
        created_at: name("created_at", raw.created_at, "created_at")?,
        expires_at: name("expires_at", raw.expires_at, "expires_at")?,
        revoked_at: name("revoked_at", raw.revoked_at, "revoked_at")?,
        last_used_at: name("last_used_at", raw.last_used_at, "last_used_at")?,
    };
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in fields.all() {
        if let Some(value) = value {
            if seen.contains(&value) {
                return Err(SettingError::new(
                    format!("management_api.fields.{key}"),
                    format!("{value:?} names another field too"),
                ));
            }
            seen.push(value);
        }
    }
    Ok(fields)
}

impl FieldNames {
    /// `key = "name"` for each shown field (for `check-config`).
    pub fn shown(&self) -> Vec<String> {
        self.all()
            .iter()
            .filter_map(|(key, name)| name.map(|name| format!("{key} = {name:?}")))
            .collect()
    }

    /// Each field's TOML key and JSON name.
    fn all(&self) -> [(&'static str, Option<&str>); 10] {
        [
            ("id", self.id.as_deref()),
            ("name", self.name.as_deref()),
            ("secret", self.secret.as_deref()),
            ("start", self.start.as_deref()),
            ("scopes", self.scopes.as_deref()),
            ("preset", self.preset.as_deref()),
            ("created_at", self.created_at.as_deref()),
            ("expires_at", self.expires_at.as_deref()),
            ("revoked_at", self.revoked_at.as_deref()),
            ("last_used_at", self.last_used_at.as_deref()),
        ]
    }
}

fn check_field_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_FIELD_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'-'))
    {
        return Err(format!(
            "{name:?} is not a field name: 1 to {MAX_FIELD_NAME_LEN} of a-z A-Z 0-9 _ $ -"
        ));
    }
    Ok(())
}

fn toggles(
    raw: Vec<RawToggle>,
    fields: &FieldNames,
    catalog: &ScopeCatalog,
) -> Result<Vec<Toggle>, SettingError> {
    let mut toggles: Vec<Toggle> = Vec::new();
    for (i, toggle) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("management_api.toggles[{i}].{field}");
        check_field_name(&toggle.field).map_err(SettingError::at(&at("field")))?;
        if fields
            .all()
            .iter()
            .any(|(_, name)| *name == Some(toggle.field.as_str()))
            || toggles.iter().any(|t| t.field == toggle.field)
        {
            return Err(SettingError::new(
                at("field"),
                format!("{:?} names another field too", toggle.field),
            ));
        }
        if catalog.lookup(&toggle.scope).is_none() {
            return Err(SettingError::new(
                at("scope"),
                format!("{:?} is not in the scope catalog", toggle.scope),
            ));
        }
        toggles.push(Toggle {
            field: toggle.field,
            scope: toggle.scope,
        });
    }
    Ok(toggles)
}

/// `https://app.example.com` or `http://localhost:3000`: a scheme, a host and
/// an optional port, nothing after.
pub(crate) fn cors_origin(origin: &str) -> Result<http::HeaderValue, String> {
    let bad =
        || format!("{origin:?} is not an origin like https://app.example.com (no path, no *)");
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(bad)?;
    if rest.is_empty()
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
    {
        return Err(bad());
    }
    http::HeaderValue::from_str(origin).map_err(|_| bad())
}

fn api_errors(raw: RawApiErrors) -> Result<ApiErrors, SettingError> {
    let defaults = ApiErrors::default();
    let text = |kind: &str, raw, default, statuses: &[u16]| {
        denial_text_from_raw(
            &format!("management_api.errors.{kind}"),
            raw,
            default,
            statuses,
        )
    };
    Ok(ApiErrors {
        unauthenticated: text(
            "unauthenticated",
            raw.unauthenticated,
            defaults.unauthenticated,
            &[401],
        )?,
        permission_denied: text(
            "permission_denied",
            raw.permission_denied,
            defaults.permission_denied,
            &[403, 404],
        )?,
        invalid: text("invalid", raw.invalid, defaults.invalid, &[400, 422])?,
        not_found: text("not_found", raw.not_found, defaults.not_found, &[404])?,
        key_limit: text(
            "key_limit",
            raw.key_limit,
            defaults.key_limit,
            &[400, 403, 409, 422, 429],
        )?,
        key_revoked: text(
            "key_revoked",
            raw.key_revoked,
            defaults.key_revoked,
            &[400, 409, 410, 422],
        )?,
        unavailable: text("unavailable", raw.unavailable, defaults.unavailable, &[503])?,
    })
}

#[cfg(test)]
mod tests;
