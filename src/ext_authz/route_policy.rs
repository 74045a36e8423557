//! The route policy of the ext_authz surface: which HTTP requests need which
//! scopes. Routes come from `[[http.routes]]`, are compiled once at config
//! load (methods to a bit set, paths to segment patterns, scopes to catalog
//! indices or templates), and are matched in order: the first match wins.
//!
//! Path syntax: `/v1/health` (exact), `/api/v1/portfolio...` (that path and
//! everything below it; `/...` is every path), and `{name}` segments that
//! match one non-empty segment (`/api/v1/traders/{trader_id}`). Scope
//! templates fill `{path.name}` from such a segment and `{query.name}` from
//! a query parameter (`read:{query.resource}`).
//!
//! Request paths are read strictly (see [`RequestTarget::parse`]): anything
//! an upstream might read differently from keyward (encoded slashes, dot
//! segments, doubled slashes, bad escapes) is refused rather than guessed at.

use std::borrow::Cow;

use crate::scope_catalog::{ScopeCatalog, ScopeIndex};

/// Longest request target (path and query) keyward reads; longer is refused.
pub const MAX_REQUEST_TARGET_BYTES: usize = 8 * 1024;
const MAX_ROUTE_PATH_BYTES: usize = 1024;
const MAX_PARAM_NAME_BYTES: usize = 32;
const MAX_QUERY_NAME_BYTES: usize = 64;
const MAX_SCOPES_PER_ROUTE: usize = 16;

/// The suffix that makes a route path a prefix.
const PREFIX_MARKER: &str = "...";

/// The HTTP methods a route may name. Anything else in a config is a typo.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// One `[[http.routes]]` entry as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDefinition {
    pub methods: Vec<String>,
    pub path: String,
    /// `None` when the entry has no `scopes` key.
    pub scopes: Option<Vec<String>>,
    pub public: bool,
}

/// Why a route could not be compiled; `field` is the offending key of the
/// route entry (`methods`, `path`, `scopes`, or empty for the entry itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct RouteError {
    pub field: &'static str,
    pub reason: String,
}

fn route_error(field: &'static str, reason: impl Into<String>) -> RouteError {
    RouteError {
        field,
        reason: reason.into(),
    }
}

/// The compiled routes, in configured order.
#[derive(Debug, Default)]
pub struct RoutePolicy {
    routes: Vec<Route>,
}

#[derive(Debug)]
struct Route {
    methods: MethodSet,
    pattern: PathPattern,
    access: Access,
}

/// What a matched request needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// No key needed.
    Public,
    /// A valid key holding every scope; an empty list means any valid key.
    Scopes {
        fixed: Vec<ScopeIndex>,
        templates: Vec<ScopeTemplate>,
    },
}

impl Access {
    /// Any valid key, no particular scope.
    pub const ANY_KEY: Access = Access::Scopes {
        fixed: Vec::new(),
        templates: Vec::new(),
    };
}

/// A bit per entry of [`METHODS`]; all bits for `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MethodSet(u16);

impl MethodSet {
    const ANY: MethodSet = MethodSet(u16::MAX);

    /// The bit of a request's method; `None` for a method no route can
    /// name (only `*` routes match it).
    fn bit_of(method: &str) -> Option<u16> {
        METHODS
            .iter()
            .position(|known| *known == method)
            .map(|bit| 1 << bit)
    }

    fn contains(self, method_bit: Option<u16>) -> bool {
        self == Self::ANY || method_bit.is_some_and(|bit| self.0 & bit != 0)
    }
}

#[derive(Debug)]
struct PathPattern {
    segments: Vec<PatternSegment>,
    /// Also matches every path below.
    prefix: bool,
    /// Names of the `{param}` segments, in order.
    param_names: Vec<Box<str>>,
}

#[derive(Debug)]
enum PatternSegment {
    Literal(Box<str>),
    Param,
}

/// A required scope with placeholders, e.g. `read:{query.resource}`.
#[derive(Debug, PartialEq, Eq)]
pub struct ScopeTemplate {
    text: Box<str>,
    parts: Vec<TemplatePart>,
}

#[derive(Debug, PartialEq, Eq)]
enum TemplatePart {
    Literal(Box<str>),
    /// Index into the route's path parameters.
    PathParam(usize),
    /// A query parameter name, matched as written (not decoded), the way
    /// Envoy matches the names it removes.
    QueryParam(Box<str>),
}

