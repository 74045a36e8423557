//! Unit tests for `scope_catalog`.

use super::*;

fn def(name: &str, implies: &[&str]) -> ScopeDefinition {
    ScopeDefinition {
        name: name.into(),
        description: String::new(),
        implies: implies.iter().map(|s| (*s).to_owned()).collect(),
        auto_grant: false,
        reserved: false,
        denial: None,
    }
}

fn names(catalog: &ScopeCatalog, set: ScopeSet) -> Vec<&str> {
    catalog.names(set).collect()
}

#[test]
fn write_implies_read_in_the_default_catalog() {
    let catalog = ScopeCatalog::carboncopy();
    let granted = catalog
        .resolve_grant(&["traders:write".into()], None)
        .unwrap();
    let effective = catalog.effective(granted);
    assert_eq!(
        names(&catalog, effective),
        ["traders:read", "traders:write"]
    );
    assert!(!effective.contains(catalog.lookup("orders:read").unwrap()));
}

/// The built-in catalog is read from `profiles/carboncopy.toml`; this is
/// what it must hold (editing the profile's scopes changes the default).
#[test]
fn the_built_in_catalog_is_carboncopys() {
    let scope = |name: &str, description: &str, implies: &[&str], reserved: bool| ScopeDefinition {
        reserved,
        description: description.into(),
        ..def(name, implies)
    };
    let catalog = ScopeCatalog::carboncopy();
    assert_eq!(
        catalog.definitions(),
        [
            scope(
                "portfolio:read",
                "View portfolio summary, history, and positions",
                &[],
                false
            ),
            scope("traders:read", "List and view traders", &[], false),
            scope(
                "traders:write",
                "Follow, edit and unfollow traders",
                &["traders:read"],
                false
            ),
            scope("orders:read", "View orders", &[], false),
            scope(
                "orders:write",
                "Future order mutations",
                &["orders:read"],
                false
            ),
            scope(
                "markets:read",
                "Market data access (coming soon)",
                &[],
                true
            ),
            scope("account:read", "View account information", &[], false),
        ]
    );
    assert!(catalog.presets().is_empty());
}

#[test]
fn a_file_without_scopes_gets_the_built_in_ones_and_keeps_its_presets() {
    let preset = RawPreset {
        name: "reader".into(),
        description: String::new(),
        scopes: vec!["orders:*".into()],
    };
    let catalog = ScopeCatalog::from_raw(None, vec![preset]).unwrap();
    assert_eq!(
        catalog.definitions(),
        ScopeCatalog::carboncopy().definitions()
    );
    assert_eq!(catalog.presets()[0].name, "reader");
}

#[test]
fn implication_is_transitive() {
    let catalog = ScopeCatalog::new(
        vec![def("a", &["b"]), def("b", &["c"]), def("c", &[])],
        vec![],
    )
    .unwrap();
    let granted = catalog.resolve_grant(&["a".into()], None).unwrap();
    assert_eq!(names(&catalog, catalog.effective(granted)), ["a", "b", "c"]);
}

#[test]
fn auto_granted_scopes_are_in_every_effective_set() {
    let mut catalog_scope = def("read:catalog", &[]);
    catalog_scope.auto_grant = true;
    let catalog = ScopeCatalog::new(vec![catalog_scope, def("read:trades", &[])], vec![]).unwrap();
    assert_eq!(
        names(&catalog, catalog.effective(ScopeSet::EMPTY)),
        ["read:catalog"]
    );
}

#[test]
fn presets_expand_patterns() {
    let catalog = ScopeCatalog::new(
        vec![def("read:a", &[]), def("write:a", &[]), def("read:b", &[])],
        vec![
            PresetDefinition {
                name: "read-everything".into(),
                description: String::new(),
                scopes: vec!["read:*".into()],
            },
            PresetDefinition {
                name: "everything".into(),
                description: String::new(),
                scopes: vec!["*".into()],
            },
        ],
    )
    .unwrap();
    let read = catalog.resolve_grant(&[], Some("read-everything")).unwrap();
    assert_eq!(names(&catalog, read), ["read:a", "read:b"]);
    let all = catalog
        .resolve_grant(&["write:a".into()], Some("everything"))
        .unwrap();
    assert_eq!(names(&catalog, all), ["read:a", "write:a", "read:b"]);
}

