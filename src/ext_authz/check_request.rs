//! Envoy's `CheckRequest`, decoded straight from its bytes into what keyward
//! reads of it: the HTTP method and path, the headers (the `headers` map, or
//! `header_map` with `encode_raw_headers`), and the peer's socket address.
//!
//! The envoy-types (prost) decoder builds the whole request: a `String` for
//! every header name and value, a `HashMap` of them, every attribute keyward
//! never reads. Here the request keeps its bytes (`Bytes`, shared with the
//! transport's buffer) and records where each field it reads lies in them;
//! everything else is checked and skipped without allocating.
//!
//! **It accepts and rejects exactly what prost does**, so a request reads
//! the same through either decoder: every field of every message in
//! Envoy's protos (`external_auth.proto`, `attribute_context.proto` and the
//! messages they use) is checked for its wire type, strings for UTF-8,
//! lengths against their message, nesting against prost's recursion limit
//! of 100; unknown fields are skipped as prost skips them. Repeated
//! occurrences merge as protobuf merges them: the last value of a scalar
//! wins, messages merge, a map entry replaces an earlier one with the same
//! key, a oneof switching member starts the member afresh. `check_request/tests.rs`
//! compares both decoders field by field.

use prost::bytes::Bytes;
use prost::encoding::{WireType, check_wire_type, decode_key, decode_varint};

/// What keyward reads of a `CheckRequest`.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    bytes: Bytes,
    /// `attributes.request.http`, when all three are present.
    http: Option<HttpFields>,
    /// `attributes.source.address`.
    peer: PeerAddress,
}

/// `attributes.request.http`: where its fields lie in the request's bytes.
#[derive(Debug, Clone, Default)]
struct HttpFields {
    method: Span,
    path: Span,
    /// The `headers` map: sorted by name, one entry per name (the last one
    /// sent, as a map keeps it).
    headers: Vec<(Span, Span)>,
    /// `header_map.headers`, in order.
    raw_headers: Vec<RawHeader>,
}

/// One `HeaderValue` of `header_map`.
#[derive(Debug, Clone, Copy, Default)]
struct RawHeader {
    key: Span,
    value: Span,
    raw_value: Span,
}

/// `attributes.source.address.address`, a oneof.
#[derive(Debug, Clone, Copy, Default)]
enum PeerAddress {
    #[default]
    Absent,
    /// A `SocketAddress`, with where its `address` lies.
    Socket(Span),
    /// A pipe or an Envoy internal address: no IP address.
    Other,
}

/// Where a field lies in the request's bytes. `start` also orders map
/// entries as they were sent (an absent key is an empty span at its
/// entry's start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn of(self, bytes: &[u8]) -> &[u8] {
        &bytes[self.start..self.end]
    }

    fn empty_at(at: usize) -> Self {
        Self { start: at, end: at }
    }
}