impl ScopeTemplate {
    /// The template as configured.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// What a template became for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum ResolvedScope {
    Known(ScopeIndex),
    /// Filled in, but not a catalog scope: the text to show as
    /// `required_scope` (the filled-in name when it is a well-formed scope
    /// name, else the template itself, so client input is never echoed raw).
    Unknown(String),
}

/// A request the policy cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedRequest {
    #[error("the path is empty or does not start with `/`")]
    NotAbsolute,
    #[error("the request target is longer than {MAX_REQUEST_TARGET_BYTES} bytes")]
    TooLong,
    #[error("the path has a bad percent-escape or is not UTF-8")]
    BadEscape,
    #[error("the path has an encoded `/` or `\\`, a backslash, or a control character")]
    AmbiguousCharacter,
    #[error("the path has an empty, `.` or `..` segment")]
    AmbiguousSegment,
    #[error("a query parameter keyward reads appears more than once")]
    RepeatedQueryParameter,
    /// The CheckRequest's bytes do not decode (invalid UTF-8 in a header
    /// value or the path, or no protobuf at all).
    #[error("the CheckRequest does not decode")]
    Undecodable,
    #[error("a query parameter keyward reads has a percent-encoded name")]
    EncodedQueryParameterName,
    #[error("a query parameter keyward reads has a bad percent-escape")]
    BadQueryEscape,
    #[error("the check request carries no HTTP attributes")]
    NoHttpAttributes,
    #[error("the min-revision header is not a whole number")]
    BadMinRevision,
}

/// A request target split and decoded: the decoded path and the raw query.
/// `Debug` shows only the query's length, since it may carry the key.
pub struct RequestTarget<'a> {
    path: Cow<'a, str>,
    query: &'a str,
}

impl std::fmt::Debug for RequestTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTarget")
            .field("path", &self.path)
            .field("query_bytes", &self.query.len())
            .finish()
    }
}

impl<'a> RequestTarget<'a> {
    /// Reads `path?query` as Envoy sends it (the request line's target, not
    /// decoded). Percent-escapes in the path are decoded for matching; the
    /// path is refused when an upstream could read it as a different path:
    /// an encoded `/` or `\`, a raw `\`, control characters, `.` or `..`
    /// segments (also encoded, and with `;` path parameters such as `..;`),
    /// or empty segments other than one trailing
    /// slash. A fragment is not part of a request target and is refused too.
    pub fn parse(target: &'a str) -> Result<Self, MalformedRequest> {
        if target.len() > MAX_REQUEST_TARGET_BYTES {
            return Err(MalformedRequest::TooLong);
        }
        let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
        if !raw_path.starts_with('/') {
            return Err(MalformedRequest::NotAbsolute);
        }
        if target.contains('#') {
            return Err(MalformedRequest::AmbiguousCharacter);
        }
        let path = percent_decode(raw_path, false).ok_or(MalformedRequest::BadEscape)?;
        if path.contains('\\') || path.chars().any(char::is_control) {
            return Err(MalformedRequest::AmbiguousCharacter);
        }
        // A decoded `/` that was not a raw `/` is an encoded slash.
        if path.matches('/').count() != raw_path.matches('/').count() {
            return Err(MalformedRequest::AmbiguousCharacter);
        }
        if path != "/" {
            let body = path.strip_suffix('/').unwrap_or(&path);
            // `..;x` counts as `..`: servlet containers cut path parameters
            // at `;` before resolving dot segments.
            if body[1..].split('/').any(|segment| {
                let before_parameters = segment.split(';').next().unwrap_or(segment);
                segment.is_empty() || before_parameters == "." || before_parameters == ".."
            }) {
                return Err(MalformedRequest::AmbiguousSegment);
            }
        }
        Ok(Self { path, query })
    }

