//! A key's metadata (the owner's labels, issue 17): validation of the map a
//! caller sends. The key cache keeps it in the cached key's own allocation
//! (`key_cache/cached_key.rs`). No proto types here.

use std::collections::BTreeMap;

/// Metadata as validated: names to values, in name order (the same type
/// as `storage::Metadata`).
pub type Metadata = BTreeMap<String, String>;

/// At most this many entries per key.
pub const MAX_ENTRIES: usize = 16;
/// A name is 1 to this many bytes of `[a-z0-9_.-]`.
pub const MAX_NAME_BYTES: usize = 64;
/// A value is at most this many bytes of UTF-8 without control characters.
pub const MAX_VALUE_BYTES: usize = 512;

/// Why metadata was refused. `field` names the entry as the caller wrote
/// it (`metadata["Plan"]`), or `metadata` for the count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct MetadataError {
    pub field: String,
    pub reason: String,
}

/// The field name of one entry: `metadata["name"]`, the name shortened
/// and escaped so that no caller input reaches an error unbounded.
pub fn entry_field(name: &str) -> String {
    let shown: String = name.chars().take(MAX_NAME_BYTES + 1).collect();
    format!("metadata[{shown:?}]")
}

/// A metadata name: 1 to 64 bytes of `[a-z0-9_.-]`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "names must be 1 to {MAX_NAME_BYTES} bytes, got {}",
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("names may hold only a-z 0-9 _ . -".into());
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "values must be at most {MAX_VALUE_BYTES} bytes, got {}",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err("values must not hold control characters".into());
    }
    Ok(())
}

/// Validates a caller's map (a `String` is already valid UTF-8: protobuf
/// refuses anything else before it reaches here). Entries are checked in
/// name order, so the error named does not depend on a hash map's order.
pub fn parse<'a>(
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<Metadata, MetadataError> {
    let sorted: BTreeMap<&String, &String> = entries.into_iter().collect();
    if sorted.len() > MAX_ENTRIES {
        return Err(MetadataError {
            field: "metadata".into(),
            reason: format!("at most {MAX_ENTRIES} entries, got {}", sorted.len()),
        });
    }
    let mut metadata = BTreeMap::new();
    for (name, value) in sorted {
        let bad = |reason| MetadataError {
            field: entry_field(name),
            reason,
        };
        check_name(name).map_err(bad)?;
        check_value(value).map_err(bad)?;
        metadata.insert(name.clone(), value.clone());
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn good_metadata_passes_and_bad_names_the_entry() {
        let good = map(&[
            ("plan", "pro"),
            ("region.eu-1_b", ""),
            ("x", &"v".repeat(512)),
        ]);
        assert_eq!(parse(good.iter()).unwrap(), good);
        for (name, value, field) in [
            ("Plan", "x", "metadata[\"Plan\"]"),
            ("", "x", "metadata[\"\"]"),
            (&*"a".repeat(65), "x", &*entry_field(&"a".repeat(65))),
            ("plan", &*"v".repeat(513), "metadata[\"plan\"]"),
            ("plan", "a\nb", "metadata[\"plan\"]"),
            ("plan", "a\u{7f}", "metadata[\"plan\"]"),
            ("pl an", "x", "metadata[\"pl an\"]"),
        ] {
            let bad = map(&[(name, value)]);
            assert_eq!(parse(bad.iter()).unwrap_err().field, field, "{name:?}");
        }
        let many: BTreeMap<String, String> =
            (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(parse(many.iter()).unwrap_err().field, "metadata");
    }
}
