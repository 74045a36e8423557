//! `[settings_page]`: where the API-keys settings page is served, the
//! product's words on it (title, the name field's label, the create
//! button, toggle and preset labels), the origins that may frame it, and
//! its theme (colours and font as CSS variables, checked for contrast at
//! load so a profile cannot ship an unreadable page).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::management_api::settings::{ManagementApiSettings, cors_origin};
use crate::scope_catalog::ScopeCatalog;
use crate::settings::SettingError;

/// The page's path unless the profile sets another.
pub const DEFAULT_PATH: &str = "/settings/api-keys";

/// WCAG 2 AA for normal text: the least contrast ratio between a text
/// colour and the colour it is drawn on.
pub const MIN_CONTRAST: f64 = 4.5;

/// WCAG 2 AA for the borders of controls.
pub const MIN_UI_CONTRAST: f64 = 3.0;

/// The validated `[settings_page]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsPageSettings {
    /// `false`: not served even when the HTTP listener is on.
    pub enabled: bool,
    /// `/settings/api-keys`: the page; its assets are below it.
    pub path: String,
    pub product: String,
    pub title: String,
    /// The key's name field as the product calls it ("Label").
    pub name_label: String,
    /// The create button ("Create Key", "Generate key").
    pub create_label: String,
    /// Toggle field -> its label ("tradingEnabled" -> "Trading enabled").
    pub toggle_labels: BTreeMap<String, String>,
    /// Preset name -> its label ("read-everything" -> "Read everything").
    pub preset_labels: BTreeMap<String, String>,
    /// The choice of picking scopes one by one, beside the presets.
    pub custom_label: String,
    /// Origins that may show the page in an iframe and hand it tokens.
    pub frame_ancestors: Vec<String>,
    /// Keys listed per page.
    pub page_size: u32,
    /// A key expiring within this many days is shown as expiring.
    pub expiring_days: u32,
    pub theme: Theme,
}

/// The page's CSS variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Theme {
    pub background: Colour,
    pub surface: Colour,
    pub text: Colour,
    pub muted: Colour,
    pub accent: Colour,
    /// Text on the accent colour (buttons).
    pub on_accent: Colour,
    pub danger: Colour,
    pub border: Colour,
    pub font_family: String,
}

impl Default for Theme {
    fn default() -> Self {
        let c = |hex: &str| Colour::parse(hex).expect("valid default colour");
        Self {
            background: c("#ffffff"),
            surface: c("#f6f7f9"),
            text: c("#1b1f24"),
            muted: c("#4b5563"),
            accent: c("#2f5bd3"),
            on_accent: c("#ffffff"),
            danger: c("#b42318"),
            border: c("#767f8c"),
            font_family: "system-ui, -apple-system, \"Segoe UI\", Roboto, sans-serif".into(),
        }
    }
}

/// A `#rrggbb` colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colour([u8; 3]);

impl Colour {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a colour like \"#1b1f24\"");
        let hex = text.strip_prefix('#').ok_or_else(bad)?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
        Ok(Self([byte(0)?, byte(2)?, byte(4)?]))
    }

    /// `#rrggbb`.
    pub fn css(self) -> String {
        let [r, g, b] = self.0;
        format!("#{r:02x}{g:02x}{b:02x}")
    }

    /// WCAG 2 relative luminance.
    fn luminance(self) -> f64 {
        let channel = |value: u8| {
            let c = f64::from(value) / 255.0;
            if c <= 0.039_28 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        let [r, g, b] = self.0;
        0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
    }

    /// WCAG 2 contrast ratio, 1 to 21.
    pub fn contrast(self, other: Colour) -> f64 {
        let (a, b) = (self.luminance(), other.luminance());
        let (light, dark) = if a > b { (a, b) } else { (b, a) };
        (light + 0.05) / (dark + 0.05)
    }
}

/// `[settings_page]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSettingsPage {
    pub enabled: Option<bool>,
    pub path: Option<String>,
    pub product: Option<String>,
    pub title: Option<String>,
    pub name_label: Option<String>,
    pub create_label: Option<String>,
    pub toggle_labels: BTreeMap<String, String>,
    pub preset_labels: BTreeMap<String, String>,
    pub custom_label: Option<String>,
    pub frame_ancestors: Vec<String>,
    pub page_size: Option<u32>,
    pub expiring_days: Option<u32>,
    pub theme: RawTheme,
}

