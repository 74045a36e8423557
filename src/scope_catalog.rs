//! The scope catalog: which scopes exist, what each implies, which every key
//! gets, which are reserved, and the named presets. Scopes are held as bit
//! sets over catalog positions, so a scope check on the hot path is one AND.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use crate::denial::{check_denial_code, check_denial_message};
use crate::settings::SettingError;

/// At most this many scopes per catalog (one bit each in [`ScopeSet`]).
pub const MAX_SCOPES: usize = 128;
pub const MAX_SCOPE_NAME_LEN: usize = 64;
/// Longest scope or preset description (shown by ListScopes).
const MAX_DESCRIPTION_CHARS: usize = 500;

/// A set of catalog scopes: bit `i` is the catalog's scope `i`. Two `u64`
/// words rather than a `u128`, whose 16-byte alignment would round a
/// cached key (which holds two sets) up by 8 bytes (issue 19).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet([u64; 2]);

impl ScopeSet {
    pub const EMPTY: Self = Self([0; 2]);

    const fn from_bits(bits: u128) -> Self {
        Self([bits as u64, (bits >> 64) as u64])
    }

    fn single(index: usize) -> Self {
        Self::from_bits(1 << index)
    }

    pub fn contains(self, index: ScopeIndex) -> bool {
        self.bits() & (1 << index.0) != 0
    }

    pub fn union(self, other: Self) -> Self {
        Self::from_bits(self.bits() | other.bits())
    }

    pub fn insert(&mut self, index: ScopeIndex) {
        *self = self.union(Self::single(index.0));
    }

    pub fn is_empty(self) -> bool {
        self.bits() == 0
    }

    /// The set as bits: bit `i` is the catalog's scope `i`.
    pub fn bits(self) -> u128 {
        u128::from(self.0[0]) | u128::from(self.0[1]) << 64
    }

    /// Positions of the set bits, lowest first (one step per member, not
    /// per possible scope: this runs for every response).
    fn indices(self) -> impl Iterator<Item = usize> {
        let mut rest = self.bits();
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let index = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(index)
        })
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeSet({:#x})", self.bits())
    }
}

/// A scope's position in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScopeIndex(usize);

/// A scope's own denial text, e.g. CSBoard's `trading_not_enabled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeDenialText {
    pub code: String,
    pub message: String,
}

/// One catalog entry as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeDefinition {
    pub name: String,
    pub description: String,
    pub implies: Vec<String>,
    pub auto_grant: bool,
    pub reserved: bool,
    pub denial: Option<ScopeDenialText>,
}

/// A named preset as configured. Entries may end in `*` to take every scope
/// with that prefix (`read:*`, or `*` for all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetDefinition {
    pub name: String,
    pub description: String,
    pub scopes: Vec<String>,
}

#[derive(Debug)]
pub struct Preset {
    pub name: String,
    pub description: String,
    pub scopes: ScopeSet,
}

/// One `[[scopes]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScope {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub implies: Vec<String>,
    #[serde(default)]
    pub auto_grant: bool,
    #[serde(default)]
    pub reserved: bool,
    pub denial_code: Option<String>,
    pub denial_message: Option<String>,
}

/// One `[[presets]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreset {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub scopes: Vec<String>,
}

/// Why a catalog could not be built; `path` names the offending entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct CatalogError {
    pub path: String,
    pub reason: String,
}

/// Why a requested grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("unknown scope {name:?}; valid scopes: {valid}")]
    UnknownScope { name: String, valid: String },
    #[error("scope {0:?} is listed more than once")]
    DuplicateScope(String),
    #[error("unknown preset {name:?}; valid presets: {valid}")]
    UnknownPreset { name: String, valid: String },
}

#[derive(Debug)]
pub struct ScopeCatalog {
    definitions: Vec<ScopeDefinition>,
    by_name: HashMap<String, ScopeIndex>,
    /// `closure[i]`: scope `i` and everything it implies, transitively.
    closure: Vec<ScopeSet>,
    auto_granted: ScopeSet,
    presets: Vec<Preset>,
    /// Catalog positions in alphabetical order of name.
    alphabetical: Vec<usize>,
}

/// Whether `name` is well-formed as a scope name (whether or not it is in a
/// catalog).
pub fn valid_scope_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SCOPE_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b':' | b'_' | b'-' | b'.')
        })
}

