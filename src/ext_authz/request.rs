//! Reading what Envoy sends about the HTTP request: its headers (the
//! lower-case `headers` map, or `header_map` when Envoy is configured with
//! `encode_raw_headers`), where the key is, and the client's address (the
//! peer address, or an `x-forwarded-for` entry chosen by the number of
//! trusted proxy hops, counted as Envoy's `xff_num_trusted_hops`).
//!
//! Nothing here logs or keeps the credential; it is only borrowed for the
//! hot path.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use super::check_request::{CheckRequest, HttpRequest};
use super::response::{CredentialRemoval, METADATA_HEADER_PREFIX};
use super::route_policy::{MalformedRequest, RequestTarget};
use crate::key_format::{CredentialProblem, KeyFormat};

/// Where keys are read from, in this order; the first source present wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySources {
    /// `authorization: <scheme> <key>` with the schemes of `keys.schemes`.
    pub authorization_header: bool,
    /// A header holding the bare key, e.g. `x-api-key` (lower case).
    pub header: Option<String>,
    /// A query parameter holding the bare key, e.g. `api_key`.
    pub query_parameter: Option<String>,
}

impl Default for KeySources {
    fn default() -> Self {
        Self {
            authorization_header: true,
            header: None,
            query_parameter: None,
        }
    }
}

const AUTHORIZATION: &str = "authorization";
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The request's headers, whichever way Envoy encoded them, borrowed from
/// the request's bytes.
#[derive(Clone, Copy)]
pub struct RequestHeaders<'a> {
    http: HttpRequest<'a>,
}

impl<'a> RequestHeaders<'a> {
    pub fn of(http: HttpRequest<'a>) -> Self {
        Self { http }
    }

    /// Every header, name and value as bytes (raw headers one by one, not
    /// decoded: the stray-key scan runs on every allowed Check and only
    /// compares bytes).
    pub fn each(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a> {
        let raw = self.http.raw_headers().map(|header| {
            let value = if header.raw_value.is_empty() {
                header.value
            } else {
                header.raw_value
            };
            (header.key, value)
        });
        self.http.header_map().chain(raw)
    }

    /// A header by lower-case name. Raw headers that repeat are joined with
    /// `,` as Envoy does for the map, so both encodings read the same.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        if let Some(value) = self.http.map_header(name) {
            return Some(Cow::Borrowed(value));
        }
        let mut values = self
            .http
            .raw_headers()
            .filter(|header| header.key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|header| {
                if header.raw_value.is_empty() {
                    // UTF-8, checked when decoding: borrowed, never lossy.
                    String::from_utf8_lossy(header.value)
                } else {
                    String::from_utf8_lossy(header.raw_value)
                }
            });
        let first = values.next()?;
        Some(values.fold(first, |mut joined, next| {
            let owned = joined.to_mut();
            owned.push(',');
            owned.push_str(&next);
            joined
        }))
    }
}