/// `[settings_page.theme]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTheme {
    pub background: Option<String>,
    pub surface: Option<String>,
    pub text: Option<String>,
    pub muted: Option<String>,
    pub accent: Option<String>,
    pub on_accent: Option<String>,
    pub danger: Option<String>,
    pub border: Option<String>,
    pub font_family: Option<String>,
}

/// Longest label or title.
const MAX_LABEL_LEN: usize = 80;

impl SettingsPageSettings {
    /// Validates `[settings_page]` against the API it sits on: its path
    /// must not be (or be above) one of the API's routes, and the labels
    /// must name toggles and presets that exist.
    pub fn from_raw(
        raw: RawSettingsPage,
        api: &ManagementApiSettings,
        catalog: &ScopeCatalog,
    ) -> Result<Self, SettingError> {
        let path = raw.path.unwrap_or_else(|| DEFAULT_PATH.to_owned());
        check_path(&path, api).map_err(SettingError::at("settings_page.path"))?;
        let label = |key: &str, written: Option<String>, default: &str| {
            let text = written.unwrap_or_else(|| default.to_owned());
            check_label(&text).map_err(SettingError::at(&format!("settings_page.{key}")))?;
            Ok::<_, SettingError>(text)
        };
        let product = label("product", raw.product, "keyward")?;
        let title = label("title", raw.title, "API keys")?;
        let name_label = label("name_label", raw.name_label, "Name")?;
        let create_label = label("create_label", raw.create_label, "Create key")?;
        let custom_label = label("custom_label", raw.custom_label, "Custom")?;
        for (field, text) in &raw.toggle_labels {
            let key = format!("settings_page.toggle_labels.{field}");
            if !api.toggles.iter().any(|t| &t.field == field) {
                return Err(SettingError::new(
                    key,
                    "names no [[management_api.toggles]] field",
                ));
            }
            check_label(text).map_err(SettingError::at(&key))?;
        }
        for (preset, text) in &raw.preset_labels {
            let key = format!("settings_page.preset_labels.{preset}");
            if !catalog.presets().iter().any(|p| &p.name == preset) {
                return Err(SettingError::new(key, "names no [[presets]] entry"));
            }
            check_label(text).map_err(SettingError::at(&key))?;
        }
        let frame_ancestors = raw
            .frame_ancestors
            .iter()
            .enumerate()
            .map(|(i, origin)| {
                check_origin(origin)
                    .map(|()| origin.clone())
                    .map_err(SettingError::at(&format!(
                        "settings_page.frame_ancestors[{i}]"
                    )))
            })
            .collect::<Result<_, _>>()?;
        let page_size = crate::settings::in_range(raw.page_size.unwrap_or(10), 1, 100)
            .map_err(SettingError::at("settings_page.page_size"))?;
        let expiring_days = crate::settings::in_range(raw.expiring_days.unwrap_or(7), 0, 365)
            .map_err(SettingError::at("settings_page.expiring_days"))?;
        Ok(Self {
            enabled: raw.enabled.unwrap_or(true),
            path,
            product,
            title,
            name_label,
            create_label,
            toggle_labels: raw.toggle_labels,
            preset_labels: raw.preset_labels,
            custom_label,
            frame_ancestors,
            page_size,
            expiring_days,
            theme: theme(raw.theme)?,
        })
    }
}

impl Default for SettingsPageSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            path: DEFAULT_PATH.into(),
            product: "keyward".into(),
            title: "API keys".into(),
            name_label: "Name".into(),
            create_label: "Create key".into(),
            toggle_labels: BTreeMap::new(),
            preset_labels: BTreeMap::new(),
            custom_label: "Custom".into(),
            frame_ancestors: Vec::new(),
            page_size: 10,
            expiring_days: 7,
            theme: Theme::default(),
        }
    }
}

