//! `CachedKey`, a key as the hot path needs it, laid out to be small: at a
//! million cached keys every byte of it is a megabyte (issue 19).
//!
//! One allocation holds every string the key has (`KeyText`): its id,
//! account, name, start, predecessor, metadata and allowed networks,
//! written as the protobuf fields of `keyward.v1.Key` that carry them
//! (fields 1 to 4, then 12 to 14), so that Authenticate's reply copies them
//! as they are instead of building a string per field per call. After those
//! bytes comes an index that is never sent: where each metadata entry and
//! network text lies, and the allowed networks parsed to 18 bytes each (a
//! plain key has none of these, so its text is its wire bytes alone). A
//! restricted key's check and reply read that one allocation, not three
//! more (issue 17's last 5%).
//!
//! Around it: scopes as bit sets over the catalog, timestamps as plain
//! millis (`NONE` for absent), what few keys have (a revocation, a rate
//! limit of their own, a quota) boxed apart, and the last-use atomics: 120
//! bytes, so with its `Arc` counts it fits the allocator's 144-byte size.
//! Nothing here is a proto type: the field numbers below are the only thing
//! this module knows of the wire format, and `grpc/convert.rs` does the
//! rest.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::allowed_networks::{self, AllowedNetworks};
use crate::domain::{KeyId, Quota, QuotaUsage, RateLimit, UnixMillis};
use crate::quotas::{QuotaKey, QuotaSlot};
use crate::rate_limits::{LimitedKey, LimiterSlot};
use crate::scope_catalog::{ScopeCatalog, ScopeSet};
use crate::storage::{KeyRecord, Metadata};

use super::cache_clock_ms;

/// Absent timestamps, in the fields that hold `Option<UnixMillis>` as plain
/// millis (no key is stored at the earliest representable moment).
const NONE: i64 = i64::MIN;

fn pack(at: Option<UnixMillis>) -> i64 {
    at.map_or(NONE, |at| at.0)
}

fn unpack(millis: i64) -> Option<UnixMillis> {
    (millis != NONE).then_some(UnixMillis(millis))
}

/// A key as the hot path needs it: scopes resolved to bit sets, its strings
/// in one allocation, and the in-memory last-use time that the usage
/// flusher writes back.
pub struct CachedKey {
    text: KeyText,
    pub granted: ScopeSet,
    pub effective: ScopeSet,
    pub created_at: UnixMillis,
    expires_at: i64,
    /// The last-use time as stored when this entry was loaded.
    stored_last_used_at: i64,
    /// Unix millis of the last use seen by this replica (0: none).
    last_used_ms: AtomicI64,
    /// When this entry was built, on the cache's clock (`cache_clock_ms`):
    /// a lookup treats an entry older than the cache's ttl as missing.
    pub(super) loaded_ms: u64,
    /// Its rate limiter, once it has needed one (see `rate_limits`).
    pub limiter: LimiterSlot,
    /// Present only for a key that is revoked or has a rate limit or a
    /// quota of its own.
    rarely_set: Option<Box<RarelySet>>,
    /// Set while this key waits in the usage flusher's queue.
    usage_queued: AtomicBool,
}

/// What few cached keys have; a plain key keeps none of it.
#[derive(Debug)]
struct RarelySet {
    revoked_at: Option<UnixMillis>,
    rate_limit: Option<RateLimit>,
    quota: Option<CachedQuota>,
}

/// A key's quota, its use as stored when the entry was loaded, and its
/// counter once it has needed one (see `quotas`).
#[derive(Debug)]
struct CachedQuota {
    quota: Quota,
    stored_usage: QuotaUsage,
    slot: QuotaSlot,
}

impl CachedKey {
    pub fn from_record(record: KeyRecord, catalog: &ScopeCatalog) -> Self {
        let (granted, unknown) =
            catalog.granted_from_names(record.scopes.iter().map(String::as_str));
        if !unknown.is_empty() {
            tracing::warn!(
                key_id = %record.id,
                scopes = ?unknown,
                "stored key holds scopes that are no longer in the catalog; ignoring them"
            );
        }
        Self {
            text: KeyText::new(&record),
            effective: catalog.effective(granted),
            granted,
            created_at: record.created_at,
            expires_at: pack(record.expires_at),
            stored_last_used_at: pack(record.last_used_at),
            last_used_ms: AtomicI64::new(0),
            loaded_ms: cache_clock_ms(),
            limiter: LimiterSlot::default(),
            rarely_set: (record.revoked_at.is_some()
                || record.rate_limit.is_some()
                || record.quota.is_some())
            .then(|| {
                Box::new(RarelySet {
                    revoked_at: record.revoked_at,
                    rate_limit: record.rate_limit,
                    quota: record.quota.map(|quota| CachedQuota {
                        quota,
                        stored_usage: record.quota_usage,
                        slot: QuotaSlot::default(),
                    }),
                })
            }),
            usage_queued: AtomicBool::new(false),
        }
    }

