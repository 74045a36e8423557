//! `CheckReply`: a `CheckResponse` as the server writes it.
//!
//! Denials and public allows are rare and stay envoy-types' prost structs.
//! An allowed answer with a key, the common one, is written straight into
//! protobuf bytes from the key's strings, the header names and the numbers,
//! in one buffer of the exact size: building the prost structs meant a
//! `HashMap` and some twenty strings per call, and prost's nested encoding
//! measures every header several times over (issue 19). Envoy reads the
//! bytes as the `CheckResponse` prost would have written, byte for byte
//! but for the order of the dynamic metadata's entries, which prost takes
//! from a `HashMap` (any order is the same message).

use std::fmt;

use envoy_types::ext_authz::v3::pb::{CheckResponse, HeaderAppendAction, HttpResponse};
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

/// The answer to one Check.
#[derive(Clone, PartialEq)]
pub enum CheckReply {
    /// Built as envoy-types' message (denials, public routes); boxed, so
    /// the common answer is not moved around at the size of this rare one.
    Response(Box<CheckResponse>),
    /// An allowed answer, already encoded (see [`AllowedAnswer`]).
    Encoded(EncodedAllowed),
}

/// The bytes of an allowed `CheckResponse`; only [`AllowedAnswer::encode`]
/// makes one.
#[derive(Clone, PartialEq)]
pub struct EncodedAllowed(Vec<u8>);

impl Default for CheckReply {
    fn default() -> Self {
        Self::Response(Box::default())
    }
}

impl From<CheckResponse> for CheckReply {
    fn from(response: CheckResponse) -> Self {
        Self::Response(Box::new(response))
    }
}

impl CheckReply {
    /// The reply as Envoy reads it (for tests and tools; the server only
    /// encodes).
    pub fn to_response(&self) -> CheckResponse {
        match self {
            Self::Response(response) => (**response).clone(),
            Self::Encoded(encoded) => CheckResponse::decode(encoded.0.as_slice())
                .expect("an encoded allowed answer is a CheckResponse"),
        }
    }

    /// Whether the request may go on upstream.
    pub fn is_allowed(&self) -> bool {
        match self {
            Self::Response(response) => {
                matches!(response.http_response, Some(HttpResponse::OkResponse(_)))
            }
            Self::Encoded(_) => true,
        }
    }
}

impl Message for CheckReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            Self::Response(response) => response.encode_raw(buf),
            Self::Encoded(encoded) => buf.put_slice(&encoded.0),
        }
    }

    /// Decoding (tools and tests only) reads into the prost message.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if let Self::Encoded(_) = self {
            *self = Self::Response(Box::new(self.to_response()));
        }
        let Self::Response(response) = self else {
            unreachable!("made a Response above");
        };
        response.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Response(response) => response.encoded_len(),
            Self::Encoded(encoded) => encoded.0.len(),
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl fmt::Debug for CheckReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_response(), f)
    }
}

/// What an allowed answer carries, borrowed while it is encoded. The
/// fields, in the order written:
///
/// ```text
/// CheckResponse
///   1 status {}                            (code OK, nothing else set)
///   3 ok_response OkHttpResponse
///       2 headers: identity (key id, account, scopes), then forwarded metadata
///       5 headers_to_remove
///       6 response_headers_to_add: x-ratelimit-*, x-quota-remaining
///       8 query_parameters_to_remove
///   4 dynamic_metadata Struct {key_id, account_id, scopes}  (when enabled)
/// ```
///
/// Every header is `HeaderValueOption { header: {key, value},
/// append_action: OVERWRITE_IF_EXISTS_OR_ADD }` (see `response::header`).
pub struct AllowedAnswer<'a, S, F> {
    /// Header names of the key id, the account and the scopes.
    pub identity: [&'a str; 3],
    pub key_id: &'a str,
    pub account_id: &'a str,
    /// The scope names (each call the same ones), joined by single spaces
    /// into one value.
    pub scopes: S,
    /// Forwarded metadata: (header name, value).
    pub forwarded: F,
    pub headers_to_remove: &'a [String],
    pub query_parameters_to_remove: &'a [String],
    /// `x-ratelimit-limit`, `-remaining`, `-reset` (seconds).
    pub rate_limit: Option<[u64; 3]>,
    pub quota_remaining: Option<u64>,
    pub dynamic_metadata: bool,
}

const RATE_LIMIT_HEADERS: [&str; 3] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];
const QUOTA_HEADER: &str = "x-quota-remaining";

/// The dynamic metadata's field names, in the order written.
const METADATA_NAMES: [&str; 3] = ["key_id", "account_id", "scopes"];