/// `/settings/api-keys`: literal segments, and neither one of the API's
/// routes nor above one (the page's assets live below its path).
fn check_path(path: &str, api: &ManagementApiSettings) -> Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("{path:?} must start with /"));
    };
    if path.len() > 128
        || rest.split('/').any(|segment| {
            segment.is_empty()
                || !segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
    {
        return Err(format!(
            "{path:?} is not a path like \"/settings/api-keys\" (segments of a-z A-Z 0-9 - _ .)"
        ));
    }
    let below = format!("{path}/");
    if let Some(route) = api.routes.iter().find(|route| {
        let segments_match = |a: &str, b: &str| a == b || a == "{key_id}";
        let (route_segments, page_segments): (Vec<&str>, Vec<&str>) =
            (route.path.split('/').collect(), path.split('/').collect());
        let same = route_segments.len() == page_segments.len()
            && route_segments
                .iter()
                .zip(&page_segments)
                .all(|(r, p)| segments_match(r, p));
        same || route.path.starts_with(&below)
    }) {
        return Err(format!(
            "{path:?} collides with the API route {} {}",
            route.method, route.path
        ));
    }
    Ok(())
}

fn check_label(text: &str) -> Result<(), String> {
    if text.trim().is_empty() || text.chars().count() > MAX_LABEL_LEN {
        return Err(format!("must be 1 to {MAX_LABEL_LEN} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not hold control characters".into());
    }
    Ok(())
}

/// `https://app.example.com` or `http://localhost:3000`: it goes into a
/// Content-Security-Policy header, so nothing but an origin passes (the
/// same rule as the key API's CORS origins).
fn check_origin(origin: &str) -> Result<(), String> {
    cors_origin(origin).map(|_| ())
}

fn theme(raw: RawTheme) -> Result<Theme, SettingError> {
    let defaults = Theme::default();
    let colour = |key: &str, written: Option<String>, default: Colour| {
        written.map_or(Ok(default), |text| {
            Colour::parse(&text).map_err(SettingError::at(&format!("settings_page.theme.{key}")))
        })
    };
    let font_family = match raw.font_family {
        None => defaults.font_family,
        // It is written into a stylesheet: letters, digits, spaces,
        // commas, hyphens and quotes only, so it cannot end the rule.
        Some(text)
            if !text.trim().is_empty()
                && text.len() <= 200
                && text.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, ' ' | ',' | '-' | '"' | '\'')
                }) =>
        {
            text
        }
        Some(text) => {
            return Err(SettingError::new(
                "settings_page.theme.font_family",
                format!(
                    "{text:?} is not a font list like \"Inter, sans-serif\" (letters, digits, spaces, commas, hyphens, quotes)"
                ),
            ));
        }
    };
    let theme = Theme {
        background: colour("background", raw.background, defaults.background)?,
        surface: colour("surface", raw.surface, defaults.surface)?,
        text: colour("text", raw.text, defaults.text)?,
        muted: colour("muted", raw.muted, defaults.muted)?,
        accent: colour("accent", raw.accent, defaults.accent)?,
        on_accent: colour("on_accent", raw.on_accent, defaults.on_accent)?,
        danger: colour("danger", raw.danger, defaults.danger)?,
        border: defaults.border,
        font_family,
    };
    let theme = Theme {
        border: colour("border", raw.border, theme.border)?,
        ..theme
    };
    // Every pair the page draws text in.
    // Every pair the page draws text in (4.5:1), and the borders of
    // inputs, which WCAG asks 3:1 of.
    let pairs = [
        (
            "text",
            theme.text,
            "background",
            theme.background,
            MIN_CONTRAST,
        ),
        ("text", theme.text, "surface", theme.surface, MIN_CONTRAST),
        (
            "muted",
            theme.muted,
            "background",
            theme.background,
            MIN_CONTRAST,
        ),
        ("muted", theme.muted, "surface", theme.surface, MIN_CONTRAST),
        (
            "on_accent",
            theme.on_accent,
            "accent",
            theme.accent,
            MIN_CONTRAST,
        ),
        (
            "accent",
            theme.accent,
            "background",
            theme.background,
            MIN_CONTRAST,
        ),
        (
            "danger",
            theme.danger,
            "background",
            theme.background,
            MIN_CONTRAST,
        ),
        (
            "danger",
            theme.danger,
            "surface",
            theme.surface,
            MIN_CONTRAST,
        ),
        (
            "border",
            theme.border,
            "background",
            theme.background,
            MIN_UI_CONTRAST,
        ),
    ];
    for (fore_key, fore, back_key, back, least) in pairs {
        let ratio = fore.contrast(back);
        if ratio < least {
            return Err(SettingError::new(
                format!("settings_page.theme.{fore_key}"),
                format!(
                    "{} on {back_key} {} has a contrast of {ratio:.2}:1; it needs at least {least}:1 (WCAG AA)",
                    fore.css(),
                    back.css()
                ),
            ));
        }
    }
    Ok(theme)
}