    pub fn id(&self) -> &str {
        self.text.string(Field::Id)
    }

    /// The id as a `KeyId` (an allocation: for tables keyed by id, off the
    /// per-request path).
    pub fn key_id(&self) -> KeyId {
        KeyId::trusted(self.id())
    }

    pub fn account_id(&self) -> &str {
        self.text.string(Field::AccountId)
    }

    pub fn name(&self) -> &str {
        self.text.string(Field::Name)
    }

    pub fn start(&self) -> &str {
        self.text.string(Field::Start)
    }

    /// The key this one replaced (RotateKey).
    pub fn rotated_from(&self) -> Option<&str> {
        Some(self.text.string(Field::RotatedFrom)).filter(|id| !id.is_empty())
    }

    pub fn expires_at(&self) -> Option<UnixMillis> {
        unpack(self.expires_at)
    }

    pub fn revoked_at(&self) -> Option<UnixMillis> {
        self.rarely_set.as_ref().and_then(|rare| rare.revoked_at)
    }

    /// Its own rate limit (the configured default applies otherwise).
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rarely_set.as_ref().and_then(|rare| rare.rate_limit)
    }

    fn cached_quota(&self) -> Option<&CachedQuota> {
        self.rarely_set
            .as_ref()
            .and_then(|rare| rare.quota.as_ref())
    }

    pub fn quota(&self) -> Option<Quota> {
        self.cached_quota().map(|cached| cached.quota)
    }

    /// The owner's labels, in name order.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        (0..self.text.metadata_count()).map(|i| self.text.metadata_entry(i))
    }

    /// One metadata value by name.
    pub fn metadata_value(&self, name: &str) -> Option<&str> {
        self.text.metadata_value(name)
    }

    /// The allowed networks as stored (normalised text); empty: any address.
    pub fn allowed_networks(&self) -> impl ExactSizeIterator<Item = &str> {
        (0..self.text.network_count()).map(|i| self.text.network_text(i))
    }

    pub fn has_allowed_networks(&self) -> bool {
        self.text.network_count() > 0
    }

    /// Whether a request from `client` may use the key (see
    /// `allowed_networks::allows`). Reads the parsed networks from the
    /// key's own allocation; nothing allocates.
    pub fn allows(&self, client: Option<IpAddr>) -> bool {
        allowed_networks::allows(
            (0..self.text.network_count()).map(|i| self.text.network(i)),
            client,
        )
    }

    /// The fields Authenticate's reply copies as they are: the key's whole
    /// text allocation, `bytes[..head]` (fields 1 to 4) and
    /// `bytes[head..end]` (12 to 14). An event replaces the whole entry, so
    /// they never go stale.
    pub fn encoded_fields(&self) -> (&[u8], usize, usize) {
        (&self.text.bytes, self.text.head_end(), self.text.tail_end())
    }

    /// The key as its rate limiter sees it.
    pub fn limited(&self) -> LimitedKey<'_> {
        LimitedKey {
            id: self.id(),
            rate_limit: self.rate_limit(),
            slot: &self.limiter,
        }
    }

    /// The key as the quota table sees it, when it has a quota.
    pub fn quota_key(&self) -> Option<QuotaKey<'_>> {
        self.cached_quota().map(|cached| QuotaKey {
            id: self.id(),
            quota: cached.quota,
            stored: cached.stored_usage,
            slot: &cached.slot,
        })
    }

    /// Its quota counter, once it has needed one.
    pub fn quota_slot(&self) -> Option<&QuotaSlot> {
        self.cached_quota().map(|cached| &cached.slot)
    }

    pub fn is_expired(&self, now: UnixMillis) -> bool {
        self.expires_at().is_some_and(|at| at <= now)
    }

    /// Notes a use. Returns true when the key was not yet queued for the
    /// usage flusher (the caller then queues it). Writes the shared time at
    /// most once per second per key, to keep hot keys' cache lines quiet.
    pub fn note_use(&self, now: UnixMillis) -> bool {
        if now.0 - self.last_used_ms.load(Ordering::Relaxed) >= 1000 {
            self.last_used_ms.fetch_max(now.0, Ordering::Relaxed);
        }
        !self.usage_queued.load(Ordering::Relaxed)
            && !self.usage_queued.swap(true, Ordering::AcqRel)
    }

    /// Takes the pending last-use time and lets the key be queued again.
    pub fn take_use(&self) -> Option<UnixMillis> {
        self.usage_queued.store(false, Ordering::Release);
        let at = self.last_used_ms.load(Ordering::Relaxed);
        (at > 0).then_some(UnixMillis(at))
    }

    /// The freshest last-use time this replica knows.
    pub fn last_used_at(&self) -> Option<UnixMillis> {
        let seen = self.last_used_ms.load(Ordering::Relaxed);
        match unpack(self.stored_last_used_at) {
            Some(stored) if stored.0 >= seen => Some(stored),
            _ if seen > 0 => Some(UnixMillis(seen)),
            _ => None,
        }
    }
}

