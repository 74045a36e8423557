//! Unit tests for `ext_authz::check_request`: what keyward reads of a
//! request, compared field by field with what the envoy-types (prost)
//! decoder makes of the same bytes, on Envoy-shaped requests, generated
//! ones, their concatenations, truncations and corruptions, and hand-made
//! edge cases.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest as PbHttpRequest, Peer, Request, TlsSession,
};
use envoy_types::pb::google::protobuf::{self as wkt, value::Kind as ValueKind};
use keyward_testkit::envoy::{call, get};
use prost::Message;

use super::*;

/// What keyward reads of a request, in plain values.
#[derive(Debug, PartialEq, Eq)]
struct Reading {
    http: Option<HttpReading>,
    peer: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
struct HttpReading {
    method: String,
    path: String,
    /// The `headers` map, sorted by name.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// `header_map`: key, value, raw_value.
    raw_headers: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

fn lean_reading(bytes: &[u8]) -> Result<Reading, CheckRequestError> {
    let check = CheckRequest::decode(Bytes::copy_from_slice(bytes))?;
    Ok(Reading {
        http: check.http().map(|http| HttpReading {
            method: http.method().to_owned(),
            path: http.path().to_owned(),
            headers: http
                .header_map()
                .map(|(name, value)| (name.to_vec(), value.to_vec()))
                .collect(),
            raw_headers: http
                .raw_headers()
                .map(|h| (h.key.to_vec(), h.value.to_vec(), h.raw_value.to_vec()))
                .collect(),
        }),
        peer: check.peer_address().map(str::to_owned),
    })
}

fn prost_reading(bytes: &[u8]) -> Result<Reading, prost::DecodeError> {
    let check = pb::CheckRequest::decode(bytes)?;
    let attributes = check.attributes.as_ref();
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let peer = attributes
        .and_then(|a| a.source.as_ref())
        .and_then(|s| s.address.as_ref())
        .and_then(|a| a.address.as_ref());
    Ok(Reading {
        http: http.map(|http| {
            let mut headers: Vec<_> = http
                .headers
                .iter()
                .map(|(name, value)| (name.as_bytes().to_vec(), value.as_bytes().to_vec()))
                .collect();
            headers.sort();
            HttpReading {
                method: http.method.clone(),
                path: http.path.clone(),
                headers,
                raw_headers: http
                    .header_map
                    .iter()
                    .flat_map(|map| &map.headers)
                    .map(|h| {
                        (
                            h.key.as_bytes().to_vec(),
                            h.value.as_bytes().to_vec(),
                            h.raw_value.clone(),
                        )
                    })
                    .collect(),
            }
        }),
        peer: match peer {
            Some(core::address::Address::SocketAddress(socket)) => Some(socket.address.clone()),
            _ => None,
        },
    })
}

/// Both decoders accept `bytes` and read the same, or both refuse them.
/// Returns whether they accepted.
#[track_caller]
fn agree(bytes: &[u8]) -> bool {
    let lean = lean_reading(bytes);
    let prost = prost_reading(bytes);
    match (&lean, &prost) {
        (Ok(lean), Ok(prost)) => {
            assert_eq!(lean, prost, "read differently: {bytes:02x?}");
            true
        }
        (Err(_), Err(_)) => false,
        _ => panic!("lean {lean:?}, prost {prost:?}: {bytes:02x?}"),
    }
}

/// Envoy's requests as the tests play them, both header encodings.
fn envoy_shaped() -> Vec<pb::CheckRequest> {
    let calls = || {
        [
            get("/api/v1/account").bearer("cc_secret"),
            call("POST", "/api/v1/orders?api_key=cc_x&b=%20")
                .header("x-api-key", "cc_key")
                .header("X-Keyward-Meta-Owner", "me")
                .header("accept", "text/html")
                .forwarded_for("203.0.113.7, 198.51.100.1")
                .sent_by_peer("2001:db8::1"),
            get("/").request_id("").header("empty", ""),
        ]
    };
    calls()
        .into_iter()
        .map(|c| c.build())
        .chain(calls().into_iter().map(|c| c.build_raw_headers()))
        .collect()
}

#[test]
fn envoy_shaped_requests_read_as_prost_reads_them() {
    for request in envoy_shaped() {
        let bytes = request.encode_to_vec();
        assert!(agree(&bytes));
        let reading = lean_reading(&bytes).unwrap();
        let http = reading.http.expect("an HTTP request");
        assert!(!http.method.is_empty() && http.path.starts_with('/'));
        assert!(!http.headers.is_empty() || !http.raw_headers.is_empty());
        assert!(reading.peer.is_some());
    }
}

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn text(&mut self) -> String {
        const PIECES: [&str; 10] = ["a", "cc_", "Bearer ", " ", "/", "é", "✓", ",", "%2F", "x-"];
        (0..self.below(6))
            .map(|_| PIECES[self.below(PIECES.len())])
            .collect()
    }

