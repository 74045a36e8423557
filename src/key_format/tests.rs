//! Unit tests for `key_format`.

use super::*;

fn hex64(fill: char) -> String {
    std::iter::repeat_n(fill, 64).collect()
}

#[test]
fn generated_secret_has_prefix_and_64_lower_hex() {
    let format = KeyFormat::carboncopy();
    let (secret, digest, start) = format.generate().unwrap();
    let body = secret.expose().strip_prefix("cc_").unwrap();
    assert_eq!(body.len(), 64);
    assert!(crate::domain::is_lower_hex(body));
    assert_eq!(digest, KeyDigest::of(secret.expose()));
    assert_eq!(start, secret.expose()[..9]);
    assert_eq!(format.extract(secret.expose()), Ok(secret.expose()));
}

#[test]
fn secrets_differ() {
    let format = KeyFormat::carboncopy();
    let (a, _, _) = format.generate().unwrap();
    let (b, _, _) = format.generate().unwrap();
    assert_ne!(a.expose(), b.expose());
}

#[test]
fn schemes_are_case_insensitive_and_whitespace_is_ignored() {
    let format = KeyFormat::carboncopy();
    let key = format!("cc_{}", hex64('a'));
    for credential in [
        key.clone(),
        format!("Bearer {key}"),
        format!("bearer {key}"),
        format!("  BEARER   {key}  "),
        format!("ApiKey {key}"),
        format!("apikey\t{key}"),
        format!("\n{key}\n"),
    ] {
        assert_eq!(
            format.extract(&credential),
            Ok(key.as_str()),
            "{credential:?}"
        );
    }
}

#[test]
fn shape_problems_are_told_apart() {
    let format = KeyFormat::carboncopy();
    assert_eq!(format.extract(""), Err(CredentialProblem::Missing));
    assert_eq!(format.extract("   "), Err(CredentialProblem::Missing));
    assert_eq!(format.extract("Bearer"), Err(CredentialProblem::Missing));
    assert_eq!(
        format.extract("Basic dXNlcjpwYXNz"),
        Err(CredentialProblem::Missing)
    );
    assert_eq!(
        format.extract(&format!("xx_{}", hex64('a'))),
        Err(CredentialProblem::Missing)
    );
    // Right prefix, wrong body.
    assert_eq!(
        format.extract(&format!("cc_{}", hex64('A'))),
        Err(CredentialProblem::Malformed)
    );
    assert_eq!(format.extract("cc_abc"), Err(CredentialProblem::Malformed));
    assert_eq!(
        format.extract(&format!("cc_{}0", hex64('a'))),
        Err(CredentialProblem::Malformed)
    );
    assert_eq!(
        format.extract(&format!("cc_{}é", &hex64('a')[..63])),
        Err(CredentialProblem::Malformed)
    );
    // A scheme keyward was not told about is not stripped.
    assert_eq!(
        format.extract(&format!("Token cc_{}", hex64('a'))),
        Err(CredentialProblem::Missing)
    );
}

#[test]
fn huge_credentials_are_rejected_on_length() {
    let format = KeyFormat::carboncopy();
    let huge = format!("cc_{}", "a".repeat(1 << 20));
    assert_eq!(format.extract(&huge), Err(CredentialProblem::Malformed));
    assert_eq!(
        format.extract(&"x".repeat(1 << 20)),
        Err(CredentialProblem::Missing)
    );
}

#[test]
fn other_alphabets_generate_and_parse() {
    let format =
        KeyFormat::new("csb_pub_", 32, Alphabet::Base62, vec!["Bearer".into()], 4).unwrap();
    let (secret, _, start) = format.generate().unwrap();
    assert!(start.starts_with("csb_pub_") && start.len() == 12);
    assert_eq!(format.extract(secret.expose()), Ok(secret.expose()));
    assert_eq!(
        format.extract(&format!("csb_pub_{}", "-".repeat(32))),
        Err(CredentialProblem::Malformed)
    );
}

#[test]
fn weak_or_odd_formats_are_refused() {
    assert!(KeyFormat::new("cc_", 16, Alphabet::LowerHex, vec![], 4).is_err());
    assert!(KeyFormat::new("", 64, Alphabet::LowerHex, vec![], 6).is_err());
    assert!(KeyFormat::new("c c", 64, Alphabet::LowerHex, vec![], 6).is_err());
    assert!(KeyFormat::new("cc_", 64, Alphabet::LowerHex, vec!["Bear er".into()], 6).is_err());
    assert!(KeyFormat::new("cc_", 64, Alphabet::LowerHex, vec![], 40).is_err());
}

#[test]
fn secret_debug_is_redacted() {
    let (secret, _, _) = KeyFormat::carboncopy().generate().unwrap();
    assert_eq!(format!("{secret:?}"), "KeySecret(..)");
}
