//! `AuthenticateReply`: `AuthenticateResponse` as the server writes it.
//!
//! Byte for byte the same message on the wire (clients decode it as
//! `AuthenticateResponse`), but the key is carried as an [`EncodedKey`]: a
//! `Key` built per call, plus the fields that never change while the key is
//! cached (its id, account, name, start, predecessor, metadata and allowed
//! networks), encoded once per cached key. Building those per call meant
//! allocating a string per field and per entry, and a `HashMap` per answer
//! (issue 17 measured a key with four metadata entries and two networks at
//! up to 1.75 times a plain key); splicing their encoding in costs copies
//! of bytes, whatever the key holds.

use std::fmt;
use std::sync::Arc;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::keyward::v1::{Denial, Key, RateLimitStatus};

/// The server's `AuthenticateResponse` (same field numbers, same meaning).
#[derive(Clone, Default, PartialEq)]
pub struct AuthenticateReply {
    pub allowed: bool,
    pub key: Option<EncodedKey>,
    pub denial: Option<Denial>,
    pub rate_limit: Option<RateLimitStatus>,
    pub cacheable: bool,
    pub quota_remaining: Option<u64>,
}

/// A `Key` in parts: `key`, built per call; `encoded`, the fields encoded
/// once per cached key; and the two scope lists picked from entries encoded
/// once per catalog (`key` leaves all of those empty). `encoded`'s head
/// (fields 1 to 4) is written first, then `scopes` (5), `key`'s fields (6
/// to 10), `effective_scopes` (11) and `encoded`'s tail (12 to 14). Readers
/// take fields in any order; for a key without a quota (field 15) the bytes
/// are exactly what prost writes.
#[derive(Clone, PartialEq)]
pub struct EncodedKey {
    pub key: Key,
    pub encoded: Option<EncodedFields>,
    pub scopes: Option<PickedEntries>,
    pub effective_scopes: Option<PickedEntries>,
}

/// Entries of a repeated field, each encoded once (its tag, length and
/// value) in `table`, and the ones this message has: bit `i` of `picked`
/// sends `table[i]`, in table order. A key's scope names per call were a
/// `Vec` and a `String` per name, twice; this is two reference counts.
#[derive(Clone, PartialEq)]
pub struct PickedEntries {
    pub table: Arc<[Box<[u8]>]>,
    pub picked: u128,
}

impl PickedEntries {
    fn entries(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.picked;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let at = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(self.table.get(at).map_or(&[][..], |entry| &entry[..]))
        })
    }

    fn len(&self) -> usize {
        self.entries().map(<[u8]>::len).sum()
    }

    fn write(&self, buf: &mut impl BufMut) {
        for entry in self.entries() {
            buf.put_slice(entry);
        }
    }
}

fn picked_len(picked: &Option<PickedEntries>) -> usize {
    picked.as_ref().map_or(0, PickedEntries::len)
}

/// Fields of a `Key` encoded ahead of time, in a buffer that may hold more
/// (a cached key keeps its own index after them): `bytes[..head]` goes
/// before the per-call fields, `bytes[head..end]` after them, and the rest
/// is never sent. `bytes` is whatever owns the buffer: the server passes
/// its cached key itself, so the buffer needs no reference count of its own.
#[derive(Clone)]
pub struct EncodedFields {
    pub bytes: Arc<dyn AsRef<[u8]> + Send + Sync>,
    pub head: usize,
    pub end: usize,
}

impl EncodedFields {
    fn head(&self) -> &[u8] {
        &(*self.bytes).as_ref()[..self.head]
    }

    fn tail(&self) -> &[u8] {
        &(*self.bytes).as_ref()[self.head..self.end]
    }
}

impl PartialEq for EncodedFields {
    fn eq(&self, other: &Self) -> bool {
        self.head() == other.head() && self.tail() == other.tail()
    }
}

impl EncodedKey {
    /// The whole key, decoded (for tests and tools; the server only encodes).
    pub fn to_key(&self) -> Key {
        let mut bytes = Vec::new();
        self.write_body(&mut bytes);
        Key::decode(bytes.as_slice()).expect("an EncodedKey holds an encoded Key")
    }

    fn body_len(&self) -> usize {
        self.key.encoded_len()
            + self.encoded.as_ref().map_or(0, |encoded| encoded.end)
            + picked_len(&self.scopes)
            + picked_len(&self.effective_scopes)
    }

    /// The `Key`'s fields in field order (see the type's comment).
    fn write_body(&self, buf: &mut impl BufMut) {
        if let Some(encoded) = &self.encoded {
            buf.put_slice(encoded.head());
        }
        if let Some(scopes) = &self.scopes {
            scopes.write(buf);
        }
        self.key.encode_raw(buf);
        if let Some(effective) = &self.effective_scopes {
            effective.write(buf);
        }
        if let Some(encoded) = &self.encoded {
            buf.put_slice(encoded.tail());
        }
    }
}

