//! The API-keys settings page (`[settings_page]`), served on the HTTP
//! listener beside the key-management API it calls: the HTML page, its
//! hand-written JavaScript modules and stylesheets (compiled into the
//! binary from `web/api-keys/`, so no build step and no network access
//! beyond keyward), the profile's theme as CSS variables, and
//! `config.json`: the routes, JSON field names, scope catalog, toggles,
//! labels and error texts the page needs to speak the profile's API.
//!
//! Everything here is public (it lists no keys); the page calls the API
//! with the caller's own token. Every response forbids anything but this
//! origin (Content-Security-Policy), so the page loads no script, style,
//! font or image from elsewhere and talks to nothing but keyward.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::key_format::KeyFormat;
use crate::scope_catalog::ScopeCatalog;

use super::settings::{ManagementApiSettings, Operation, ScopesShape};

pub mod settings;

use settings::SettingsPageSettings;

const INDEX_HTML: &str = include_str!("../../web/api-keys/index.html");
const ELEMENT_JS: &str = include_str!("../../web/api-keys/keyward-api-keys.js");
const PAGE_JS: &str = include_str!("../../web/api-keys/page.js");
const STYLES_CSS: &str = include_str!("../../web/api-keys/api-keys.css");

/// What the page needs of the rest of the configuration.
pub struct PageContext<'a> {
    pub api: &'a ManagementApiSettings,
    pub catalog: &'a ScopeCatalog,
    pub key_format: &'a KeyFormat,
    pub max_active_per_account: u32,
    /// `keys.max_rotation_grace_seconds`: the longest grace the page offers.
    pub max_rotation_grace: std::time::Duration,
}

/// The page's routes: `{path}`, `{path}/config.json` and `{path}/assets/*`.
/// CORS (for a web component on another origin) is the API's, applied by
/// the caller over both routers.
pub fn router(page: &SettingsPageSettings, context: &PageContext<'_>) -> Router {
    let base = page.path.clone();
    let index = INDEX_HTML
        .replace("{{BASE}}", &base)
        .replace("{{TITLE}}", &html_escape(&page.title))
        .replace("{{PRODUCT}}", &html_escape(&page.product));
    let config = page_config(page, context).to_string();
    let theme = theme_css(page);
    let csp = content_security_policy(page);
    let html = asset(index, "text/html; charset=utf-8", &csp);
    let config = asset(config, "application/json", &csp);
    let element = asset(
        ELEMENT_JS.to_owned(),
        "text/javascript; charset=utf-8",
        &csp,
    );
    let page_js = asset(PAGE_JS.to_owned(), "text/javascript; charset=utf-8", &csp);
    let styles = asset(STYLES_CSS.to_owned(), "text/css; charset=utf-8", &csp);
    let theme = asset(theme, "text/css; charset=utf-8", &csp);
    Router::new()
        .route(&base, get(move || async move { html.respond() }))
        .route(
            &format!("{base}/config.json"),
            get(move || async move { config.respond() }),
        )
        .route(
            &format!("{base}/assets/keyward-api-keys.js"),
            get(move || async move { element.respond() }),
        )
        .route(
            &format!("{base}/assets/page.js"),
            get(move || async move { page_js.respond() }),
        )
        .route(
            &format!("{base}/assets/api-keys.css"),
            get(move || async move { styles.respond() }),
        )
        .route(
            &format!("{base}/assets/theme.css"),
            get(move || async move { theme.respond() }),
        )
}

/// A response built once and cloned per request.
#[derive(Clone)]
struct Asset {
    body: axum::body::Bytes,
    content_type: HeaderValue,
    csp: HeaderValue,
}

fn asset(body: String, content_type: &'static str, csp: &HeaderValue) -> Asset {
    Asset {
        body: body.into(),
        content_type: HeaderValue::from_static(content_type),
        csp: csp.clone(),
    }
}