/// The buffer `encoded_fields` indexes, so that a reply can hold the key
/// itself as the owner of the bytes it splices (see `grpc/convert.rs`).
impl AsRef<[u8]> for CachedKey {
    fn as_ref(&self) -> &[u8] {
        &self.text.bytes
    }
}

impl std::fmt::Debug for CachedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedKey")
            .field("id", &self.id())
            .field("account_id", &self.account_id())
            .field("name", &self.name())
            .field("start", &self.start())
            .field("granted", &self.granted)
            .field("effective", &self.effective)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at())
            .field("revoked_at", &self.revoked_at())
            .field("rotated_from", &self.rotated_from())
            .field("rate_limit", &self.rate_limit())
            .field("quota", &self.cached_quota())
            .field("metadata", &self.metadata().collect::<Vec<_>>())
            .field(
                "allowed_networks",
                &self.allowed_networks().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The strings of `CachedKey` found by walking `KeyText`'s fields.
#[derive(Clone, Copy)]
enum Field {
    Id,
    AccountId,
    Name,
    Start,
    RotatedFrom,
}

/// `keyward.v1.Key`'s field numbers for what `KeyText` holds.
const KEY_ID: u32 = 1;
const KEY_ACCOUNT_ID: u32 = 2;
const KEY_NAME: u32 = 3;
const KEY_START: u32 = 4;
const KEY_ROTATED_FROM: u32 = 12;
const KEY_METADATA: u32 = 13;
const KEY_ALLOWED_NETWORKS: u32 = 14;
/// A map entry's key and value.
const ENTRY_NAME: u32 = 1;
const ENTRY_VALUE: u32 = 2;

/// Bytes of one parsed network in the index: IPv6 flag, prefix length,
/// 16 address bytes (an IPv4 address in the first 4).
const NETWORK_BYTES: usize = 18;

/// A key's strings in one allocation:
///
/// ```text
/// [fields 1-4][fields 12-14][index: u16 spans][parsed networks]
///  ^0          ^head_end     ^tail_end
/// ```
///
/// `Field`'s strings are found by walking the fields' framing (a tag and a
/// length each; at most four fields before the one wanted), not indexed:
/// their index entries were 20 bytes a key (at a million keys, 29 to 55 B
/// a key of resident memory came off with them; see BENCHMARKS.md),
/// against nanoseconds to walk. The index holds a (start, end) pair of
/// little-endian `u16` offsets for each metadata entry's name and value,
/// then for each network's text. Every string is whole UTF-8 copied from a
/// `str`. A key too large for 16-bit offsets (far past
/// what validation lets through) keeps as many of its metadata entries and
/// networks as fit; its reply then lacks the rest, and a key that lost
/// networks is closed to every address rather than opened.
#[derive(Debug)]
struct KeyText {
    /// A `Box`, not an `Arc`: a reply that sends these bytes holds the
    /// whole `CachedKey` (see `AsRef` below), so they need no count of their
    /// own (16 bytes a key).
    bytes: Box<[u8]>,
    head_end: u16,
    tail_end: u16,
    metadata_count: u8,
    network_count: u8,
}

impl KeyText {
    fn new(record: &KeyRecord) -> Self {
        let networks = AllowedNetworks::from_stored(&record.allowed_networks);
        let mut writer = Writer::default();
        writer.string(KEY_ID, record.id.as_str());
        writer.string(KEY_ACCOUNT_ID, record.account_id.as_str());
        writer.string(KEY_NAME, &record.name);
        writer.string(KEY_START, &record.start);
        let head_end = writer.bytes.len();
        writer.string(
            KEY_ROTATED_FROM,
            record.rotated_from.as_ref().map_or("", KeyId::as_str),
        );
        let metadata = writer.metadata(&record.metadata);
        let network_texts = writer.networks(networks.texts());
        let tail_end = writer.bytes.len();
        let mut index = Vec::with_capacity(
            4 * (2 * metadata.len() + networks.len()) + NETWORK_BYTES * networks.len(),
        );
        let mut push = |span: &Range<usize>| {
            for offset in [span.start, span.end] {
                index.extend_from_slice(&(offset as u16).to_le_bytes());
            }
        };
        metadata.iter().flatten().for_each(&mut push);
        let network_count = if network_texts.len() == networks.len() {
            network_texts.iter().for_each(&mut push);
            for net in networks.nets() {
                index.extend_from_slice(&pack_network(net));
            }
            networks.len()
        } else {
            // Closed, never opened: `0.0.0.0/32` is no client's address.
            tracing::warn!(key_id = %record.id, "allowed networks too large to cache; the key is closed to every address");
            push(&(0..0));
            index.extend_from_slice(&pack_network(IpNet::from(IpAddr::from([0, 0, 0, 0]))));
            1
        };
        writer.bytes.extend_from_slice(&index);
        Self {
            bytes: writer.bytes.into_boxed_slice(),
            head_end: head_end as u16,
            tail_end: tail_end as u16,
            metadata_count: metadata.len() as u8,
            network_count: network_count as u8,
        }
    }

    fn head_end(&self) -> usize {
        usize::from(self.head_end)
    }

    fn tail_end(&self) -> usize {
        usize::from(self.tail_end)
    }

    fn metadata_count(&self) -> usize {
        usize::from(self.metadata_count)
    }

    fn network_count(&self) -> usize {
        usize::from(self.network_count)
    }

    /// Span `n` of the index.
    fn span(&self, n: usize) -> Range<usize> {
        let at = self.tail_end() + 4 * n;
        let offset = |i: usize| usize::from(u16::from_le_bytes([self.bytes[i], self.bytes[i + 1]]));
        offset(at)..offset(at + 2)
    }

    fn text(&self, span: Range<usize>) -> &str {
        // Always whole UTF-8 (copied from a `str`); never empty by mistake.
        self.bytes
            .get(span)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or_default()
    }

    /// `field`'s string: the fields before it are skipped by their framing
    /// (written here in ascending field order, each present only when not
    /// empty, as protobuf writes them).
    fn string(&self, field: Field) -> &str {
        let (number, mut at, end) = match field {
            Field::Id => (KEY_ID, 0, self.head_end()),
            Field::AccountId => (KEY_ACCOUNT_ID, 0, self.head_end()),
            Field::Name => (KEY_NAME, 0, self.head_end()),
            Field::Start => (KEY_START, 0, self.head_end()),
            Field::RotatedFrom => (KEY_ROTATED_FROM, self.head_end(), self.tail_end()),
        };
        while at < end {
            let tag = self.varint(&mut at);
            let len = self.varint(&mut at);
            let span = at..at + len;
            match (tag >> 3).cmp(&(number as usize)) {
                std::cmp::Ordering::Less => at = span.end,
                std::cmp::Ordering::Equal => return self.text(span),
                std::cmp::Ordering::Greater => break,
            }
        }
        ""
    }

    /// The varint at `at` (a tag or a length this module wrote: under
    /// 2^16), moving `at` past it.
    fn varint(&self, at: &mut usize) -> usize {
        let mut value = 0;
        for shift in [0, 7, 14] {
            let Some(&byte) = self.bytes.get(*at) else {
                break;
            };
            *at += 1;
            value |= usize::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        value
    }

    fn metadata_entry(&self, i: usize) -> (&str, &str) {
        let first = 2 * i;
        (self.text(self.span(first)), self.text(self.span(first + 1)))
    }

    fn metadata_value(&self, name: &str) -> Option<&str> {
        // Entries are in name order (written from a `BTreeMap`).
        let (mut low, mut high) = (0, self.metadata_count());
        while low < high {
            let middle = (low + high) / 2;
            let (entry, value) = self.metadata_entry(middle);
            match entry.cmp(name) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(value),
            }
        }
        None
    }

    fn network_text(&self, i: usize) -> &str {
        self.text(self.span(2 * self.metadata_count() + i))
    }

    fn network(&self, i: usize) -> IpNet {
        let spans = 2 * self.metadata_count() + self.network_count();
        let at = self.tail_end() + 4 * spans + NETWORK_BYTES * i;
        unpack_network(&self.bytes[at..at + NETWORK_BYTES])
    }
}

fn pack_network(net: IpNet) -> [u8; NETWORK_BYTES] {
    let mut packed = [0; NETWORK_BYTES];
    packed[1] = net.prefix_len();
    match net {
        IpNet::V4(net) => packed[2..6].copy_from_slice(&net.addr().octets()),
        IpNet::V6(net) => {
            packed[0] = 1;
            packed[2..].copy_from_slice(&net.addr().octets());
        }
    }
    packed
}

fn unpack_network(packed: &[u8]) -> IpNet {
    let prefix = packed[1];
    let mut octets = [0; 16];
    octets.copy_from_slice(&packed[2..]);
    let net = if packed[0] == 1 {
        Ipv6Net::new(Ipv6Addr::from(octets), prefix).map(IpNet::V6)
    } else {
        let v4 = [octets[0], octets[1], octets[2], octets[3]];
        Ipv4Net::new(Ipv4Addr::from(v4), prefix).map(IpNet::V4)
    };
    // Packed from a valid network; the fallback is no client's address.
    net.unwrap_or_else(|_| IpNet::from(IpAddr::from([0, 0, 0, 0])))
}

/// Writes protobuf fields and notes where each string's bytes went.
#[derive(Default)]
struct Writer {
    bytes: Vec<u8>,
}

/// Room left for the index after the strings, so every string's offsets
/// fit 16 bits: the index of a key at the limits of validation is under
/// 200 bytes.
const STRING_BYTES_LIMIT: usize = u16::MAX as usize - 1024;

impl Writer {
    /// Field `number` holding `text` (nothing for an empty string, as
    /// protobuf writes it); returns where `text`'s bytes lie.
    fn string(&mut self, number: u32, text: &str) -> Range<usize> {
        if !text.is_empty() && self.fits(text.len() + 8) {
            prost::encoding::encode_key(
                number,
                prost::encoding::WireType::LengthDelimited,
                &mut self.bytes,
            );
            prost::encoding::encode_varint(text.len() as u64, &mut self.bytes);
        } else {
            return self.bytes.len()..self.bytes.len();
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(text.as_bytes());
        start..self.bytes.len()
    }

    fn fits(&self, more: usize) -> bool {
        self.bytes.len() + more <= STRING_BYTES_LIMIT
    }

    /// Field 13, one map entry per metadata entry, in name order (empty
    /// values left out, as protobuf writes them); returns the name's and
    /// value's spans of each entry written.
    fn metadata(&mut self, metadata: &Metadata) -> Vec<[Range<usize>; 2]> {
        let mut spans = Vec::with_capacity(metadata.len());
        for (name, value) in metadata.iter().take(usize::from(u8::MAX)) {
            let entry_len = field_len(name) + field_len(value);
            if !self.fits(entry_len + 16) {
                tracing::warn!(
                    "metadata too large to cache; dropping the entries from {name:?} on"
                );
                break;
            }
            prost::encoding::encode_key(
                KEY_METADATA,
                prost::encoding::WireType::LengthDelimited,
                &mut self.bytes,
            );
            prost::encoding::encode_varint(entry_len as u64, &mut self.bytes);
            let name_span = self.string(ENTRY_NAME, name);
            let value_span = self.string(ENTRY_VALUE, value);
            spans.push([name_span, value_span]);
        }
        spans
    }

    /// Field 14, one string per network; returns the spans written.
    fn networks<'a>(&mut self, texts: impl Iterator<Item = &'a str>) -> Vec<Range<usize>> {
        let mut spans = Vec::new();
        for text in texts.take(usize::from(u8::MAX)) {
            if !self.fits(text.len() + 8) {
                break;
            }
            spans.push(self.string(KEY_ALLOWED_NETWORKS, text));
        }
        spans
    }
}

/// Bytes a non-empty string field takes (tag, length, bytes); 0 if empty.
fn field_len(text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(text.len() as u64) + text.len()
    }
}

#[cfg(test)]
mod tests;
