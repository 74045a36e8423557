//! Keys as the profile's JSON: request bodies read into key-management
//! requests (every field named as configured, anything else refused with
//! its name), and records written back in the same names. Timestamps are
//! RFC 3339 UTC with second precision (`2024-01-15T10:00:00Z`); absent
//! values are `null`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::settings::{FieldNames, ManagementApiSettings, ScopesShape};
use crate::domain::UnixMillis;
use crate::scope_catalog::ScopeCatalog;
use crate::storage::KeyRecord;

/// A body field that is wrong: its JSON name and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadField {
    pub field: String,
    pub reason: String,
}

impl BadField {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// What a create or update body asked for, before the key manager
/// validates names and scopes against the catalog.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyFields {
    pub name: Option<String>,
    /// Scope names (levels already turned into `resource:level`).
    pub scopes: Option<Vec<String>>,
    pub preset: Option<String>,
    pub expires_at: Option<UnixMillis>,
    /// Toggled scopes: (scope, on).
    pub toggles: Vec<(String, bool)>,
}

/// Reads a JSON object body (`body` is what the client sent).
pub fn key_fields(settings: &ManagementApiSettings, body: &[u8]) -> Result<KeyFields, BadField> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| BadField::new("body", format!("not JSON: {error}")))?;
    let Value::Object(object) = value else {
        return Err(BadField::new("body", "must be a JSON object"));
    };
    let names = &settings.fields;
    let mut fields = KeyFields::default();
    for (key, value) in object {
        let is = |name: &Option<String>| name.as_deref() == Some(key.as_str());
        if is(&names.name) {
            fields.name = Some(string(&key, value)?);
        } else if is(&names.scopes) {
            fields.scopes = Some(scopes(settings.scopes_shape, &key, value)?);
        } else if is(&names.preset) {
            fields.preset = Some(string(&key, value)?);
        } else if is(&names.expires_at) {
            fields.expires_at = match value {
                Value::Null => None,
                value => Some(timestamp(&key, &string(&key, value)?)?),
            };
        } else if let Some(toggle) = settings.toggles.iter().find(|t| t.field == key) {
            let Value::Bool(on) = value else {
                return Err(BadField::new(key, "must be true or false"));
            };
            fields.toggles.push((toggle.scope.clone(), on));
        } else {
            return Err(BadField::new(key, "is not a field of a key here"));
        }
    }
    Ok(fields)
}

/// The rotate route's one body field (keyward's own, in every profile).
pub const GRACE_PERIOD_FIELD: &str = "grace_period_seconds";

/// A rotate body: empty or `{}` revokes the old key at once;
/// `{"grace_period_seconds": 3600}` keeps it working that long.
pub fn rotation_grace(body: &[u8]) -> Result<Option<Duration>, BadField> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| BadField::new("body", format!("not JSON: {error}")))?;
    let Value::Object(object) = value else {
        return Err(BadField::new("body", "must be a JSON object"));
    };
    let mut grace = None;
    for (key, value) in object {
        if key != GRACE_PERIOD_FIELD {
            return Err(BadField::new(key, "is not a field of a rotation"));
        }
        grace = match value {
            Value::Null => None,
            Value::Number(number) => match number.as_u64() {
                Some(seconds) => Some(Duration::from_secs(seconds)),
                None => {
                    return Err(BadField::new(
                        GRACE_PERIOD_FIELD,
                        "must be a whole number of seconds, 0 or more",
                    ));
                }
            },
            _ => {
                return Err(BadField::new(
                    GRACE_PERIOD_FIELD,
                    "must be a whole number of seconds, 0 or more",
                ));
            }
        };
    }
    Ok(grace)
}

fn string(field: &str, value: Value) -> Result<String, BadField> {
    match value {
        Value::String(text) => Ok(text),
        _ => Err(BadField::new(field, "must be a string")),
    }
}