    /// The decoded path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string, without the `?`.
    pub fn query(&self) -> &'a str {
        self.query
    }

    /// The decoded value of the query parameter named `name`, in any case
    /// (`api_key`, `API_KEY`: upstreams differ in whether names are case
    /// sensitive, so keyward reads and strips every spelling); `Ok(None)`
    /// when absent, an error when it appears twice (keyward and the
    /// upstream might read different ones) or cannot be decoded. A name that
    /// only decodes to `name` (`resourc%65`) is refused too: upstreams
    /// decode names, so it would be a second copy keyward did not read, and
    /// Envoy (which matches names as written) would not remove it.
    pub fn query_parameter(&self, name: &str) -> Result<Option<Cow<'a, str>>, MalformedRequest> {
        let mut found = None;
        for pair in self.query.split('&') {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            if !raw_name.eq_ignore_ascii_case(name) {
                if percent_decode(raw_name, true)
                    .is_some_and(|decoded| decoded.eq_ignore_ascii_case(name))
                {
                    return Err(MalformedRequest::EncodedQueryParameterName);
                }
                continue;
            }
            if found.is_some() {
                return Err(MalformedRequest::RepeatedQueryParameter);
            }
            found = Some(raw_value);
        }
        found
            .map(|raw| percent_decode(raw, true).ok_or(MalformedRequest::BadQueryEscape))
            .transpose()
    }

    /// The names of the query's parameters named `name` in any case, as
    /// the request spells them (Envoy removes parameters by exact name).
    pub fn query_parameter_spellings(&self, name: &str) -> impl Iterator<Item = &'a str> {
        self.query_parameters()
            .map(|(raw_name, _)| raw_name)
            .filter(move |raw_name| raw_name.eq_ignore_ascii_case(name))
    }

    /// Every `name=value` pair of the query as written (not decoded).
    pub fn query_parameters(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let query = self.query;
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
    }

    /// A raw query value, decoded (`None` when it cannot be).
    pub fn decode_query_value(raw: &str) -> Option<Cow<'_, str>> {
        percent_decode(raw, true)
    }

    fn segments(&self) -> impl Iterator<Item = &str> {
        let path: &str = &self.path;
        let body = if path == "/" { "" } else { &path[1..] };
        body.split('/').filter(move |_| !body.is_empty())
    }
}

/// Decodes `%XX` escapes (and `+` as a space in query values). `None` on a
/// bad escape or a result that is not UTF-8. Borrows when there is nothing
/// to decode.
fn percent_decode(raw: &str, plus_as_space: bool) -> Option<Cow<'_, str>> {
    let needs_decoding = raw.contains('%') || (plus_as_space && raw.contains('+'));
    if !needs_decoding {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let high = hex_value(*bytes.get(i + 1)?)?;
                let low = hex_value(*bytes.get(i + 2)?)?;
                decoded.push(high << 4 | low);
                i += 3;
            }
            b'+' if plus_as_space => {
                decoded.push(b' ');
                i += 1;
            }
            byte => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok().map(Cow::Owned)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// A route that matched, with its path parameters.
#[derive(Debug)]
pub struct RouteMatch<'p, 'r> {
    /// Position of the route in the configuration.
    pub index: usize,
    pub access: &'p Access,
    path_params: Vec<&'r str>,
}