// Field numbers.
const RESPONSE_STATUS: u32 = 1;
const RESPONSE_OK: u32 = 3;
const RESPONSE_METADATA: u32 = 4;
const OK_HEADERS: u32 = 2;
const OK_HEADERS_TO_REMOVE: u32 = 5;
const OK_RESPONSE_HEADERS_TO_ADD: u32 = 6;
const OK_QUERY_PARAMETERS_TO_REMOVE: u32 = 8;
const OPTION_HEADER: u32 = 1;
const OPTION_APPEND_ACTION: u32 = 3;
const HEADER_KEY: u32 = 1;
const HEADER_VALUE: u32 = 2;
const STRUCT_FIELDS: u32 = 1;
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;
const VALUE_STRING: u32 = 3;

const OVERWRITE: u64 = HeaderAppendAction::OverwriteIfExistsOrAdd as u64;

impl<'a, S, I, F> AllowedAnswer<'a, S, F>
where
    S: Fn() -> I,
    I: Iterator<Item = &'a str>,
    F: Iterator<Item = (&'a str, &'a str)> + Clone,
{
    /// The answer's bytes: lengths are added up first, so the buffer is
    /// allocated once at its size and every length prefix is known when
    /// it is written.
    pub fn encode(self) -> CheckReply {
        let scopes_len = joined_len((self.scopes)());
        let values = [self.key_id.len(), self.account_id.len(), scopes_len];
        let numbers = self.rate_limit.map(|numbers| numbers.map(Decimal::new));
        let quota = self.quota_remaining.map(Decimal::new);

        let mut headers_len = 0;
        for (name, value) in self.identity.iter().zip(values) {
            headers_len += header_field_len(OK_HEADERS, name.len(), value);
        }
        for (name, value) in self.forwarded.clone() {
            headers_len += header_field_len(OK_HEADERS, name.len(), value.len());
        }
        let mut added_len = 0;
        if let Some(numbers) = &numbers {
            for (name, number) in RATE_LIMIT_HEADERS.iter().zip(numbers) {
                added_len += header_field_len(OK_RESPONSE_HEADERS_TO_ADD, name.len(), number.len());
            }
        }
        if let Some(quota) = &quota {
            added_len +=
                header_field_len(OK_RESPONSE_HEADERS_TO_ADD, QUOTA_HEADER.len(), quota.len());
        }
        let ok_len = headers_len
            + repeated_strings_len(OK_HEADERS_TO_REMOVE, self.headers_to_remove)
            + added_len
            + repeated_strings_len(
                OK_QUERY_PARAMETERS_TO_REMOVE,
                self.query_parameters_to_remove,
            );
        let struct_len = if self.dynamic_metadata {
            METADATA_NAMES
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let entry = entry_len(name.len(), value);
                    field_len(STRUCT_FIELDS, entry)
                })
                .sum()
        } else {
            0
        };
        let total = field_len(RESPONSE_STATUS, 0)
            + field_len(RESPONSE_OK, ok_len)
            + if self.dynamic_metadata {
                field_len(RESPONSE_METADATA, struct_len)
            } else {
                0
            };

        let mut buf = Vec::with_capacity(total);
        // The status: code OK (0, the default, so not written) and nothing
        // else, an empty message that is still present.
        put_len_prefix(&mut buf, RESPONSE_STATUS, 0);
        put_len_prefix(&mut buf, RESPONSE_OK, ok_len);
        put_header(
            &mut buf,
            OK_HEADERS,
            self.identity[0],
            self.key_id.as_bytes(),
        );
        put_header(
            &mut buf,
            OK_HEADERS,
            self.identity[1],
            self.account_id.as_bytes(),
        );
        // The scopes are joined straight into the buffer; the metadata then
        // copies them from there.
        put_header_prefix(&mut buf, OK_HEADERS, self.identity[2], scopes_len);
        let scopes_at = buf.len();
        for (i, name) in (self.scopes)().enumerate() {
            if i > 0 {
                buf.push(b' ');
            }
            buf.extend_from_slice(name.as_bytes());
        }
        let scopes = scopes_at..buf.len();
        put_append_action(&mut buf);
        for (name, value) in self.forwarded {
            put_header(&mut buf, OK_HEADERS, name, value.as_bytes());
        }
        for name in self.headers_to_remove {
            put_string(&mut buf, OK_HEADERS_TO_REMOVE, name.as_bytes());
        }
        if let Some(numbers) = &numbers {
            for (name, number) in RATE_LIMIT_HEADERS.iter().zip(numbers) {
                put_header(&mut buf, OK_RESPONSE_HEADERS_TO_ADD, name, number.bytes());
            }
        }
        if let Some(quota) = &quota {
            put_header(
                &mut buf,
                OK_RESPONSE_HEADERS_TO_ADD,
                QUOTA_HEADER,
                quota.bytes(),
            );
        }
        for name in self.query_parameters_to_remove {
            put_string(&mut buf, OK_QUERY_PARAMETERS_TO_REMOVE, name.as_bytes());
        }
        if self.dynamic_metadata {
            put_len_prefix(&mut buf, RESPONSE_METADATA, struct_len);
            for (i, (name, value)) in METADATA_NAMES.iter().zip(values).enumerate() {
                put_len_prefix(&mut buf, STRUCT_FIELDS, entry_len(name.len(), value));
                // Field names are never empty, so always written.
                put_string(&mut buf, ENTRY_KEY, name.as_bytes());
                // A `Value` with a string is written even when the string
                // is empty (a set oneof field), and so is the entry's value.
                put_len_prefix(&mut buf, ENTRY_VALUE, field_len(VALUE_STRING, value));
                put_len_prefix(&mut buf, VALUE_STRING, value);
                match i {
                    0 => buf.extend_from_slice(self.key_id.as_bytes()),
                    1 => buf.extend_from_slice(self.account_id.as_bytes()),
                    _ => buf.extend_from_within(scopes.clone()),
                }
            }
        }
        debug_assert_eq!(buf.len(), total);
        CheckReply::Encoded(EncodedAllowed(buf))
    }
}