/// `["a", "b"]`, or `{"resource": "level"}` for the levels shape.
fn scopes(shape: ScopesShape, field: &str, value: Value) -> Result<Vec<String>, BadField> {
    match (shape, value) {
        (ScopesShape::Names, Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| string(&format!("{field}[{i}]"), item))
            .collect(),
        (ScopesShape::Names, _) => Err(BadField::new(field, "must be a list of scope names")),
        (ScopesShape::Levels, Value::Object(levels)) => {
            let mut names = Vec::new();
            for (resource, level) in levels {
                let at = format!("{field}.{resource}");
                let level = string(&at, level)?;
                if level != "none" {
                    names.push(format!("{resource}:{level}"));
                }
            }
            Ok(names)
        }
        (ScopesShape::Levels, _) => Err(BadField::new(
            field,
            "must be an object of resource to level, like {\"portfolio\": \"read\"}",
        )),
    }
}

/// RFC 3339 in UTC (`Z`), whole seconds or with a fraction.
fn timestamp(field: &str, text: &str) -> Result<UnixMillis, BadField> {
    let bad = || {
        BadField::new(
            field,
            format!("{text:?} is not an RFC 3339 UTC time like 2030-01-15T10:00:00Z"),
        )
    };
    let at = humantime::parse_rfc3339(text).map_err(|_| bad())?;
    let millis = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_millis();
    i64::try_from(millis).map(UnixMillis).map_err(|_| bad())
}

/// `2024-01-15T10:00:00Z`.
pub fn rfc3339(at: UnixMillis) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(at.0).unwrap_or(0));
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + since_epoch).to_string()
}

/// A key as the profile shows it, with its secret when just created.
pub fn key_value(
    settings: &ManagementApiSettings,
    catalog: &ScopeCatalog,
    record: &KeyRecord,
    secret: Option<&str>,
) -> Value {
    let FieldNames {
        id,
        name,
        secret: secret_name,
        start,
        scopes,
        preset: _,
        created_at,
        expires_at,
        revoked_at,
        last_used_at,
    } = &settings.fields;
    let mut object = Map::new();
    let mut put = |field: &Option<String>, value: Value| {
        if let Some(field) = field {
            object.insert(field.clone(), value);
        }
    };
    let time = |at: Option<UnixMillis>| at.map_or(Value::Null, |at| Value::String(rfc3339(at)));
    put(id, Value::String(record.id.as_str().to_owned()));
    put(name, Value::String(record.name.clone()));
    if let Some(secret) = secret {
        put(secret_name, Value::String(secret.to_owned()));
    }
    put(start, Value::String(record.start.clone()));
    put(
        scopes,
        scopes_value(settings.scopes_shape, catalog, &record.scopes),
    );
    put(last_used_at, time(record.last_used_at));
    put(created_at, time(Some(record.created_at)));
    put(expires_at, time(record.expires_at));
    put(revoked_at, time(record.revoked_at));
    for toggle in &settings.toggles {
        object.insert(
            toggle.field.clone(),
            Value::Bool(record.scopes.contains(&toggle.scope)),
        );
    }
    Value::Object(object)
}

/// Granted scope names as a list, or as resource → the highest level
/// granted (the level whose scope implies the others').
fn scopes_value(shape: ScopesShape, catalog: &ScopeCatalog, granted: &[String]) -> Value {
    match shape {
        ScopesShape::Names => Value::Array(granted.iter().cloned().map(Value::String).collect()),
        ScopesShape::Levels => {
            let mut levels: Map<String, Value> = Map::new();
            for name in granted {
                let Some((resource, level)) = name.split_once(':') else {
                    continue;
                };
                let stronger = match levels.get(resource).and_then(Value::as_str) {
                    Some(held) => implies(catalog, name, &format!("{resource}:{held}")),
                    None => true,
                };
                if stronger {
                    levels.insert(resource.to_owned(), Value::String(level.to_owned()));
                }
            }
            Value::Object(levels)
        }
    }
}

/// Whether granting `a` grants `b` in the catalog.
fn implies(catalog: &ScopeCatalog, a: &str, b: &str) -> bool {
    match (catalog.lookup(a), catalog.lookup(b)) {
        (Some(a), Some(b)) => {
            let mut set = crate::scope_catalog::ScopeSet::default();
            set.insert(a);
            catalog.effective(set).contains(b)
        }
        _ => false,
    }
}
