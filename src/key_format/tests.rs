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

fn checksummed() -> KeyFormat {
    KeyFormat::new("kw_", 40, Alphabet::Base62, vec!["Bearer".into()], 6)
        .unwrap()
        .with_checksum(true)
        .unwrap()
}

#[test]
fn checksums_are_six_base62_digits_of_the_crc32() {
    // CRC32 (IEEE) of "123456789" is the standard check value 0xCBF43926;
    // the six digits read back in base 62 give it again.
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    let digits = checksum_of(b"123456789");
    let mut value: u64 = 0;
    for digit in digits {
        let position = BASE62.iter().position(|&b| b == digit).unwrap() as u64;
        value = value * 62 + position;
    }
    assert_eq!(value, 0xCBF4_3926);
    // Small values are padded with zeros.
    assert_eq!(checksum_of(b"").len(), CHECKSUM_CHARS);
    assert_eq!(crc32fast::hash(b""), 0);
    assert_eq!(&checksum_of(b""), b"000000");
}

#[test]
fn checksummed_keys_keep_their_length_and_fail_when_altered() {
    let format = checksummed();
    let (secret, _, _) = format.generate().unwrap();
    let key = secret.expose();
    let body = key.strip_prefix("kw_").unwrap();
    assert_eq!(body.len(), 40, "body_length is the whole body");
    assert_eq!(format.check_key(key), Ok(()));
    let (random, checksum) = body.split_at(34);
    assert_eq!(checksum.as_bytes(), checksum_of(random.as_bytes()));
    // One character changed anywhere: malformed.
    for position in [3, 3 + 20, key.len() - 1] {
        let mut altered = key.as_bytes().to_vec();
        altered[position] = if altered[position] == b'a' {
            b'b'
        } else {
            b'a'
        };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(
            format.check_key(&altered),
            Err(CredentialProblem::Malformed),
            "{position}"
        );
    }
    // The same key is fine for a format without the checksum.
    let plain = KeyFormat::new("kw_", 40, Alphabet::Base62, vec![], 6).unwrap();
    let mut altered = key.to_owned();
    altered.pop();
    altered.push(if key.ends_with('a') { 'b' } else { 'a' });
    assert_eq!(plain.check_key(&altered), Ok(()));
}

#[test]
fn a_checksum_needs_room_for_the_entropy() {
    // 32 hex characters carry exactly 128 bits; less 6 for the checksum,
    // too few.
    let format = KeyFormat::new("cc_", 32, Alphabet::LowerHex, vec![], 6).unwrap();
    let (field, reason) = format.with_checksum(true).unwrap_err();
    assert_eq!(field, "checksum");
    assert!(reason.contains("26 random hex"), "{reason}");
    let error = KeySettings::from_raw(RawKeys {
        body_length: Some(32),
        checksum: Some(true),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(error.key, "keys.checksum");
}

#[test]
fn scanner_regexes_follow_the_format() {
    assert_eq!(KeyFormat::carboncopy().scanner_regex(), "cc_[0-9a-f]{64}");
    assert_eq!(
        checksummed().scanner_regex(),
        "kw_[0-9A-Za-z]{34}[0-9A-Za-z]{6}"
    );
    let dashed = KeyFormat::new("a-b_", 64, Alphabet::LowerAlphanumeric, vec![], 6).unwrap();
    assert_eq!(dashed.scanner_regex(), "a\\-b_[0-9a-z]{64}");
}