/// Bytes of `names` joined by single spaces.
fn joined_len<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    let (count, bytes) = names.fold((0usize, 0), |(count, bytes), name| {
        (count + 1, bytes + name.len())
    });
    bytes + count.saturating_sub(1)
}

/// A length-delimited field of `len` bytes, with its tag and length.
fn field_len(tag: u32, len: usize) -> usize {
    encoding::key_len(tag) + encoding::encoded_len_varint(len as u64) + len
}

/// A proto3 string field: left out when empty.
fn string_field_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { field_len(tag, len) }
}

/// A repeated string field: every element written, empty ones included.
fn repeated_strings_len(tag: u32, strings: &[String]) -> usize {
    strings.iter().map(|text| field_len(tag, text.len())).sum()
}

/// `HeaderValue { key, value }`'s bytes.
fn header_value_len(name: usize, value: usize) -> usize {
    string_field_len(HEADER_KEY, name) + string_field_len(HEADER_VALUE, value)
}

/// `HeaderValueOption`'s bytes: its header (always present) and its
/// append action.
fn header_option_len(name: usize, value: usize) -> usize {
    field_len(OPTION_HEADER, header_value_len(name, value))
        + encoding::key_len(OPTION_APPEND_ACTION)
        + encoding::encoded_len_varint(OVERWRITE)
}

/// A header as field `tag` of its message.
fn header_field_len(tag: u32, name: usize, value: usize) -> usize {
    field_len(tag, header_option_len(name, value))
}

/// A `Struct` entry: its name and its `Value { string_value }`.
fn entry_len(name: usize, value: usize) -> usize {
    string_field_len(ENTRY_KEY, name) + field_len(ENTRY_VALUE, field_len(VALUE_STRING, value))
}

fn put_len_prefix(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(len as u64, buf);
}

/// A repeated string's element (written even when empty).
fn put_string(buf: &mut Vec<u8>, tag: u32, text: &[u8]) {
    put_len_prefix(buf, tag, text.len());
    buf.extend_from_slice(text);
}

/// A proto3 string field (left out when empty).
fn put_string_field(buf: &mut Vec<u8>, tag: u32, text: &[u8]) {
    if !text.is_empty() {
        put_string(buf, tag, text);
    }
}

fn put_header(buf: &mut Vec<u8>, tag: u32, name: &str, value: &[u8]) {
    put_header_prefix(buf, tag, name, value.len());
    buf.extend_from_slice(value);
    put_append_action(buf);
}

/// A header up to its value's bytes, which the caller writes (`value`
/// bytes, then [`put_append_action`]).
fn put_header_prefix(buf: &mut Vec<u8>, tag: u32, name: &str, value: usize) {
    put_len_prefix(buf, tag, header_option_len(name.len(), value));
    put_len_prefix(buf, OPTION_HEADER, header_value_len(name.len(), value));
    put_string_field(buf, HEADER_KEY, name.as_bytes());
    if value > 0 {
        put_len_prefix(buf, HEADER_VALUE, value);
    }
}

fn put_append_action(buf: &mut Vec<u8>) {
    encoding::encode_key(OPTION_APPEND_ACTION, WireType::Varint, buf);
    encoding::encode_varint(OVERWRITE, buf);
}

/// A number's decimal digits, without allocating.
struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(mut number: u64) -> Self {
        let mut digits = [0; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (number % 10) as u8;
            number /= 10;
            if number == 0 {
                break;
            }
        }
        Self { digits, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }

    fn len(&self) -> usize {
        self.digits.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_to_string_writes_them() {
        for number in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(Decimal::new(number).bytes(), number.to_string().as_bytes());
            assert_eq!(Decimal::new(number).len(), number.to_string().len());
        }
    }
}