#[test]
fn bad_grants_are_refused_with_the_valid_names() {
    let catalog = ScopeCatalog::carboncopy();
    let err = catalog
        .resolve_grant(&["traders:admin".into()], None)
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("traders:admin"), "{message}");
    assert!(message.contains("portfolio:read"), "{message}");
    assert_eq!(
        catalog
            .resolve_grant(&["orders:read".into(), "orders:read".into()], None)
            .unwrap_err(),
        GrantError::DuplicateScope("orders:read".into())
    );
    assert!(matches!(
        catalog.resolve_grant(&[], Some("nope")),
        Err(GrantError::UnknownPreset { .. })
    ));
}

#[test]
fn bad_catalogs_are_refused_naming_the_entry() {
    let err = ScopeCatalog::new(vec![def("a", &["missing"])], vec![]).unwrap_err();
    assert_eq!(err.path, "scopes[0].implies");
    let err = ScopeCatalog::new(vec![def("a", &[]), def("a", &[])], vec![]).unwrap_err();
    assert_eq!(err.path, "scopes[1].name");
    let err = ScopeCatalog::new(vec![def("Bad Name", &[])], vec![]).unwrap_err();
    assert_eq!(err.path, "scopes[0].name");
    let too_many = (0..=MAX_SCOPES)
        .map(|i| def(&format!("s{i}"), &[]))
        .collect();
    assert_eq!(
        ScopeCatalog::new(too_many, vec![]).unwrap_err().path,
        "scopes"
    );
    let err = ScopeCatalog::new(
        vec![def("a", &[])],
        vec![PresetDefinition {
            name: "p".into(),
            description: String::new(),
            scopes: vec!["b*".into()],
        }],
    )
    .unwrap_err();
    assert_eq!(err.path, "presets[0].scopes");
}

#[test]
fn stored_names_map_back_and_report_strays() {
    let catalog = ScopeCatalog::carboncopy();
    let (set, unknown) = catalog.granted_from_names(["orders:read", "gone:scope"]);
    assert_eq!(names(&catalog, set), ["orders:read"]);
    assert_eq!(unknown, ["gone:scope"]);
}

#[test]
fn cyclic_implications_terminate() {
    let catalog = ScopeCatalog::new(vec![def("a", &["b"]), def("b", &["a"])], vec![]).unwrap();
    let granted = catalog.resolve_grant(&["a".into()], None).unwrap();
    assert_eq!(names(&catalog, catalog.effective(granted)), ["a", "b"]);
}

/// A set's bits, renumbered by alphabetical position, pick from the sorted
/// names exactly the set's names in alphabetical order; its plain bits pick
/// them from the names in catalog order.
#[test]
fn bits_pick_a_sets_names_from_either_list() {
    let catalog = ScopeCatalog::carboncopy();
    let all: Vec<&str> = catalog.all_names().collect();
    let sorted: Vec<&str> = catalog.all_names_sorted().collect();
    let pick = |list: &[&str], bits: u128| -> Vec<String> {
        (0..list.len())
            .filter(|&i| bits & (1 << i) != 0)
            .map(|i| list[i].to_owned())
            .collect()
    };
    assert_ne!(all, sorted, "the test needs a catalog not already sorted");
    for granted in [
        &["traders:write"][..],
        &["orders:read", "traders:read"],
        &["account:read"],
    ] {
        let granted: Vec<String> = granted.iter().map(|&s| s.to_owned()).collect();
        let set = catalog.effective(catalog.resolve_grant(&granted, None).unwrap());
        assert_eq!(
            pick(&sorted, catalog.sorted_bits(set)),
            catalog.sorted_names(set)
        );
        assert_eq!(pick(&all, set.bits()), names(&catalog, set));
    }
}