    fn name(&mut self) -> String {
        const NAMES: [&str; 8] = [
            "authorization",
            "x-api-key",
            "x-forwarded-for",
            "x-request-id",
            "x-keyward-meta-a",
            "Accept",
            "",
            "x-min-revision",
        ];
        NAMES[self.below(NAMES.len())].to_owned()
    }

    fn raw_bytes(&mut self) -> Vec<u8> {
        (0..self.below(5))
            .map(|_| [0xff, b'c', b'_', 0xc3, b' '][self.below(5)])
            .collect()
    }

    fn map(&mut self) -> HashMap<String, String> {
        (0..self.below(6))
            .map(|_| (self.name(), self.text()))
            .collect()
    }

    fn address(&mut self) -> Option<core::Address> {
        let kind = match self.below(4) {
            0 => return None,
            1 => core::address::Address::SocketAddress(core::SocketAddress {
                address: ["192.0.2.1", "2001:db8::2", "", "not an address"][self.below(4)].into(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(443)),
                resolver_name: self.text(),
                ..Default::default()
            }),
            2 => core::address::Address::Pipe(core::Pipe {
                path: self.text(),
                mode: 0o600,
            }),
            _ => core::address::Address::EnvoyInternalAddress(core::EnvoyInternalAddress {
                endpoint_id: self.text(),
                ..Default::default()
            }),
        };
        Some(core::Address {
            address: self.chance(90).then_some(kind),
        })
    }

    fn peer(&mut self) -> Option<Peer> {
        self.chance(70).then(|| Peer {
            address: self.address(),
            service: self.text(),
            labels: self.map(),
            principal: self.text(),
            certificate: self.text(),
        })
    }

    fn structure(&mut self, depth: usize) -> wkt::Struct {
        let fields = (0..self.below(3))
            .map(|_| {
                let kind = match self.below(6) {
                    0 => ValueKind::NullValue(0),
                    1 => ValueKind::NumberValue(1.5),
                    2 => ValueKind::StringValue(self.text()),
                    3 => ValueKind::BoolValue(true),
                    4 if depth > 0 => ValueKind::StructValue(self.structure(depth - 1)),
                    _ => ValueKind::ListValue(wkt::ListValue {
                        values: vec![wkt::Value {
                            kind: Some(ValueKind::StringValue(self.text())),
                        }],
                    }),
                };
                (self.name(), wkt::Value { kind: Some(kind) })
            })
            .collect();
        wkt::Struct { fields }
    }

    fn metadata(&mut self) -> Option<core::Metadata> {
        self.chance(30).then(|| core::Metadata {
            filter_metadata: HashMap::from([("envoy.filters.http".into(), self.structure(3))]),
            typed_filter_metadata: HashMap::from([(
                "typed".into(),
                wkt::Any {
                    type_url: self.text(),
                    value: self.raw_bytes(),
                },
            )]),
        })
    }

