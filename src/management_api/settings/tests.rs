use super::*;

fn parse(text: &str) -> Result<ManagementApiSettings, SettingError> {
    let raw: RawManagementApi = toml::from_str(text).expect("TOML");
    ManagementApiSettings::from_raw(raw, &ScopeCatalog::carboncopy())
}

#[test]
fn defaults_serve_every_route_in_snake_case() {
    let settings = parse("").unwrap();
    assert_eq!(settings.routes.len(), Operation::ALL.len());
    let get = settings.route(Operation::Get).unwrap();
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        ("GET", "/v1/keys/{key_id}")
    );
    assert_eq!(settings.fields.created_at.as_deref(), Some("created_at"));
    assert_eq!(settings.scopes_shape, ScopesShape::Names);
}

#[test]
fn an_empty_route_is_not_served_and_an_empty_field_not_shown() {
    let settings = parse("get = \"\"\n[fields]\nstart = \"\"\nid = \"_id\"").unwrap();
    assert!(settings.route(Operation::Get).is_none());
    assert_eq!(settings.fields.start, None);
    assert_eq!(settings.fields.id.as_deref(), Some("_id"));
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("create = \"POST\"", "management_api.create"),
        ("create = \"FETCH /v1/keys\"", "management_api.create"),
        ("create = \"POST v1/keys\"", "management_api.create"),
        ("create = \"POST /v1//keys\"", "management_api.create"),
        (
            "create = \"POST /v1/keys/{key_id}\"",
            "management_api.create",
        ),
        ("revoke = \"DELETE /v1/keys\"", "management_api.revoke"),
        ("get = \"GET /v1/keys/{id}\"", "management_api.get"),
        ("list = \"POST /v1/keys\"", "management_api.list"),
        ("scopes_shape = \"object\"", "management_api.scopes_shape"),
        ("[fields]\nsecret = \"\"", "management_api.fields.secret"),
        ("[fields]\nid = \"name\"", "management_api.fields.name"),
        ("[fields]\nid = \"has space\"", "management_api.fields.id"),
        (
            "[[toggles]]\nfield = \"name\"\nscope = \"orders:read\"",
            "management_api.toggles[0].field",
        ),
        (
            "[[toggles]]\nfield = \"trading\"\nscope = \"trading\"",
            "management_api.toggles[0].scope",
        ),
        (
            "cors_allowed_origins = [\"*\"]",
            "management_api.cors_allowed_origins[0]",
        ),
        (
            "cors_allowed_origins = [\"https://a.example/x\"]",
            "management_api.cors_allowed_origins[0]",
        ),
        (
            "[errors.key_limit]\nhttp_status = 500",
            "management_api.errors.key_limit.http_status",
        ),
        (
            "[errors.invalid]\ncode = \"two words\"",
            "management_api.errors.invalid.code",
        ),
    ];
    for (text, key) in cases {
        let error = parse(text).expect_err(text);
        assert_eq!(error.key, key, "{text}: {error}");
        assert!(!error.reason.is_empty());
    }
}

#[test]
fn levels_need_every_scope_named_resource_level() {
    assert!(
        parse("scopes_shape = \"levels\"").is_ok(),
        "Carboncopy's scopes are resource:level"
    );
    let raw: RawManagementApi = toml::from_str("scopes_shape = \"levels\"").unwrap();
    let catalog = ScopeCatalog::new(
        vec![crate::scope_catalog::ScopeDefinition {
            name: "trading".into(),
            description: String::new(),
            implies: vec![],
            auto_grant: false,
            reserved: false,
            denial: None,
        }],
        vec![],
    )
    .unwrap();
    let error = ManagementApiSettings::from_raw(raw, &catalog).unwrap_err();
    assert_eq!(error.key, "management_api.scopes_shape");
}