impl RoutePolicy {
    /// Compiles routes against the scope catalog. Errors carry the route's
    /// position so the config can name `http.routes[i].field`.
    pub fn compile(
        definitions: Vec<RouteDefinition>,
        catalog: &ScopeCatalog,
    ) -> Result<Self, (usize, RouteError)> {
        let routes = definitions
            .into_iter()
            .enumerate()
            .map(|(i, definition)| Route::compile(definition, catalog).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { routes })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// The first route that matches the method and path.
    pub fn find<'p, 'r>(
        &'p self,
        method: &str,
        target: &'r RequestTarget<'_>,
    ) -> Option<RouteMatch<'p, 'r>> {
        let method_bit = MethodSet::bit_of(method);
        self.routes.iter().enumerate().find_map(|(index, route)| {
            if !route.methods.contains(method_bit) {
                return None;
            }
            let path_params = route.pattern.matches(target)?;
            Some(RouteMatch {
                index,
                access: &route.access,
                path_params,
            })
        })
    }
}

impl RouteMatch<'_, '_> {
    /// Fills in a template from this match's path parameters and the query.
    pub fn resolve(
        &self,
        template: &ScopeTemplate,
        target: &RequestTarget<'_>,
        catalog: &ScopeCatalog,
    ) -> Result<ResolvedScope, MalformedRequest> {
        let unknown_template = || ResolvedScope::Unknown(template.text.to_string());
        let mut name = String::with_capacity(template.text.len() + 16);
        for part in &template.parts {
            match part {
                TemplatePart::Literal(text) => name.push_str(text),
                TemplatePart::PathParam(index) => name.push_str(self.path_params[*index]),
                TemplatePart::QueryParam(query_name) => {
                    match target.query_parameter(query_name)? {
                        Some(value) if !value.is_empty() => name.push_str(&value),
                        // Absent or empty: there is nothing to name.
                        _ => return Ok(unknown_template()),
                    }
                }
            }
        }
        Ok(match catalog.lookup(&name) {
            Some(index) => ResolvedScope::Known(index),
            None if crate::scope_catalog::valid_scope_name(&name) => ResolvedScope::Unknown(name),
            None => unknown_template(),
        })
    }
}

impl Route {
    fn compile(definition: RouteDefinition, catalog: &ScopeCatalog) -> Result<Self, RouteError> {
        let methods = compile_methods(&definition.methods)?;
        let pattern = PathPattern::compile(&definition.path)?;
        let access = match (definition.public, definition.scopes) {
            (true, None) => Access::Public,
            (true, Some(_)) => {
                return Err(route_error(
                    "scopes",
                    "a public route needs no key, so it cannot require scopes; remove one of `public` and `scopes`",
                ));
            }
            (false, None) => {
                return Err(route_error(
                    "",
                    "set `scopes` (the scopes the route requires; [] for any valid key) or `public = true`",
                ));
            }
            (false, Some(scopes)) => compile_scopes(&scopes, &pattern, catalog)?,
        };
        Ok(Self {
            methods,
            pattern,
            access,
        })
    }
}

fn compile_methods(methods: &[String]) -> Result<MethodSet, RouteError> {
    if methods.is_empty() {
        return Err(route_error(
            "methods",
            "name at least one method, or [\"*\"] for any",
        ));
    }
    if methods.iter().any(|m| m == "*") {
        if methods.len() > 1 {
            return Err(route_error(
                "methods",
                "\"*\" already means every method; list it alone",
            ));
        }
        return Ok(MethodSet::ANY);
    }
    let mut set = 0u16;
    for method in methods {
        let Some(bit) = METHODS.iter().position(|known| known == method) else {
            return Err(route_error(
                "methods",
                format!(
                    "{method:?} is not one of {} (upper case), or \"*\"",
                    METHODS.join(", ")
                ),
            ));
        };
        set |= 1 << bit;
    }
    Ok(MethodSet(set))
}

impl PathPattern {
    fn compile(path: &str) -> Result<Self, RouteError> {
        let fail = |reason: String| route_error("path", reason);
        if path.len() > MAX_ROUTE_PATH_BYTES {
            return Err(fail(format!(
                "must be at most {MAX_ROUTE_PATH_BYTES} bytes"
            )));
        }
        let (body, prefix) = match path.strip_suffix(PREFIX_MARKER) {
            Some(body) => (body, true),
            None => (path, false),
        };
        if !body.starts_with('/') {
            return Err(fail(format!(
                "{path:?} must start with `/`, like `/v1/health` or `/api/v1/portfolio...`"
            )));
        }
        if prefix && body.len() > 1 && body.ends_with('/') {
            return Err(fail(format!(
                "{path:?}: write the prefix without the last slash, like `/api/v1/portfolio...`; it covers that path and everything below it"
            )));
        }
        let mut segments = Vec::new();
        let mut param_names: Vec<Box<str>> = Vec::new();
        if body != "/" {
            for segment in body[1..].split('/') {
                if segment.is_empty() {
                    return Err(fail(format!(
                        "{path:?} has an empty segment (`//` or a trailing `/`)"
                    )));
                }
                if let Some(name) = segment
                    .strip_prefix('{')
                    .and_then(|rest| rest.strip_suffix('}'))
                {
                    if !is_param_name(name) {
                        return Err(fail(format!(
                            "{{{name}}} in {path:?}: parameter names are 1 to {MAX_PARAM_NAME_BYTES} of a-z 0-9 _, starting with a letter or _"
                        )));
                    }
                    if param_names.iter().any(|known| &**known == name) {
                        return Err(fail(format!("{{{name}}} appears twice in {path:?}")));
                    }
                    param_names.push(name.into());
                    segments.push(PatternSegment::Param);
                    continue;
                }
                if segment == "." || segment == ".." || segment.contains(PREFIX_MARKER) {
                    return Err(fail(format!(
                        "{path:?} has a {segment:?} segment; `...` may only end a path, right after a name"
                    )));
                }
                if let Some(bad) = segment.chars().find(|&c| !is_literal_path_char(c)) {
                    return Err(fail(format!(
                        "{path:?} has {bad:?}; literal segments use letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : @ (write the path decoded, without %-escapes), and a parameter is a whole segment like `{{id}}`"
                    )));
                }
                segments.push(PatternSegment::Literal(segment.into()));
            }
        }
        Ok(Self {
            segments,
            prefix,
            param_names,
        })
    }

