use super::settings::{Colour, MIN_CONTRAST};
use crate::config::Config;

fn parse(extra: &str) -> Result<Config, crate::config::ConfigError> {
    Config::parse(extra, "page-test.toml")
}

#[test]
fn defaults_serve_the_page_at_settings_api_keys() {
    let config = parse("").unwrap();
    assert!(config.settings_page.enabled);
    assert_eq!(config.settings_page.path, "/settings/api-keys");
}

#[test]
fn contrast_is_the_wcag_ratio() {
    let black = Colour::parse("#000000").unwrap();
    let white = Colour::parse("#ffffff").unwrap();
    assert!((black.contrast(white) - 21.0).abs() < 1e-9);
    assert!((white.contrast(white) - 1.0).abs() < 1e-9);
    // #767676 on white is the classic AA boundary (4.54:1).
    let grey = Colour::parse("#767676").unwrap();
    assert!(grey.contrast(white) >= MIN_CONTRAST);
    assert!(Colour::parse("#777777").unwrap().contrast(white) < MIN_CONTRAST);
}

#[test]
fn an_unreadable_theme_is_refused_naming_the_colour() {
    let error = parse("[settings_page.theme]\nmuted = \"#aaaaaa\"\n").unwrap_err();
    assert_eq!(error.key, "settings_page.theme.muted", "{error}");
    assert!(error.reason.contains("contrast"), "{error}");
    let error = parse("[settings_page.theme]\naccent = \"blue\"\n").unwrap_err();
    assert_eq!(error.key, "settings_page.theme.accent", "{error}");
    let error =
        parse("[settings_page.theme]\nfont_family = \"x; } body { color: red\"\n").unwrap_err();
    assert_eq!(error.key, "settings_page.theme.font_family", "{error}");
}

#[test]
fn a_path_on_an_api_route_or_above_one_is_refused() {
    for path in [
        "/v1/keys",
        "/v1/keys/abc",
        "/v1",
        "settings",
        "/a//b",
        "/a b",
    ] {
        let error = parse(&format!("[settings_page]\npath = \"{path}\"\n")).unwrap_err();
        assert_eq!(error.key, "settings_page.path", "{path}: {error}");
    }
    let config = parse("[settings_page]\npath = \"/account/keys\"\n").unwrap();
    assert_eq!(config.settings_page.path, "/account/keys");
}

#[test]
fn labels_must_name_toggles_and_presets_that_exist() {
    let error = parse("[settings_page.toggle_labels]\ntradingEnabled = \"Trading\"\n").unwrap_err();
    assert_eq!(
        error.key, "settings_page.toggle_labels.tradingEnabled",
        "{error}"
    );
    let error = parse("[settings_page.preset_labels]\nnope = \"Nope\"\n").unwrap_err();
    assert_eq!(error.key, "settings_page.preset_labels.nope", "{error}");
    let error = parse("[settings_page]\ntitle = \"\"\n").unwrap_err();
    assert_eq!(error.key, "settings_page.title", "{error}");
    let error = parse("[settings_page]\nframe_ancestors = [\"*\"]\n").unwrap_err();
    assert_eq!(error.key, "settings_page.frame_ancestors[0]", "{error}");
    let error = parse("[settings_page]\nbogus = 1\n").unwrap_err();
    assert!(error.key.contains("settings_page"), "{error}");
}

#[test]
fn the_page_config_speaks_the_profiles_api() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/csboard.toml");
    let config = Config::load(&path).unwrap();
    let value = super::page_config(
        &config.settings_page,
        &super::PageContext {
            api: &config.management_api,
            catalog: &config.catalog,
            key_format: &config.key_format,
            max_active_per_account: config.max_active_keys_per_account,
            max_rotation_grace: config.max_rotation_grace,
        },
    );
    assert_eq!(value["fields"]["name"], "label");
    assert_eq!(value["fields"]["secret"], "key");
    assert_eq!(value["routes"]["update"]["method"], "PATCH");
    assert_eq!(value["routes"]["scopes"], serde_json::Value::Null);
    assert_eq!(value["toggles"][0]["field"], "tradingEnabled");
    assert_eq!(value["toggles"][0]["label"], "Trading enabled");
    assert_eq!(value["key_prefix"], "csb_pub_");
    assert_eq!(value["max_active_per_account"], 10);
    assert_eq!(
        value["routes"]["rotate"]["path"],
        "/v1/keys/{key_id}/rotate"
    );
}

#[test]
fn page_size_and_expiring_days_out_of_range_are_named() {
    for (line, key) in [
        ("page_size = 0", "settings_page.page_size"),
        ("page_size = 101", "settings_page.page_size"),
        ("expiring_days = 366", "settings_page.expiring_days"),
    ] {
        let error = parse(&format!("[settings_page]\n{line}\n")).unwrap_err();
        assert_eq!(error.key, key, "{line}: {error}");
        assert!(error.to_string().contains("page-test.toml"), "{error}");
    }
    let config = parse("[settings_page]\npage_size = 100\nexpiring_days = 0\n").unwrap();
    assert_eq!(config.settings_page.page_size, 100);
    assert_eq!(config.settings_page.expiring_days, 0);
}