/// The key a request presents, and where it was found.
pub enum FoundKey<'a> {
    /// The `authorization` header's value (scheme and key).
    Authorization(Cow<'a, str>),
    /// A bare key from the configured header or query parameter.
    Bare(Cow<'a, str>),
    None,
}

impl KeySources {
    /// The first configured source the request carries.
    pub fn find<'a>(
        &self,
        headers: &RequestHeaders<'a>,
        target: &RequestTarget<'a>,
    ) -> Result<FoundKey<'a>, MalformedRequest> {
        if self.authorization_header
            && let Some(value) = headers.get(AUTHORIZATION)
        {
            return Ok(FoundKey::Authorization(value));
        }
        if let Some(name) = &self.header
            && let Some(value) = headers.get(name)
        {
            return Ok(FoundKey::Bare(value));
        }
        if let Some(name) = &self.query_parameter
            && let Some(value) = target.query_parameter(name)?
        {
            return Ok(FoundKey::Bare(value));
        }
        Ok(FoundKey::None)
    }

    /// Every configured source the request carries (after an allow, none of
    /// them goes upstream, not only the one that was used), and any other
    /// header or query parameter carrying a key ([`stray_keys`]).
    pub fn present(
        &self,
        headers: &RequestHeaders<'_>,
        target: &RequestTarget<'_>,
        key_format: &KeyFormat,
    ) -> CredentialRemoval {
        let mut removal = self.select(headers, target, |_| true);
        stray_keys(headers, target, key_format.prefix(), &mut removal);
        removal
    }

    /// The sources that carry something in this product's key namespace
    /// (a public route does not read keys, but must not pass one upstream;
    /// a foreign credential such as a JWT for the upstream itself stays),
    /// and any other header or query parameter carrying a key.
    pub fn carrying_keys(
        &self,
        headers: &RequestHeaders<'_>,
        target: &RequestTarget<'_>,
        key_format: &KeyFormat,
    ) -> CredentialRemoval {
        let mut removal = self.select(headers, target, |source| match source {
            Source::Authorization(value) => {
                key_format.extract(value) != Err(CredentialProblem::Missing)
            }
            Source::Bare(value) => {
                key_format.check_key(value.trim()) != Err(CredentialProblem::Missing)
            }
        });
        stray_keys(headers, target, key_format.prefix(), &mut removal);
        removal
    }

    fn select(
        &self,
        headers: &RequestHeaders<'_>,
        target: &RequestTarget<'_>,
        keep: impl Fn(Source<'_>) -> bool,
    ) -> CredentialRemoval {
        let mut removal = CredentialRemoval::default();
        if self.authorization_header
            && let Some(value) = headers.get(AUTHORIZATION)
            && keep(Source::Authorization(&value))
        {
            removal.headers.push(AUTHORIZATION.to_owned());
        }
        if let Some(name) = &self.header
            && let Some(value) = headers.get(name)
            && keep(Source::Bare(&value))
        {
            removal.headers.push(name.clone());
        }
        // Only when present: asking Envoy to remove a query parameter makes
        // it rebuild the query string, which should not happen needlessly.
        if let Some(name) = &self.query_parameter {
            for spelling in target.query_parameter_spellings(name) {
                // A value that cannot be decoded cannot be a key; it goes anyway.
                let carries_key = match target.query_parameter(name) {
                    Ok(Some(value)) => keep(Source::Bare(&value)),
                    _ => true,
                };
                if carries_key && !removal.query_parameters.iter().any(|p| p == spelling) {
                    removal.query_parameters.push(spelling.to_owned());
                }
            }
        }
        removal
    }
}

/// Adds to `removal` every header and query parameter, whatever its name,
/// whose value carries this deployment's key `prefix` where a credential
/// would be: at the start (`cc_...`), or after one word (`Token cc_...`,
/// `Basic cc_...`). Only the configured sources are read as keys, but a key
/// a client sent some other way (`authorization: Token cc_...`,
/// `?API_KEY=...`, `x-key: ...`) must not reach the upstream's logs either.
/// A value that merely starts with the prefix by chance (a short prefix
/// like `cc_`) is removed too: the safer mistake.
pub fn stray_keys(
    headers: &RequestHeaders<'_>,
    target: &RequestTarget<'_>,
    prefix: &str,
    removal: &mut CredentialRemoval,
) {
    let prefix_bytes = prefix.as_bytes();
    for (name, value) in headers.each() {
        if carries_prefix(value, prefix_bytes)
            && !removal
                .headers
                .iter()
                .any(|listed| listed.as_bytes().eq_ignore_ascii_case(name))
        {
            removal.headers.push(lower_case_name(name));
        }
    }
    for (name, raw_value) in target.query_parameters() {
        let carries = carries_prefix(raw_value.as_bytes(), prefix_bytes)
            // Escapes (`cc%5F...`, `Bearer%20cc_...`) are read only when
            // there are some.
            || ((raw_value.contains('%') || raw_value.contains('+'))
                && RequestTarget::decode_query_value(raw_value)
                    .is_some_and(|value| carries_prefix(value.as_bytes(), prefix_bytes)));
        if carries && !removal.query_parameters.iter().any(|listed| listed == name) {
            removal.query_parameters.push(name.to_owned());
        }
    }
}