    /// The path parameters when the request matches.
    fn matches<'r>(&self, target: &'r RequestTarget<'_>) -> Option<Vec<&'r str>> {
        let mut request_segments = target.segments();
        let mut params = Vec::new();
        for pattern_segment in &self.segments {
            let segment = request_segments.next()?;
            match pattern_segment {
                PatternSegment::Literal(literal) if **literal == *segment => {}
                PatternSegment::Literal(_) => return None,
                PatternSegment::Param if segment.is_empty() => return None,
                PatternSegment::Param => params.push(segment),
            }
        }
        if !self.prefix && request_segments.next().is_some() {
            return None;
        }
        Some(params)
    }
}

fn is_param_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PARAM_NAME_BYTES
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// RFC 3986 `pchar` without `%` (route paths are written decoded).
fn is_literal_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.'
                | '_'
                | '~'
                | '!'
                | '$'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | '+'
                | ','
                | ';'
                | '='
                | ':'
                | '@'
        )
}

fn is_query_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_QUERY_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn compile_scopes(
    scopes: &[String],
    pattern: &PathPattern,
    catalog: &ScopeCatalog,
) -> Result<Access, RouteError> {
    let fail = |reason: String| route_error("scopes", reason);
    if scopes.len() > MAX_SCOPES_PER_ROUTE {
        return Err(fail(format!(
            "at most {MAX_SCOPES_PER_ROUTE} scopes per route, got {}",
            scopes.len()
        )));
    }
    let mut fixed = Vec::new();
    let mut templates = Vec::new();
    for scope in scopes {
        if !scope.contains(['{', '}']) {
            let index = catalog.require(scope).map_err(|e| fail(e.to_string()))?;
            if !fixed.contains(&index) {
                fixed.push(index);
            }
            continue;
        }
        let template = compile_template(scope, pattern).map_err(fail)?;
        let catalog_names: Vec<&str> = catalog.definitions().iter().map(|d| &*d.name).collect();
        if !catalog_names
            .iter()
            .any(|name| template_could_match(&template.parts, name))
        {
            return Err(fail(format!(
                "template {scope:?} cannot produce any scope in the catalog ({})",
                catalog_names.join(", ")
            )));
        }
        templates.push(template);
    }
    Ok(Access::Scopes { fixed, templates })
}

fn compile_template(text: &str, pattern: &PathPattern) -> Result<ScopeTemplate, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(open) = rest.find('{') else {
            if rest.contains('}') {
                return Err(format!("template {text:?} has a `}}` without a `{{`"));
            }
            parts.push(TemplatePart::Literal(rest.into()));
            break;
        };
        let literal = &rest[..open];
        if literal.contains('}') {
            return Err(format!("template {text:?} has a `}}` without a `{{`"));
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal.into()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("template {text:?} has a `{{` without a `}}`"));
        };
        let placeholder = &rest[open + 1..open + close];
        let part = if let Some(name) = placeholder.strip_prefix("path.") {
            let index = pattern
                .param_names
                .iter()
                .position(|known| &**known == name)
                .ok_or_else(|| {
                    format!(
                        "template {text:?} uses {{path.{name}}}, but the route path has no {{{name}}} segment"
                    )
                })?;
            TemplatePart::PathParam(index)
        } else if let Some(name) = placeholder.strip_prefix("query.") {
            if !is_query_name(name) {
                return Err(format!(
                    "template {text:?}: query parameter names are 1 to {MAX_QUERY_NAME_BYTES} of A-Z a-z 0-9 _ - ."
                ));
            }
            TemplatePart::QueryParam(name.into())
        } else {
            return Err(format!(
                "template {text:?} has {{{placeholder}}}; placeholders are {{path.NAME}} or {{query.NAME}}"
            ));
        };
        if matches!(
            parts.last(),
            Some(TemplatePart::PathParam(_) | TemplatePart::QueryParam(_))
        ) {
            return Err(format!(
                "template {text:?} has two placeholders side by side; separate them with literal text"
            ));
        }
        parts.push(part);
        rest = &rest[open + close + 1..];
    }
    Ok(ScopeTemplate {
        text: text.into(),
        parts,
    })
}

/// Whether some filling of the placeholders (each one or more characters)
/// turns the template into `name`.
fn template_could_match(parts: &[TemplatePart], name: &str) -> bool {
    match parts.split_first() {
        None => name.is_empty(),
        Some((TemplatePart::Literal(literal), rest)) => name
            .strip_prefix(&**literal)
            .is_some_and(|remaining| template_could_match(rest, remaining)),
        Some((_, rest)) => (1..=name.len())
            .filter(|&end| name.is_char_boundary(end))
            .any(|end| template_could_match(rest, &name[end..])),
    }
}

#[cfg(test)]
mod tests;