/// Why a `CheckRequest` does not decode. Names the field, never the bytes.
#[derive(Debug, thiserror::Error)]
pub enum CheckRequestError {
    #[error("{0}")]
    Wire(#[from] prost::DecodeError),
    #[error("{field}: invalid wire type {actual:?} (expected {expected:?})")]
    WireType {
        field: &'static str,
        expected: WireType,
        actual: WireType,
    },
    #[error("a field runs past the end of its message")]
    Truncated,
    #[error("{field}: invalid string value: data is not UTF-8 encoded")]
    NotUtf8 { field: &'static str },
    #[error("recursion limit reached")]
    TooDeep,
    #[error("unexpected end group tag")]
    UnexpectedEndGroup,
}

type Result<T, E = CheckRequestError> = std::result::Result<T, E>;

/// prost's recursion limit: the depth at which it refuses a message.
const RECURSION_LIMIT: u32 = 100;

impl CheckRequest {
    /// Decodes a serialized `envoy.service.auth.v3.CheckRequest`.
    pub fn decode(bytes: Bytes) -> Result<Self> {
        let mut state = State::default();
        let mut reader = Reader {
            bytes: &bytes,
            pos: 0,
            end: bytes.len(),
        };
        // CheckRequest { AttributeContext attributes = 1; }
        while reader.has_more() {
            let (tag, wire_type) = reader.key()?;
            match tag {
                1 => {
                    let mut attributes =
                        reader.message(wire_type, RECURSION_LIMIT, "CheckRequest.attributes")?;
                    read_attributes(&mut attributes, RECURSION_LIMIT - 1, &mut state)?;
                }
                _ => reader.skip(wire_type, tag, RECURSION_LIMIT)?,
            }
        }
        if let Some(http) = &mut state.http {
            unique_by_name(&bytes, &mut http.headers);
        }
        Ok(Self {
            bytes,
            http: state.http,
            peer: state.peer,
        })
    }

    /// `attributes.request.http`, if Envoy sent it.
    pub fn http(&self) -> Option<HttpRequest<'_>> {
        self.http.as_ref().map(|fields| HttpRequest {
            bytes: &self.bytes,
            fields,
        })
    }

    /// The text of `attributes.source.address`, when it is a socket
    /// address (the connection's direct peer).
    pub fn peer_address(&self) -> Option<&str> {
        match self.peer {
            PeerAddress::Socket(span) => Some(text(span.of(&self.bytes))),
            PeerAddress::Absent | PeerAddress::Other => None,
        }
    }
}

/// `attributes.request.http` of a decoded [`CheckRequest`].
#[derive(Clone, Copy)]
pub struct HttpRequest<'a> {
    bytes: &'a [u8],
    fields: &'a HttpFields,
}

impl<'a> HttpRequest<'a> {
    pub fn method(&self) -> &'a str {
        text(self.fields.method.of(self.bytes))
    }

    pub fn path(&self) -> &'a str {
        text(self.fields.path.of(self.bytes))
    }

    /// The `headers` map, sorted by name: name and value bytes (both UTF-8).
    pub fn header_map(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a> {
        let bytes = self.bytes;
        self.fields
            .headers
            .iter()
            .map(move |(name, value)| (name.of(bytes), value.of(bytes)))
    }

    /// The value of the `headers` map's entry `name`.
    pub fn map_header(&self, name: &str) -> Option<&'a str> {
        let bytes = self.bytes;
        let headers = &self.fields.headers;
        let at = headers
            .binary_search_by(|(key, _)| key.of(bytes).cmp(name.as_bytes()))
            .ok()?;
        Some(text(headers[at].1.of(bytes)))
    }

    /// `header_map.headers` in order: key, value and raw_value (key and
    /// value UTF-8, raw_value any bytes).
    pub fn raw_headers(&self) -> impl Iterator<Item = RawHeaderView<'a>> + use<'a> {
        let bytes = self.bytes;
        self.fields
            .raw_headers
            .iter()
            .map(move |header| RawHeaderView {
                key: header.key.of(bytes),
                value: header.value.of(bytes),
                raw_value: header.raw_value.of(bytes),
            })
    }
}

/// One `HeaderValue` of `header_map`.
#[derive(Debug, Clone, Copy)]
pub struct RawHeaderView<'a> {
    pub key: &'a [u8],
    /// UTF-8 (checked when decoding).
    pub value: &'a [u8],
    pub raw_value: &'a [u8],
}

/// A string field's text: checked for UTF-8 when decoding, so never lossy.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// Whether `bytes` are UTF-8, as `str::from_utf8` decides, with a quicker
/// answer for ASCII: nearly every header name and value is ASCII, and for
/// strings this short `is_ascii` costs a fraction of `from_utf8`'s setup
/// (about 100 instructions a string, 23 strings in a typical Check).
#[inline]
fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

/// Keeps the last entry sent for each name (as prost's `HashMap::insert`
/// does) and sorts them by name, for binary search. Sorting costs nothing
/// per entry, unlike hashing each name.
fn unique_by_name(bytes: &[u8], headers: &mut Vec<(Span, Span)>) {
    headers.sort_unstable_by(|(a, _), (b, _)| {
        a.of(bytes).cmp(b.of(bytes)).then(b.start.cmp(&a.start))
    });
    headers.dedup_by(|later, kept| later.0.of(bytes) == kept.0.of(bytes));
}

#[derive(Default)]
struct State {
    http: Option<HttpFields>,
    peer: PeerAddress,
}