impl ScopeCatalog {
    pub fn new(
        definitions: Vec<ScopeDefinition>,
        preset_definitions: Vec<PresetDefinition>,
    ) -> Result<Self, CatalogError> {
        if definitions.len() > MAX_SCOPES {
            return Err(catalog_error(
                "scopes".into(),
                format!("at most {MAX_SCOPES} scopes, got {}", definitions.len()),
            ));
        }
        let by_name = index_names(&definitions)?;
        let closure = implication_closure(&definitions, &by_name)?;
        let mut auto_granted = ScopeSet::EMPTY;
        for (i, definition) in definitions.iter().enumerate() {
            if definition.auto_grant {
                auto_granted = auto_granted.union(closure[i]);
            }
        }
        let presets = build_presets(&definitions, &by_name, preset_definitions)?;
        let mut alphabetical: Vec<usize> = (0..definitions.len()).collect();
        alphabetical.sort_by(|&a, &b| definitions[a].name.cmp(&definitions[b].name));
        Ok(Self {
            definitions,
            by_name,
            closure,
            auto_granted,
            presets,
            alphabetical,
        })
    }

    /// Validates `[[scopes]]` and `[[presets]]`. Without `[[scopes]]` the
    /// catalog is the built-in one, Carboncopy's, with the file's presets
    /// if it has any.
    pub fn from_raw(
        scopes: Option<Vec<RawScope>>,
        presets: Vec<RawPreset>,
    ) -> Result<Self, SettingError> {
        let (scopes, presets) = match scopes {
            Some(scopes) => (scopes, presets),
            None => {
                let built_in = carboncopy_catalog_tables();
                let presets = if presets.is_empty() {
                    built_in.presets
                } else {
                    presets
                };
                (built_in.scopes, presets)
            }
        };
        let definitions = scopes
            .into_iter()
            .enumerate()
            .map(|(i, scope)| scope_definition(i, scope))
            .collect::<Result<Vec<_>, _>>()?;
        let presets = presets
            .into_iter()
            .enumerate()
            .map(|(i, preset)| {
                check_description(&preset.description)
                    .map_err(SettingError::at(&format!("presets[{i}].description")))?;
                Ok(PresetDefinition {
                    name: preset.name,
                    description: preset.description,
                    scopes: preset.scopes,
                })
            })
            .collect::<Result<Vec<_>, SettingError>>()?;
        Self::new(definitions, presets).map_err(|error| SettingError::new(error.path, error.reason))
    }

    /// Carboncopy's catalog, the built-in default: the `[[scopes]]` and
    /// `[[presets]]` of `profiles/carboncopy.toml`, read from that file (built
    /// into the binary), so that the default and the profile cannot drift
    /// apart.
    pub fn carboncopy() -> Self {
        Self::from_raw(None, Vec::new()).expect("the catalog of profiles/carboncopy.toml is valid")
    }

    pub fn lookup(&self, name: &str) -> Option<ScopeIndex> {
        self.by_name.get(name).copied()
    }

    pub fn name(&self, index: ScopeIndex) -> &str {
        &self.definitions[index.0].name
    }

    pub fn definitions(&self) -> &[ScopeDefinition] {
        &self.definitions
    }

    pub fn presets(&self) -> &[Preset] {
        &self.presets
    }

    pub fn denial_text(&self, index: ScopeIndex) -> Option<&ScopeDenialText> {
        self.definitions[index.0].denial.as_ref()
    }