impl Asset {
    fn respond(&self) -> Response {
        let mut response = (StatusCode::OK, self.body.clone()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        // Small, and they change with the binary or the profile: always
        // revalidated, never kept stale.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

/// Only this origin, for everything; framed by this origin and the
/// profile's `frame_ancestors` only.
fn content_security_policy(page: &SettingsPageSettings) -> HeaderValue {
    let mut ancestors = String::from("'self'");
    for origin in &page.frame_ancestors {
        ancestors.push(' ');
        ancestors.push_str(origin);
    }
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    );
    HeaderValue::from_str(&policy).expect("validated origins are header-safe")
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The profile's theme as CSS variables (colours and the font list are
/// validated, so they cannot end the rule).
fn theme_css(page: &SettingsPageSettings) -> String {
    let theme = &page.theme;
    format!(
        ":root, keyward-api-keys {{\n  --kw-background: {};\n  --kw-surface: {};\n  --kw-text: {};\n  \
         --kw-muted: {};\n  --kw-accent: {};\n  --kw-on-accent: {};\n  --kw-danger: {};\n  \
         --kw-border: {};\n  --kw-font: {};\n}}\n",
        theme.background.css(),
        theme.surface.css(),
        theme.text.css(),
        theme.muted.css(),
        theme.accent.css(),
        theme.on_accent.css(),
        theme.danger.css(),
        theme.border.css(),
        theme.font_family,
    )
}

/// `config.json`: what the page must know to speak the profile's API.
pub fn page_config(page: &SettingsPageSettings, context: &PageContext<'_>) -> Value {
    let api = context.api;
    let mut routes = Map::new();
    for operation in Operation::ALL {
        let route = api.route(operation).map_or(
            Value::Null,
            |route| json!({"method": route.method.as_str(), "path": route.path}),
        );
        routes.insert(operation.as_str().into(), route);
    }
    let fields = &api.fields;
    let field = |name: &Option<String>| name.clone().map_or(Value::Null, Value::String);
    let fields = json!({
        "id": field(&fields.id),
        "name": field(&fields.name),
        "secret": field(&fields.secret),
        "start": field(&fields.start),
        "scopes": field(&fields.scopes),
        "preset": field(&fields.preset),
        "created_at": field(&fields.created_at),
        "expires_at": field(&fields.expires_at),
        "revoked_at": field(&fields.revoked_at),
        "last_used_at": field(&fields.last_used_at),
    });
    let catalog = context.catalog;
    let scopes: Vec<Value> = catalog
        .definitions()
        .iter()
        .map(|scope| {
            json!({
                "name": scope.name,
                "description": scope.description,
                "implies": scope.implies,
                "auto_grant": scope.auto_grant,
                "reserved": scope.reserved,
            })
        })
        .collect();
    let presets: Vec<Value> = catalog
        .presets()
        .iter()
        .map(|preset| {
            json!({
                "name": preset.name,
                "label": page.preset_labels.get(&preset.name).unwrap_or(&preset.description),
                "description": preset.description,
                "scopes": catalog.sorted_names(preset.scopes),
            })
        })
        .collect();
    let toggles: Vec<Value> = api
        .toggles
        .iter()
        .map(|toggle| {
            let description = catalog
                .definitions()
                .iter()
                .find(|scope| scope.name == toggle.scope)
                .map(|scope| scope.description.clone())
                .unwrap_or_default();
            json!({
                "field": toggle.field,
                "scope": toggle.scope,
                "label": page.toggle_labels.get(&toggle.field).unwrap_or(&toggle.field),
                "description": description,
            })
        })
        .collect();
    let errors = &api.errors;
    let errors: Vec<Value> = [
        ("unauthenticated", &errors.unauthenticated),
        ("permission_denied", &errors.permission_denied),
        ("invalid", &errors.invalid),
        ("not_found", &errors.not_found),
        ("key_limit", &errors.key_limit),
        ("key_revoked", &errors.key_revoked),
        ("unavailable", &errors.unavailable),
    ]
    .into_iter()
    .map(|(kind, text)| {
        json!({
            "kind": kind,
            "code": &*text.code,
            "message": &*text.message,
            "status": text.http_status,
        })
    })
    .collect();
    json!({
        "product": page.product,
        "title": page.title,
        "labels": {
            "name": page.name_label,
            "create": page.create_label,
            "custom": page.custom_label,
        },
        "key_prefix": context.key_format.prefix(),
        "max_active_per_account": context.max_active_per_account,
        "max_rotation_grace_seconds": context.max_rotation_grace.as_secs(),
        "page_size": page.page_size,
        "expiring_days": page.expiring_days,
        "frame_ancestors": page.frame_ancestors,
        "account_header": super::ACCOUNT_HEADER,
        "routes": routes,
        "fields": fields,
        "scopes_shape": match api.scopes_shape {
            ScopesShape::Names => "names",
            ScopesShape::Levels => "levels",
        },
        "scopes": scopes,
        "presets": presets,
        "toggles": toggles,
        "errors": errors,
    })
}

#[cfg(test)]
mod tests;