/// A cursor over one message's bytes within the request.
struct Reader<'b> {
    bytes: &'b [u8],
    pos: usize,
    /// The end of this message.
    end: usize,
}

impl<'b> Reader<'b> {
    fn has_more(&self) -> bool {
        self.pos < self.end
    }

    /// Runs one of prost's readers over the rest of this message.
    #[inline]
    fn with_buf<T>(
        &mut self,
        read: impl FnOnce(&mut &'b [u8]) -> Result<T, prost::DecodeError>,
    ) -> Result<T> {
        let mut rest = &self.bytes[self.pos..self.end];
        let value = read(&mut rest)?;
        self.pos = self.end - rest.len();
        Ok(value)
    }

    #[inline]
    fn key(&mut self) -> Result<(u32, WireType)> {
        self.with_buf(decode_key)
    }

    #[inline]
    fn varint_value(&mut self) -> Result<u64> {
        self.with_buf(decode_varint)
    }

    #[inline]
    fn expect(&self, field: &'static str, expected: WireType, actual: WireType) -> Result<()> {
        check_wire_type(expected, actual).map_err(|_| CheckRequestError::WireType {
            field,
            expected,
            actual,
        })
    }

    /// A length-delimited field's span, the reader moved past it.
    #[inline]
    fn delimited(&mut self) -> Result<Span> {
        let len = self.varint_value()?;
        if len > (self.end - self.pos) as u64 {
            return Err(CheckRequestError::Truncated);
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(Span {
            start,
            end: self.pos,
        })
    }

    /// A nested message field, read by the reader returned. `depth` is the
    /// recursion budget of the fields of the message holding it (prost's
    /// `DecodeContext`); that message's own fields get one less.
    fn message(&mut self, wire_type: WireType, depth: u32, field: &'static str) -> Result<Self> {
        self.expect(field, WireType::LengthDelimited, wire_type)?;
        if depth == 0 {
            return Err(CheckRequestError::TooDeep);
        }
        let span = self.delimited()?;
        Ok(Reader {
            bytes: self.bytes,
            pos: span.start,
            end: span.end,
        })
    }

    #[inline]
    fn string(&mut self, wire_type: WireType, field: &'static str) -> Result<Span> {
        self.expect(field, WireType::LengthDelimited, wire_type)?;
        let span = self.delimited()?;
        if !is_utf8(span.of(self.bytes)) {
            return Err(CheckRequestError::NotUtf8 { field });
        }
        Ok(span)
    }

    fn bytes_field(&mut self, wire_type: WireType, field: &'static str) -> Result<Span> {
        self.expect(field, WireType::LengthDelimited, wire_type)?;
        self.delimited()
    }

    /// An unknown field, skipped as prost's `skip_field` does (including
    /// its recursion limit, which prost checks even here).
    fn skip(&mut self, wire_type: WireType, tag: u32, depth: u32) -> Result<()> {
        if depth == 0 {
            return Err(CheckRequestError::TooDeep);
        }
        let len = match wire_type {
            WireType::Varint => {
                self.varint_value()?;
                0
            }
            WireType::ThirtyTwoBit => 4,
            WireType::SixtyFourBit => 8,
            WireType::LengthDelimited => self.varint_value()?,
            WireType::StartGroup => loop {
                let (inner_tag, inner_wire_type) = self.key()?;
                match inner_wire_type {
                    WireType::EndGroup if inner_tag == tag => break 0,
                    WireType::EndGroup => return Err(CheckRequestError::UnexpectedEndGroup),
                    _ => self.skip(inner_wire_type, inner_tag, depth - 1)?,
                }
            },
            WireType::EndGroup => return Err(CheckRequestError::UnexpectedEndGroup),
        };
        if len > (self.end - self.pos) as u64 {
            return Err(CheckRequestError::Truncated);
        }
        self.pos += len as usize;
        Ok(())
    }

    /// A field keyward does not read, checked against `schema` (its
    /// message's fields) as prost would decode it, then forgotten.
    fn check_field(
        &mut self,
        schema: &Schema,
        tag: u32,
        wire_type: WireType,
        depth: u32,
    ) -> Result<()> {
        let Some((_, kind, field)) = schema.0.iter().find(|(number, _, _)| *number == tag) else {
            return self.skip(wire_type, tag, depth);
        };
        match kind {
            Kind::Varint => {
                self.expect(field, WireType::Varint, wire_type)?;
                self.varint_value()?;
            }
            Kind::Fixed64 => {
                self.expect(field, WireType::SixtyFourBit, wire_type)?;
                if self.end - self.pos < 8 {
                    return Err(CheckRequestError::Truncated);
                }
                self.pos += 8;
            }
            Kind::Text => {
                self.string(wire_type, field)?;
            }
            Kind::Bytes => {
                self.bytes_field(wire_type, field)?;
            }
            Kind::Message(inner) => {
                let mut message = self.message(wire_type, depth, field)?;
                message.check_message(inner, depth - 1)?;
            }
        }
        Ok(())
    }

    /// Every field of a message keyward does not read.
    fn check_message(&mut self, schema: &Schema, depth: u32) -> Result<()> {
        while self.has_more() {
            let (tag, wire_type) = self.key()?;
            self.check_field(schema, tag, wire_type, depth)?;
        }
        Ok(())
    }
}

/// How prost decodes a field, for the fields keyward skips.
enum Kind {
    /// int32, int64, uint32, bool, enum.
    Varint,
    /// double.
    Fixed64,
    /// string: checked for UTF-8.
    Text,
    Bytes,
    /// A message, a oneof member that is one, or a map entry.
    Message(&'static Schema),
}

/// A message's fields: number, kind, name (for errors).
struct Schema(&'static [(u32, Kind, &'static str)]);

// The messages of Envoy's `CheckRequest`, as envoy-types generates them.
// Fields keyward reads are decoded by hand below; their entries here are
// for the messages keyward only checks.

/// envoy.service.auth.v3.AttributeContext (1 source and 4 request are
/// read by hand).
static ATTRIBUTE_CONTEXT: Schema = Schema(&[
    (2, Kind::Message(&PEER), "AttributeContext.destination"),
    (
        10,
        Kind::Message(&STRING_MAP_ENTRY),
        "AttributeContext.context_extensions",
    ),
    (
        11,
        Kind::Message(&METADATA),
        "AttributeContext.metadata_context",
    ),
    (
        12,
        Kind::Message(&TLS_SESSION),
        "AttributeContext.tls_session",
    ),
    (
        13,
        Kind::Message(&METADATA),
        "AttributeContext.route_metadata_context",
    ),
]);
static PEER: Schema = Schema(&[
    (1, Kind::Message(&ADDRESS), "Peer.address"),
    (2, Kind::Text, "Peer.service"),
    (3, Kind::Message(&STRING_MAP_ENTRY), "Peer.labels"),
    (4, Kind::Text, "Peer.principal"),
    (5, Kind::Text, "Peer.certificate"),
]);
/// envoy.config.core.v3.Address: a oneof of three messages.
static ADDRESS: Schema = Schema(&[
    (1, Kind::Message(&SOCKET_ADDRESS), "Address.socket_address"),
    (2, Kind::Message(&PIPE), "Address.pipe"),
    (
        3,
        Kind::Message(&ENVOY_INTERNAL_ADDRESS),
        "Address.envoy_internal_address",
    ),
]);
static SOCKET_ADDRESS: Schema = Schema(&[
    (1, Kind::Varint, "SocketAddress.protocol"),
    (2, Kind::Text, "SocketAddress.address"),
    (3, Kind::Varint, "SocketAddress.port_value"),
    (4, Kind::Text, "SocketAddress.named_port"),
    (5, Kind::Text, "SocketAddress.resolver_name"),
    (6, Kind::Varint, "SocketAddress.ipv4_compat"),
    (7, Kind::Text, "SocketAddress.network_namespace_filepath"),
]);
static PIPE: Schema = Schema(&[(1, Kind::Text, "Pipe.path"), (2, Kind::Varint, "Pipe.mode")]);
static ENVOY_INTERNAL_ADDRESS: Schema = Schema(&[
    (1, Kind::Text, "EnvoyInternalAddress.server_listener_name"),
    (2, Kind::Text, "EnvoyInternalAddress.endpoint_id"),
]);
/// attribute_context.Request (2 http is read by hand).
static REQUEST: Schema = Schema(&[(1, Kind::Message(&TIMESTAMP), "Request.time")]);
static TIMESTAMP: Schema = Schema(&[
    (1, Kind::Varint, "Timestamp.seconds"),
    (2, Kind::Varint, "Timestamp.nanos"),
]);
/// attribute_context.HttpRequest (2 method, 3 headers, 4 path and
/// 13 header_map are read by hand).
static HTTP_REQUEST: Schema = Schema(&[
    (1, Kind::Text, "HttpRequest.id"),
    (5, Kind::Text, "HttpRequest.host"),
    (6, Kind::Text, "HttpRequest.scheme"),
    (7, Kind::Text, "HttpRequest.query"),
    (8, Kind::Text, "HttpRequest.fragment"),
    (9, Kind::Varint, "HttpRequest.size"),
    (10, Kind::Text, "HttpRequest.protocol"),
    (11, Kind::Text, "HttpRequest.body"),
    (12, Kind::Bytes, "HttpRequest.raw_body"),
]);
static TLS_SESSION: Schema = Schema(&[(1, Kind::Text, "TlsSession.sni")]);
static STRING_MAP_ENTRY: Schema =
    Schema(&[(1, Kind::Text, "map key"), (2, Kind::Text, "map value")]);
/// envoy.config.core.v3.Metadata.
static METADATA: Schema = Schema(&[
    (
        1,
        Kind::Message(&STRUCT_MAP_ENTRY),
        "Metadata.filter_metadata",
    ),
    (
        2,
        Kind::Message(&ANY_MAP_ENTRY),
        "Metadata.typed_filter_metadata",
    ),
]);
static STRUCT_MAP_ENTRY: Schema = Schema(&[
    (1, Kind::Text, "map key"),
    (2, Kind::Message(&STRUCT), "map value"),
]);
static ANY_MAP_ENTRY: Schema = Schema(&[
    (1, Kind::Text, "map key"),
    (2, Kind::Message(&ANY), "map value"),
]);
static ANY: Schema = Schema(&[
    (1, Kind::Text, "Any.type_url"),
    (2, Kind::Bytes, "Any.value"),
]);
/// google.protobuf.Struct, Value and ListValue.
static STRUCT: Schema = Schema(&[(1, Kind::Message(&VALUE_MAP_ENTRY), "Struct.fields")]);
static VALUE_MAP_ENTRY: Schema = Schema(&[
    (1, Kind::Text, "map key"),
    (2, Kind::Message(&VALUE), "map value"),
]);
static VALUE: Schema = Schema(&[
    (1, Kind::Varint, "Value.null_value"),
    (2, Kind::Fixed64, "Value.number_value"),
    (3, Kind::Text, "Value.string_value"),
    (4, Kind::Varint, "Value.bool_value"),
    (5, Kind::Message(&STRUCT), "Value.struct_value"),
    (6, Kind::Message(&LIST_VALUE), "Value.list_value"),
]);
static LIST_VALUE: Schema = Schema(&[(1, Kind::Message(&VALUE), "ListValue.values")]);

// The fields keyward reads. Each reader takes the recursion budget of the
// fields it reads (see `Reader::message`).

fn read_attributes(reader: &mut Reader<'_>, depth: u32, state: &mut State) -> Result<()> {
    while reader.has_more() {
        let (tag, wire_type) = reader.key()?;
        match tag {
            1 => {
                let mut source = reader.message(wire_type, depth, "AttributeContext.source")?;
                read_source(&mut source, depth - 1, &mut state.peer)?;
            }
            4 => {
                let mut request = reader.message(wire_type, depth, "AttributeContext.request")?;
                read_request(&mut request, depth - 1, state)?;
            }
            _ => reader.check_field(&ATTRIBUTE_CONTEXT, tag, wire_type, depth)?,
        }
    }
    Ok(())
}

/// `source` (a Peer): its address.
fn read_source(reader: &mut Reader<'_>, depth: u32, peer: &mut PeerAddress) -> Result<()> {
    while reader.has_more() {
        let (tag, wire_type) = reader.key()?;
        match tag {
            1 => {
                let mut address = reader.message(wire_type, depth, "Peer.address")?;
                read_address(&mut address, depth - 1, peer)?;
            }
            _ => reader.check_field(&PEER, tag, wire_type, depth)?,
        }
    }
    Ok(())
}

/// An Address's oneof: a socket address merges into the one before it; any
/// other member replaces it.
fn read_address(reader: &mut Reader<'_>, depth: u32, peer: &mut PeerAddress) -> Result<()> {
    while reader.has_more() {
        let (tag, wire_type) = reader.key()?;
        match tag {
            1 => {
                let mut socket = reader.message(wire_type, depth, "Address.socket_address")?;
                let mut address = match *peer {
                    PeerAddress::Socket(address) => address,
                    PeerAddress::Absent | PeerAddress::Other => Span::default(),
                };
                while socket.has_more() {
                    let (tag, wire_type) = socket.key()?;
                    match tag {
                        2 => address = socket.string(wire_type, "SocketAddress.address")?,
                        _ => socket.check_field(&SOCKET_ADDRESS, tag, wire_type, depth - 1)?,
                    }
                }
                *peer = PeerAddress::Socket(address);
            }
            2 | 3 => {
                reader.check_field(&ADDRESS, tag, wire_type, depth)?;
                *peer = PeerAddress::Other;
            }
            _ => reader.skip(wire_type, tag, depth)?,
        }
    }
    Ok(())
}

fn read_request(reader: &mut Reader<'_>, depth: u32, state: &mut State) -> Result<()> {
    while reader.has_more() {
        let (tag, wire_type) = reader.key()?;
        match tag {
            2 => {
                let mut http = reader.message(wire_type, depth, "Request.http")?;
                let fields = state.http.get_or_insert_with(HttpFields::default);
                read_http(&mut http, depth - 1, fields)?;
            }
            _ => reader.check_field(&REQUEST, tag, wire_type, depth)?,
        }
    }
    Ok(())
}

fn read_http(reader: &mut Reader<'_>, depth: u32, http: &mut HttpFields) -> Result<()> {
    while reader.has_more() {
        let (tag, wire_type) = reader.key()?;
        match tag {
            2 => http.method = reader.string(wire_type, "HttpRequest.method")?,
            3 => {
                // A map entry: a message of key (1) and value (2).
                let mut entry = reader.message(wire_type, depth, "HttpRequest.headers")?;
                let mut name = Span::empty_at(entry.pos);
                let mut value = Span::default();
                while entry.has_more() {
                    let (tag, wire_type) = entry.key()?;
                    match tag {
                        1 => name = entry.string(wire_type, "HttpRequest.headers key")?,
                        2 => value = entry.string(wire_type, "HttpRequest.headers value")?,
                        _ => entry.skip(wire_type, tag, depth - 1)?,
                    }
                }
                http.headers.push((name, value));
            }
            4 => http.path = reader.string(wire_type, "HttpRequest.path")?,
            13 => {
                let mut map = reader.message(wire_type, depth, "HttpRequest.header_map")?;
                read_header_map(&mut map, depth - 1, &mut http.raw_headers)?;
            }
            _ => reader.check_field(&HTTP_REQUEST, tag, wire_type, depth)?,
        }
    }
    Ok(())
}

/// HeaderMap { repeated HeaderValue headers = 1; }: each occurrence is one
/// more header.
fn read_header_map(
    reader: &mut Reader<'_>,
    depth: u32,
    headers: &mut Vec<RawHeader>,
) -> Result<()> {
    while reader.has_more() {
        let (tag, wire_type) = reader.key()?;
        match tag {
            1 => {
                let mut value = reader.message(wire_type, depth, "HeaderMap.headers")?;
                let mut header = RawHeader::default();
                while value.has_more() {
                    let (tag, wire_type) = value.key()?;
                    match tag {
                        1 => header.key = value.string(wire_type, "HeaderValue.key")?,
                        2 => header.value = value.string(wire_type, "HeaderValue.value")?,
                        3 => {
                            header.raw_value =
                                value.bytes_field(wire_type, "HeaderValue.raw_value")?
                        }
                        _ => value.skip(wire_type, tag, depth - 1)?,
                    }
                }
                headers.push(header);
            }
            _ => reader.skip(wire_type, tag, depth)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