    fn valid_names(&self) -> String {
        self.definitions
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Resolves a scope name that a request requires.
    pub fn require(&self, name: &str) -> Result<ScopeIndex, GrantError> {
        self.lookup(name).ok_or_else(|| GrantError::UnknownScope {
            name: name.chars().take(MAX_SCOPE_NAME_LEN * 2).collect(),
            valid: self.valid_names(),
        })
    }

    /// What a new or updated key is granted: the listed scopes plus the
    /// preset's. Unknown or repeated scopes and unknown presets are refused.
    pub fn resolve_grant(
        &self,
        names: &[String],
        preset: Option<&str>,
    ) -> Result<ScopeSet, GrantError> {
        let mut granted = ScopeSet::EMPTY;
        for name in names {
            let index = self.require(name)?;
            if granted.contains(index) {
                return Err(GrantError::DuplicateScope(name.clone()));
            }
            granted.insert(index);
        }
        if let Some(preset_name) = preset {
            let preset = self
                .presets
                .iter()
                .find(|p| p.name == preset_name)
                .ok_or_else(|| GrantError::UnknownPreset {
                    name: preset_name.chars().take(128).collect(),
                    valid: self
                        .presets
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            granted = granted.union(preset.scopes);
        }
        Ok(granted)
    }

    /// Maps stored scope names back to a set; names no longer in the catalog
    /// are returned separately so the caller can log them.
    pub fn granted_from_names<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> (ScopeSet, Vec<&'a str>) {
        let mut set = ScopeSet::EMPTY;
        let mut unknown = Vec::new();
        for name in names {
            match self.lookup(name) {
                Some(index) => set.insert(index),
                None => unknown.push(name),
            }
        }
        (set, unknown)
    }

    /// Everything a key with `granted` may do.
    pub fn effective(&self, granted: ScopeSet) -> ScopeSet {
        granted
            .indices()
            .fold(self.auto_granted, |set, i| set.union(self.closure[i]))
    }

    /// Catalog names of a set, in catalog order.
    pub fn names(&self, set: ScopeSet) -> impl Iterator<Item = &str> {
        set.indices().map(|i| self.definitions[i].name.as_str())
    }

    /// Every name, in catalog order (bit `i` of a set is the `i`-th).
    pub fn all_names(&self) -> impl Iterator<Item = &str> {
        self.definitions.iter().map(|scope| scope.name.as_str())
    }

    /// Every name, in alphabetical order.
    pub fn all_names_sorted(&self) -> impl Iterator<Item = &str> {
        self.alphabetical
            .iter()
            .map(|&i| self.definitions[i].name.as_str())
    }

    /// A set renumbered by alphabetical position: bit `k` is the `k`-th
    /// name of [`Self::all_names_sorted`].
    pub fn sorted_bits(&self, set: ScopeSet) -> u128 {
        self.alphabetical
            .iter()
            .enumerate()
            .filter(|&(_, &i)| set.contains(ScopeIndex(i)))
            .fold(0, |bits, (position, _)| bits | 1 << position)
    }

    /// Catalog names of a set, sorted alphabetically.
    pub fn sorted_names(&self, set: ScopeSet) -> Vec<String> {
        self.alphabetical
            .iter()
            .filter(|&&i| set.contains(ScopeIndex(i)))
            .map(|&i| self.definitions[i].name.clone())
            .collect()
    }
}

/// The shipped Carboncopy profile, whose catalog is the built-in one.
const CARBONCOPY_PROFILE: &str = include_str!("../profiles/carboncopy.toml");

/// The catalog's tables of a profile; serde skips the other tables.
#[derive(Deserialize)]
struct CatalogTables {
    #[serde(default)]
    scopes: Vec<RawScope>,
    #[serde(default)]
    presets: Vec<RawPreset>,
}

fn carboncopy_catalog_tables() -> CatalogTables {
    toml::from_str(CARBONCOPY_PROFILE).expect("profiles/carboncopy.toml is valid TOML")
}

/// `[[scopes]]` entry `i`, with its texts checked (the catalog checks the
/// rest).
fn scope_definition(i: usize, scope: RawScope) -> Result<ScopeDefinition, SettingError> {
    let at = |field: &str| format!("scopes[{i}].{field}");
    check_description(&scope.description).map_err(SettingError::at(&at("description")))?;
    let denial = match (scope.denial_code, scope.denial_message) {
        (None, None) => None,
        (Some(code), Some(message)) => {
            check_denial_code(&code).map_err(SettingError::at(&at("denial_code")))?;
            check_denial_message(&message).map_err(SettingError::at(&at("denial_message")))?;
            Some(ScopeDenialText { code, message })
        }
        _ => {
            return Err(SettingError::new(
                format!("scopes[{i}]"),
                "denial_code and denial_message go together",
            ));
        }
    };
    Ok(ScopeDefinition {
        name: scope.name,
        description: scope.description,
        implies: scope.implies,
        auto_grant: scope.auto_grant,
        reserved: scope.reserved,
        denial,
    })
}

fn check_description(text: &str) -> Result<(), String> {
    let chars = text.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(format!(
            "at most {MAX_DESCRIPTION_CHARS} characters, got {chars}"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("must be one line of text without control characters".into());
    }
    Ok(())
}

fn catalog_error(path: String, reason: String) -> CatalogError {
    CatalogError { path, reason }
}

/// Each scope's index by name, checking names, duplicates and denial texts.
fn index_names(
    definitions: &[ScopeDefinition],
) -> Result<HashMap<String, ScopeIndex>, CatalogError> {
    let error = catalog_error;
    let mut by_name = HashMap::new();
    for (i, definition) in definitions.iter().enumerate() {
        if !valid_scope_name(&definition.name) {
            return Err(error(
                format!("scopes[{i}].name"),
                format!(
                    "{:?} is not a scope name: use 1 to {MAX_SCOPE_NAME_LEN} of a-z 0-9 : _ - . starting with a letter or digit",
                    definition.name
                ),
            ));
        }
        if by_name
            .insert(definition.name.clone(), ScopeIndex(i))
            .is_some()
        {
            return Err(error(
                format!("scopes[{i}].name"),
                format!("scope {:?} is defined twice", definition.name),
            ));
        }
        if let Some(denial) = &definition.denial
            && (denial.code.is_empty() || denial.message.is_empty())
        {
            return Err(error(
                format!("scopes[{i}]"),
                "denial_code and denial_message must both be set and non-empty".into(),
            ));
        }
    }
    Ok(by_name)
}

/// For each scope, every scope it grants: itself and what it implies,
/// transitively.
fn implication_closure(
    definitions: &[ScopeDefinition],
    by_name: &HashMap<String, ScopeIndex>,
) -> Result<Vec<ScopeSet>, CatalogError> {
    let error = catalog_error;
    let mut direct = vec![ScopeSet::EMPTY; definitions.len()];
    for (i, definition) in definitions.iter().enumerate() {
        direct[i] = ScopeSet::single(i);
        for implied in &definition.implies {
            let Some(&target) = by_name.get(implied) else {
                return Err(error(
                    format!("scopes[{i}].implies"),
                    format!(
                        "{:?} implies {implied:?}, which is not in the catalog",
                        definition.name
                    ),
                ));
            };
            direct[i].insert(target);
        }
    }
    // Transitive closure; at most MAX_SCOPES rounds, usually two.
    let mut closure = direct.clone();
    loop {
        let mut changed = false;
        for i in 0..closure.len() {
            let mut grown = closure[i];
            for j in closure[i].indices() {
                grown = grown.union(closure[j]);
            }
            if grown != closure[i] {
                closure[i] = grown;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Ok(closure)
}

/// The presets, each entry a scope name or a `prefix*` pattern.
fn build_presets(
    definitions: &[ScopeDefinition],
    by_name: &HashMap<String, ScopeIndex>,
    preset_definitions: Vec<PresetDefinition>,
) -> Result<Vec<Preset>, CatalogError> {
    let error = catalog_error;
    let mut presets: Vec<Preset> = Vec::new();
    for (p, preset) in preset_definitions.into_iter().enumerate() {
        if preset.name.trim().is_empty() {
            return Err(error(
                format!("presets[{p}].name"),
                "must not be empty".into(),
            ));
        }
        if presets.iter().any(|known| known.name == preset.name) {
            return Err(error(
                format!("presets[{p}].name"),
                format!("preset {:?} is defined twice", preset.name),
            ));
        }
        let mut scopes = ScopeSet::EMPTY;
        for pattern in &preset.scopes {
            let matched = match pattern.strip_suffix('*') {
                Some(stem) => definitions
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.name.starts_with(stem))
                    .fold(ScopeSet::EMPTY, |set, (i, _)| {
                        set.union(ScopeSet::single(i))
                    }),
                None => by_name
                    .get(pattern)
                    .map_or(ScopeSet::EMPTY, |&i| ScopeSet::single(i.0)),
            };
            if matched.is_empty() {
                return Err(error(
                    format!("presets[{p}].scopes"),
                    format!("{pattern:?} matches no scope in the catalog"),
                ));
            }
            scopes = scopes.union(matched);
        }
        presets.push(Preset {
            name: preset.name,
            description: preset.description,
            scopes,
        });
    }
    Ok(presets)
}

#[cfg(test)]
mod tests;
