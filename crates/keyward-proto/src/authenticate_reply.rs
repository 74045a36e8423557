//! `AuthenticateReply`: `AuthenticateResponse` as the server writes it.
//!
//! Byte for byte the same message on the wire (clients decode it as
//! `AuthenticateResponse`), but the key is carried as an [`EncodedKey`]: the
//! encoding of everything in `Key` that does not change while the key sits
//! in a replica's cache, made once per cached key, plus `last_used_at`,
//! which does. Building a `Key` per call meant allocating every string and
//! the metadata map again for each answer (issue 17 measured a key with four
//! metadata entries at up to 1.75 times a plain one); splicing the encoded
//! part in costs one copy of bytes, whatever the key holds.

use std::fmt;
use std::sync::Arc;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::keyward::v1::{Denial, Key, RateLimitStatus};

/// `Key.last_used_at`'s field number: the one part of a cached key's reply
/// that is written per call.
const LAST_USED_AT: u32 = 9;

/// The server's `AuthenticateResponse` (same field numbers, same meaning).
#[derive(Clone, Default, PartialEq)]
pub struct AuthenticateReply {
    pub allowed: bool,
    pub key: Option<EncodedKey>,
    pub denial: Option<Denial>,
    pub rate_limit: Option<RateLimitStatus>,
    pub cacheable: bool,
}

/// A `Key` as bytes: `fixed` is a `Key` encoded without `last_used_at`
/// (made once per cached key, shared), `last_used_at` is appended per call.
/// Protobuf readers accept fields in any order, so the appended field needs
/// no place among the others.
#[derive(Clone, PartialEq)]
pub struct EncodedKey {
    pub fixed: Arc<[u8]>,
    pub last_used_at: Option<prost_types::Timestamp>,
}

impl EncodedKey {
    /// `key`'s unchanging part, encoded: `key.last_used_at` is left out.
    pub fn encode_fixed(key: &Key) -> Arc<[u8]> {
        debug_assert!(key.last_used_at.is_none(), "last_used_at is per call");
        key.encode_to_vec().into()
    }

    /// The whole key, decoded (for tests and tools; the server only encodes).
    pub fn to_key(&self) -> Key {
        let mut bytes = self.fixed.to_vec();
        if let Some(at) = &self.last_used_at {
            encoding::message::encode(LAST_USED_AT, at, &mut bytes);
        }
        Key::decode(bytes.as_slice()).expect("an EncodedKey holds an encoded Key")
    }

    fn body_len(&self) -> usize {
        self.fixed.len()
            + self
                .last_used_at
                .as_ref()
                .map_or(0, |at| encoding::message::encoded_len(LAST_USED_AT, at))
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
            buf.put_slice(&key.fixed);
            if let Some(at) = &key.last_used_at {
                encoding::message::encode(LAST_USED_AT, at, buf);
            }
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
                // Kept whole as the fixed part: a decoded reply has nothing
                // to append.
                let mut bytes = Vec::new();
                encoding::bytes::merge(wire_type, &mut bytes, buf, ctx)?;
                Key::decode(bytes.as_slice())?;
                self.key = Some(EncodedKey {
                    fixed: bytes.into(),
                    last_used_at: None,
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
            last_used_at: None,
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
        }
    }

    /// Each shape of reply, decoded by the generated `AuthenticateResponse`,
    /// is exactly the response the generated type would have carried.
    #[test]
    fn every_reply_reads_back_as_the_generated_response() {
        let key = full_key();
        let last_used = timestamp(1_750_000_000, 5);
        let expected_key = Key {
            last_used_at: Some(last_used),
            ..key.clone()
        };
        let denial = Denial {
            reason: Reason::InsufficientScope as i32,
            code: "forbidden".into(),
            message: "missing scope".into(),
            http_status: 403,
            ..Default::default()
        };
        let cases = [
            (
                AuthenticateReply::default(),
                AuthenticateResponse::default(),
            ),
            (
                AuthenticateReply {
                    allowed: true,
                    key: Some(EncodedKey {
                        fixed: EncodedKey::encode_fixed(&key),
                        last_used_at: Some(last_used),
                    }),
                    rate_limit: Some(RateLimitStatus {
                        limit: 100,
                        remaining: 99,
                        ..Default::default()
                    }),
                    cacheable: true,
                    ..Default::default()
                },
                AuthenticateResponse {
                    allowed: true,
                    key: Some(expected_key),
                    rate_limit: Some(RateLimitStatus {
                        limit: 100,
                        remaining: 99,
                        ..Default::default()
                    }),
                    cacheable: true,
                    ..Default::default()
                },
            ),
            (
                AuthenticateReply {
                    key: Some(EncodedKey {
                        fixed: EncodedKey::encode_fixed(&key),
                        last_used_at: None,
                    }),
                    denial: Some(denial.clone()),
                    ..Default::default()
                },
                AuthenticateResponse {
                    key: Some(key.clone()),
                    denial: Some(denial.clone()),
                    ..Default::default()
                },
            ),
            (
                AuthenticateReply {
                    denial: Some(denial.clone()),
                    ..Default::default()
                },
                AuthenticateResponse {
                    denial: Some(denial),
                    ..Default::default()
                },
            ),
        ];
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

    /// Without `last_used_at` the spliced reply is the generated encoding,
    /// byte for byte (prost writes fields in number order, as we do).
    #[test]
    fn a_reply_without_last_use_is_byte_identical() {
        let key = full_key();
        // One metadata entry: a HashMap's order would vary between encodings.
        let key = Key {
            metadata: HashMap::from([("plan".to_owned(), "pro".to_owned())]),
            ..key
        };
        let reply = AuthenticateReply {
            allowed: true,
            key: Some(EncodedKey {
                fixed: EncodedKey::encode_fixed(&key),
                last_used_at: None,
            }),
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