/// Adds to `removal` every `x-keyward-meta-*` header the client sent, so
/// that the upstream can trust those it sees come from keyward. Compares
/// bytes only; allocates only for a header it removes.
pub fn spoofed_metadata_headers(headers: &RequestHeaders<'_>, removal: &mut CredentialRemoval) {
    let prefix = METADATA_HEADER_PREFIX.as_bytes();
    for (name, _) in headers.each() {
        if name.len() >= prefix.len()
            && name[..prefix.len()].eq_ignore_ascii_case(prefix)
            && !removal
                .headers
                .iter()
                .any(|listed| listed.as_bytes().eq_ignore_ascii_case(name))
        {
            removal.headers.push(lower_case_name(name));
        }
    }
}

/// A header name (UTF-8, checked when decoding) as Envoy is told to remove
/// it.
fn lower_case_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

/// Whether the value's first word, or its second after a scheme-like first
/// word, starts with `prefix`.
fn carries_prefix(value: &[u8], prefix: &[u8]) -> bool {
    // Reads at most the first word and the whitespace after it: this runs
    // for every header of every allowed Check.
    let skip_space = |from: usize| {
        value[from..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|offset| from + offset)
    };
    let Some(first) = skip_space(0) else {
        return false;
    };
    if value[first..].starts_with(prefix) {
        return true;
    }
    let Some(end) = value[first..]
        .iter()
        .position(u8::is_ascii_whitespace)
        .map(|offset| first + offset)
    else {
        return false;
    };
    skip_space(end).is_some_and(|second| value[second..].starts_with(prefix))
}

/// Whether an authorization header value starts with one of `schemes`
/// (case-insensitive) followed by whitespace, as in `Bearer cc_...`.
pub fn has_scheme(value: &str, schemes: &[String]) -> bool {
    value
        .trim_start()
        .split_once(|c: char| c.is_ascii_whitespace())
        .is_some_and(|(scheme, _)| schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)))
}

enum Source<'v> {
    Authorization(&'v str),
    Bare(&'v str),
}

/// The client's address, the way Envoy finds its trusted client address
/// for `xff_num_trusted_hops = N` (so both settings take the same number):
///
/// - `N = 0`: Envoy's peer (`attributes.source.address`, the connection's
///   direct peer; Envoy never puts an `x-forwarded-for` address there).
/// - `N > 0`: the (N+1)-th `x-forwarded-for` entry from the right. With
///   `use_remote_address: true` Envoy has already appended its peer (the
///   nearest of the N trusted proxies) before ext_authz sees the header;
///   each trusted proxy appended the address it received the request from;
///   entries further left were written by the client and prove nothing.
///
/// When the header has fewer entries, or that entry is not an address,
/// there is no client address (where Envoy would fall back to the peer):
/// the peer is then one of our own proxies, and counting failures against
/// it would let one client ban every client behind it.
pub fn client_address(
    check: &CheckRequest,
    headers: &RequestHeaders<'_>,
    trusted_proxy_hops: u32,
) -> Option<IpAddr> {
    if trusted_proxy_hops > 0 {
        let forwarded = headers.get(X_FORWARDED_FOR)?;
        let entry = forwarded.rsplit(',').nth(trusted_proxy_hops as usize)?;
        return parse_address(entry);
    }
    parse_address(check.peer_address()?)
}

/// `203.0.113.7`, `2001:db8::1`, or either with a port (`[2001:db8::1]:443`).
fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests;