    fn http(&mut self) -> PbHttpRequest {
        let header_map = self.chance(40).then(|| core::HeaderMap {
            headers: (0..self.below(6))
                .map(|_| core::HeaderValue {
                    key: self.name(),
                    value: if self.chance(30) {
                        self.text()
                    } else {
                        String::new()
                    },
                    raw_value: if self.chance(70) {
                        self.raw_bytes()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        });
        PbHttpRequest {
            id: self.text(),
            method: ["GET", "POST", ""][self.below(3)].into(),
            headers: self.map(),
            path: format!("/{}", self.text()),
            host: self.text(),
            scheme: self.text(),
            query: self.text(),
            fragment: self.text(),
            size: [-1, 0, 1 << 40][self.below(3)],
            protocol: self.text(),
            body: self.text(),
            raw_body: self.raw_bytes(),
            header_map,
        }
    }

    fn check(&mut self) -> pb::CheckRequest {
        let attributes = self.chance(90).then(|| AttributeContext {
            source: self.peer(),
            destination: self.peer(),
            request: self.chance(90).then(|| Request {
                time: self.chance(50).then_some(wkt::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: -5,
                }),
                http: self.chance(90).then(|| self.http()),
            }),
            context_extensions: self.map(),
            metadata_context: self.metadata(),
            route_metadata_context: self.metadata(),
            tls_session: self.chance(30).then(|| TlsSession { sni: self.text() }),
        });
        pb::CheckRequest { attributes }
    }
}

/// Generated requests, and what becomes of their bytes on the way: two
/// sent as one (protobuf merges them: the last scalar wins, maps and
/// messages merge, repeated fields append), cut short, or corrupted.
#[test]
fn generated_requests_read_as_prost_reads_them_whole_merged_cut_or_corrupted() {
    let mut generator = Generator(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..3_000 {
        let bytes = generator.check().encode_to_vec();
        assert!(agree(&bytes));

        let mut merged = bytes.clone();
        merged.extend(generator.check().encode_to_vec());
        assert!(agree(&merged));

        if !bytes.is_empty() {
            let cut = generator.below(bytes.len());
            agree(&bytes[..cut]);
        }
        for flips in 1..=3 {
            let mut corrupted = bytes.clone();
            for _ in 0..flips {
                if corrupted.is_empty() {
                    break;
                }
                let at = generator.below(corrupted.len());
                corrupted[at] = generator.next() as u8;
            }
            if agree(&corrupted) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    }
    // The corruptions exercised both outcomes.
    assert!(accepted > 500 && refused > 500, "{accepted} {refused}");
}

#[test]
fn every_truncation_of_an_envoy_request_reads_as_prost_reads_it() {
    for request in envoy_shaped() {
        let bytes = request.encode_to_vec();
        for cut in 0..bytes.len() {
            agree(&bytes[..cut]);
        }
    }
}

// Hand-made messages.

fn varint(value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(value, &mut out);
    out
}

fn key(tag: u32, wire_type: WireType) -> Vec<u8> {
    varint(u64::from(tag << 3 | wire_type as u32))
}

/// A length-delimited field.
fn delimited(tag: u32, payload: &[u8]) -> Vec<u8> {
    [
        key(tag, WireType::LengthDelimited),
        varint(payload.len() as u64),
        payload.to_vec(),
    ]
    .concat()
}

fn varint_field(tag: u32, value: u64) -> Vec<u8> {
    [key(tag, WireType::Varint), varint(value)].concat()
}

/// CheckRequest { attributes { request { http { ... } } } }.
fn check_with_http(http: &[u8]) -> Vec<u8> {
    delimited(1, &delimited(4, &delimited(2, http)))
}

fn entry(name: &[u8], value: &[u8]) -> Vec<u8> {
    [delimited(1, name), delimited(2, value)].concat()
}

/// One unknown field of every wire type, a group holding two more.
fn unknown_fields() -> Vec<u8> {
    [
        varint_field(99, 300),
        [key(98, WireType::ThirtyTwoBit), vec![1, 2, 3, 4]].concat(),
        [key(97, WireType::SixtyFourBit), vec![0; 8]].concat(),
        delimited(96, b"\xff\xfe not UTF-8, not read"),
        [
            key(95, WireType::StartGroup),
            varint_field(1, 1),
            delimited(2, b"x"),
            key(95, WireType::EndGroup),
        ]
        .concat(),
    ]
    .concat()
}

#[test]
fn map_entries_sent_twice_keep_the_last_value_as_prost_does() {
    let http = [
        delimited(3, &entry(b"authorization", b"Bearer first")),
        delimited(3, &entry(b"accept", b"*/*")),
        delimited(3, &entry(b"authorization", b"Bearer second")),
        // An entry with its key twice: the last key counts.
        delimited(
            3,
            &[
                delimited(1, b"x-a"),
                delimited(1, b"x-b"),
                delimited(2, b"v"),
            ]
            .concat(),
        ),
        // Without key, or without value: empty ones.
        delimited(3, &delimited(2, b"no name")),
        delimited(3, &delimited(1, b"no-value")),
        delimited(3, b""),
    ]
    .concat();
    let bytes = check_with_http(&http);
    assert!(agree(&bytes));
    let check = CheckRequest::decode(Bytes::from(bytes)).unwrap();
    let headers = super::super::request::RequestHeaders::of(check.http().unwrap());
    assert_eq!(
        headers.get("authorization").as_deref(),
        Some("Bearer second")
    );
    assert_eq!(headers.get("x-b").as_deref(), Some("v"));
    assert_eq!(headers.get("x-a"), None);
    assert_eq!(headers.get("no-value").as_deref(), Some(""));
    assert_eq!(
        headers.get("").as_deref(),
        Some(""),
        "the keyless entry last"
    );
}

#[test]
fn scalars_sent_twice_keep_the_last_and_messages_merge() {
    let first = [delimited(2, b"GET"), delimited(4, b"/first")].concat();
    let second = [delimited(4, b"/second"), delimited(3, &entry(b"a", b"1"))].concat();
    // The HTTP request in two occurrences, and the whole request twice.
    let bytes = [check_with_http(&first), check_with_http(&second)].concat();
    assert!(agree(&bytes));
    let reading = lean_reading(&bytes).unwrap().http.unwrap();
    assert_eq!((&*reading.method, &*reading.path), ("GET", "/second"));
    assert_eq!(reading.headers, [(b"a".to_vec(), b"1".to_vec())]);
}

#[test]
fn raw_headers_append_across_occurrences_and_raw_value_may_be_any_bytes() {
    let header = |key: &[u8], value: &[u8], raw: &[u8]| {
        delimited(
            1,
            &[delimited(1, key), delimited(2, value), delimited(3, raw)].concat(),
        )
    };
    let http = [
        delimited(13, &header(b"x-bin", b"", b"\xff\x00cc_")),
        delimited(4, b"/"),
        delimited(
            13,
            &[
                header(b"x-key", b"", b"cc_1"),
                header(b"x-key", b"cc_2", b""),
            ]
            .concat(),
        ),
    ]
    .concat();
    let bytes = check_with_http(&http);
    assert!(agree(&bytes));
    let reading = lean_reading(&bytes).unwrap().http.unwrap();
    assert_eq!(reading.raw_headers.len(), 3);
    assert_eq!(reading.raw_headers[0].2, b"\xff\x00cc_");

    // Not UTF-8 in `value` (a string) is refused; in `raw_value` it is not.
    assert!(!agree(&check_with_http(&delimited(
        13,
        &header(b"x", b"\xff", b"")
    ))));
    assert!(!agree(&check_with_http(&delimited(
        3,
        &entry(b"x", b"\xff")
    ))));
    assert!(!agree(&check_with_http(&delimited(4, b"/\xff"))));
    // Even in a field keyward does not read (`host`), as prost refuses it.
    assert!(!agree(&check_with_http(&delimited(5, b"\xff"))));
}

#[test]
fn unknown_fields_are_skipped_at_every_level() {
    let unknown = unknown_fields();
    let http = [
        delimited(2, b"GET"),
        unknown.clone(),
        delimited(4, b"/x"),
        delimited(3, &[entry(b"a", b"1"), unknown.clone()].concat()),
        delimited(
            13,
            &[
                unknown.clone(),
                delimited(
                    1,
                    &[delimited(1, b"k"), unknown.clone(), delimited(2, b"v")].concat(),
                ),
            ]
            .concat(),
        ),
    ]
    .concat();
    let socket = [unknown.clone(), delimited(2, b"192.0.2.9")].concat();
    let source = delimited(1, &[unknown.clone(), delimited(1, &socket)].concat());
    let attributes = [
        unknown.clone(),
        delimited(1, &[source, unknown.clone()].concat()),
        delimited(4, &[unknown.clone(), delimited(2, &http)].concat()),
    ]
    .concat();
    let bytes = [unknown.clone(), delimited(1, &attributes)].concat();
    assert!(agree(&bytes));
    let reading = lean_reading(&bytes).unwrap();
    assert_eq!(reading.peer.as_deref(), Some("192.0.2.9"));
    assert_eq!(reading.http.unwrap().raw_headers.len(), 1);
}

#[test]
fn the_peer_address_follows_the_oneof() {
    let socket = |address: &[u8]| delimited(1, &delimited(2, address));
    let pipe = delimited(2, &delimited(1, b"/run/envoy.sock"));
    let with_addresses = |addresses: &[Vec<u8>]| {
        let source = addresses
            .iter()
            .map(|address| delimited(1, address))
            .collect::<Vec<_>>()
            .concat();
        delimited(1, &delimited(1, &source))
    };
    for (addresses, expected) in [
        (vec![socket(b"192.0.2.1")], Some("192.0.2.1")),
        (vec![socket(b"192.0.2.1"), pipe.clone()], None),
        (vec![pipe.clone(), socket(b"192.0.2.2")], Some("192.0.2.2")),
        // A socket address merges into the one before: its address stays.
        (
            vec![socket(b"192.0.2.3"), delimited(1, &varint_field(3, 443))],
            Some("192.0.2.3"),
        ),
        // After a pipe, a socket address starts afresh: no address.
        (
            vec![
                socket(b"192.0.2.3"),
                pipe,
                delimited(1, &varint_field(3, 443)),
            ],
            Some(""),
        ),
    ] {
        let bytes = with_addresses(&addresses);
        assert!(agree(&bytes));
        assert_eq!(lean_reading(&bytes).unwrap().peer.as_deref(), expected);
    }
}

#[test]
fn wrong_wire_types_are_refused_where_prost_refuses_them() {
    let http_with = |field: Vec<u8>| check_with_http(&[delimited(4, b"/"), field].concat());
    for (bytes, accepted) in [
        // Fields keyward reads.
        (http_with(varint_field(2, 1)), false),
        (http_with(varint_field(3, 1)), false),
        (http_with(varint_field(13, 1)), false),
        (varint_field(1, 1), false),
        (delimited(1, &varint_field(4, 1)), false),
        // Fields it only checks.
        (http_with(varint_field(5, 1)), false),
        (http_with(delimited(9, b"1")), false),
        (delimited(1, &varint_field(2, 1)), false),
        (
            delimited(1, &delimited(11, &delimited(1, &varint_field(1, 1)))),
            false,
        ),
        // An unknown field, any wire type.
        (http_with(varint_field(14, 1)), true),
        (http_with(delimited(14, b"\xff")), true),
        // An end-group without its start, a group never closed.
        (http_with(key(14, WireType::EndGroup)), false),
        (http_with(key(14, WireType::StartGroup)), false),
        // Wire types 6 and 7 do not exist.
        (http_with(vec![0x76]), false),
        // A length past the end of its message, and of the request.
        (delimited(1, &delimited(4, &[0x12, 0x05, b'x'][..])), false),
        ([0x0a, 0x80].to_vec(), false),
    ] {
        assert_eq!(agree(&bytes), accepted, "{bytes:02x?}");
    }
}

#[test]
fn nesting_is_limited_where_prost_limits_it() {
    // metadata_context { filter_metadata { "k": Struct nested `depth` deep } }
    let nested = |depth: usize| {
        let mut structure = Vec::new();
        for _ in 0..depth {
            let value = delimited(5, &structure);
            structure = delimited(1, &[delimited(1, b"k"), delimited(2, &value)].concat());
        }
        let metadata = delimited(1, &[delimited(1, b"k"), delimited(2, &structure)].concat());
        delimited(1, &delimited(11, &metadata))
    };
    let outcomes: Vec<bool> = (0..40).map(|depth| agree(&nested(depth))).collect();
    assert!(outcomes[0] && !outcomes[39], "{outcomes:?}");

    // Groups in an unknown field count too.
    let groups = |depth: u32| {
        let mut group = Vec::new();
        for _ in 0..depth {
            group = [
                key(15, WireType::StartGroup),
                group,
                key(15, WireType::EndGroup),
            ]
            .concat();
        }
        check_with_http(&group)
    };
    let outcomes: Vec<bool> = (90..110).map(|depth| agree(&groups(depth))).collect();
    assert!(outcomes[0] && !outcomes[19], "{outcomes:?}");
}

#[test]
fn no_attributes_or_no_http_request_reads_as_none() {
    for bytes in [
        Vec::new(),
        delimited(1, b""),
        delimited(1, &delimited(4, b"")),
        delimited(1, &delimited(1, &delimited(1, &delimited(1, b"")))),
    ] {
        assert!(agree(&bytes));
        assert!(lean_reading(&bytes).unwrap().http.is_none());
    }
    // An empty HTTP request is one.
    assert!(lean_reading(&check_with_http(b"")).unwrap().http.is_some());
}