impl AuthenticateReply {
    /// The reply as clients see it (for tests and tools).
    pub fn to_response(&self) -> crate::AuthenticateResponse {
        crate::AuthenticateResponse {
            allowed: self.allowed,
            key: self.key.as_ref().map(EncodedKey::to_key),
            denial: self.denial.clone(),
            rate_limit: self.rate_limit,
            cacheable: self.cacheable,
            quota_remaining: self.quota_remaining,
        }
    }
}

impl Message for AuthenticateReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.allowed {
            encoding::bool::encode(1, &self.allowed, buf);
        }
        if let Some(key) = &self.key {
            encoding::encode_key(2, WireType::LengthDelimited, buf);
            encoding::encode_varint(key.body_len() as u64, buf);
            key.write_body(buf);
        }
        if let Some(denial) = &self.denial {
            encoding::message::encode(3, denial, buf);
        }
        if let Some(rate_limit) = &self.rate_limit {
            encoding::message::encode(4, rate_limit, buf);
        }
        if self.cacheable {
            encoding::bool::encode(5, &self.cacheable, buf);
        }
        if let Some(remaining) = &self.quota_remaining {
            encoding::uint64::encode(6, remaining, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::bool::merge(wire_type, &mut self.allowed, buf, ctx),
            2 => {
                let mut key = self.key.take().map(|key| key.to_key()).unwrap_or_default();
                encoding::message::merge(wire_type, &mut key, buf, ctx)?;
                self.key = Some(EncodedKey {
                    key,
                    encoded: None,
                    scopes: None,
                    effective_scopes: None,
                });
                Ok(())
            }
            3 => encoding::message::merge(
                wire_type,
                self.denial.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            4 => encoding::message::merge(
                wire_type,
                self.rate_limit.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            5 => encoding::bool::merge(wire_type, &mut self.cacheable, buf, ctx),
            6 => {
                encoding::uint64::merge(wire_type, self.quota_remaining.get_or_insert(0), buf, ctx)
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = 0;
        if self.allowed {
            len += encoding::bool::encoded_len(1, &self.allowed);
        }
        if let Some(key) = &self.key {
            let body = key.body_len();
            len += encoding::key_len(2) + encoding::encoded_len_varint(body as u64) + body;
        }
        if let Some(denial) = &self.denial {
            len += encoding::message::encoded_len(3, denial);
        }
        if let Some(rate_limit) = &self.rate_limit {
            len += encoding::message::encoded_len(4, rate_limit);
        }
        if self.cacheable {
            len += encoding::bool::encoded_len(5, &self.cacheable);
        }
        if let Some(remaining) = &self.quota_remaining {
            len += encoding::uint64::encoded_len(6, remaining);
        }
        len
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl fmt::Debug for AuthenticateReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_response(), f)
    }
}

impl fmt::Debug for EncodedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_key(), f)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::denial::Reason;
    use crate::{AuthenticateResponse, RateLimit};

    fn timestamp(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    /// A key with every field set, as a cached key's answer carries it.
    fn full_key() -> Key {
        Key {
            id: "key_01".into(),
            account_id: "acct_é".into(),
            name: "deploy bot".into(),
            start: "kw_AbC".into(),
            scopes: vec!["orders:read".into(), "orders:write".into()],
            created_at: Some(timestamp(1_700_000_000, 123_000_000)),
            expires_at: Some(timestamp(1_800_000_000, 0)),
            revoked_at: None,
            last_used_at: Some(timestamp(1_750_000_000, 5)),
            rate_limit: Some(RateLimit {
                requests: 100,
                per_seconds: 60,
            }),
            effective_scopes: vec!["orders:read".into(), "orders:write".into()],
            rotated_from: "key_00".into(),
            metadata: HashMap::from([
                ("plan".to_owned(), "pro".to_owned()),
                ("region".to_owned(), "eu-west-1".to_owned()),
            ]),
            allowed_networks: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
            quota: Some(crate::Quota {
                requests: 1000,
                refill: crate::quota::Refill::Daily as i32,
            }),
        }
    }

    /// `key` as the server splits it: fields 1 to 4 ahead, 12 to 14 after,
    /// in one buffer followed by bytes that must never be sent.
    fn split(key: &Key) -> EncodedKey {
        let head = Key {
            id: key.id.clone(),
            account_id: key.account_id.clone(),
            name: key.name.clone(),
            start: key.start.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let tail = Key {
            rotated_from: key.rotated_from.clone(),
            metadata: key.metadata.clone(),
            allowed_networks: key.allowed_networks.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut bytes = [head.as_slice(), tail.as_slice()].concat();
        bytes.extend_from_slice(b"\xff\xffnot part of the key");
        // Each list as picked from a catalog's table, which also holds
        // names the key does not have (at even positions, never sent).
        let picked = |names: &[String], field: fn(String) -> Key| {
            let mut table = Vec::new();
            let mut picked = 0u128;
            for name in names {
                table.push(field("not:this".into()).encode_to_vec().into_boxed_slice());
                picked |= 1 << table.len();
                table.push(field(name.clone()).encode_to_vec().into_boxed_slice());
            }
            PickedEntries {
                table: table.into(),
                picked,
            }
        };
        EncodedKey {
            scopes: Some(picked(&key.scopes, |name| Key {
                scopes: vec![name],
                ..Default::default()
            })),
            effective_scopes: Some(picked(&key.effective_scopes, |name| Key {
                effective_scopes: vec![name],
                ..Default::default()
            })),
            key: Key {
                scopes: Vec::new(),
                effective_scopes: Vec::new(),
                id: String::new(),
                account_id: String::new(),
                name: String::new(),
                start: String::new(),
                rotated_from: String::new(),
                metadata: HashMap::new(),
                allowed_networks: Vec::new(),
                ..key.clone()
            },
            encoded: Some(EncodedFields {
                bytes: Arc::new(bytes),
                head: head.len(),
                end: head.len() + tail.len(),
            }),
        }
    }

    /// Each shape of reply, decoded by the generated `AuthenticateResponse`,
    /// is exactly the response the generated type would have carried.
    #[test]
    fn every_reply_reads_back_as_the_generated_response() {
        let full = full_key();
        let plain = Key {
            metadata: HashMap::new(),
            allowed_networks: Vec::new(),
            rotated_from: String::new(),
            ..full.clone()
        };
        let networks_only = Key {
            metadata: HashMap::new(),
            ..full.clone()
        };
        let denial = Denial {
            reason: Reason::InsufficientScope as i32,
            code: "forbidden".into(),
            message: "missing scope".into(),
            http_status: 403,
            ..Default::default()
        };
        let status = RateLimitStatus {
            limit: 100,
            remaining: 99,
            ..Default::default()
        };
        let mut cases = vec![(
            AuthenticateReply::default(),
            AuthenticateResponse::default(),
        )];
        for key in [&full, &plain, &networks_only] {
            cases.push((
                AuthenticateReply {
                    allowed: true,
                    key: Some(split(key)),
                    rate_limit: Some(status),
                    cacheable: true,
                    ..Default::default()
                },
                AuthenticateResponse {
                    allowed: true,
                    key: Some(key.clone()),
                    rate_limit: Some(status),
                    cacheable: true,
                    ..Default::default()
                },
            ));
            cases.push((
                AuthenticateReply {
                    key: Some(split(key)),
                    denial: Some(denial.clone()),
                    ..Default::default()
                },
                AuthenticateResponse {
                    key: Some(key.clone()),
                    denial: Some(denial.clone()),
                    ..Default::default()
                },
            ));
        }
        // A quota's remainder: set (0 included, which is not the default
        // for an optional field) and unset.
        for remaining in [Some(0), Some(41), None] {
            cases.push((
                AuthenticateReply {
                    allowed: true,
                    key: Some(split(&plain)),
                    quota_remaining: remaining,
                    ..Default::default()
                },
                AuthenticateResponse {
                    allowed: true,
                    key: Some(plain.clone()),
                    quota_remaining: remaining,
                    ..Default::default()
                },
            ));
        }
        cases.push((
            AuthenticateReply {
                denial: Some(denial.clone()),
                ..Default::default()
            },
            AuthenticateResponse {
                denial: Some(denial),
                ..Default::default()
            },
        ));
        for (reply, expected) in cases {
            let bytes = reply.encode_to_vec();
            assert_eq!(bytes.len(), reply.encoded_len(), "{expected:?}");
            let decoded = AuthenticateResponse::decode(bytes.as_slice()).unwrap();
            assert_eq!(decoded, expected);
            assert_eq!(reply.to_response(), expected);
            // Decoding into the reply type keeps the same message.
            let again = AuthenticateReply::decode(bytes.as_slice()).unwrap();
            assert_eq!(again.to_response(), expected);
        }
    }

    /// The spliced reply is the generated encoding, byte for byte (prost
    /// writes fields in number order: 1 to 4 come first and, without a
    /// quota, 12 to 14 last).
    #[test]
    fn a_spliced_reply_is_byte_identical() {
        // One metadata entry: a HashMap's order would vary between encodings.
        let key = Key {
            metadata: HashMap::from([("plan".to_owned(), "pro".to_owned())]),
            quota: None,
            ..full_key()
        };
        let reply = AuthenticateReply {
            allowed: true,
            key: Some(split(&key)),
            cacheable: true,
            ..Default::default()
        };
        let generated = AuthenticateResponse {
            allowed: true,
            key: Some(key),
            cacheable: true,
            ..Default::default()
        };
        assert_eq!(reply.encode_to_vec(), generated.encode_to_vec());
    }
}
