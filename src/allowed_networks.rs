//! A key's allowed networks (issue 17): parsing and normalising the CIDRs a
//! caller sends, and the parsed, shared form the key cache holds so that
//! the hot path's check is a scan over a few `IpNet`s with no allocation.
//! No proto types here.
//!
//! Normalisation: a single address becomes its host network (`10.0.0.1` is
//! `10.0.0.1/32`, `2001:db8::1` is `2001:db8::1/128`); IPv6 is written in
//! its canonical short form. A network with host bits set (`10.0.0.1/24`)
//! is **refused**, not silently widened or narrowed: it is usually a typo,
//! and the error names the network that was probably meant.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// At most this many networks per key.
pub const MAX_NETWORKS: usize = 32;

/// Why a list was refused; `field` is `allowed_networks[i]`, or
/// `allowed_networks` for the count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct NetworksError {
    pub field: String,
    pub reason: String,
}

/// Parses one network or address into its normalised form.
pub fn parse_network(raw: &str) -> Result<IpNet, String> {
    let text = raw.trim();
    if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| {
            format!(
                "{:?} is not an IPv4 or IPv6 network like 10.0.0.0/8 or 2001:db8::/32",
                shorten(text)
            )
        })?;
        if net.trunc() != net {
            return Err(format!(
                "{net} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        Ok(net)
    } else {
        let address: IpAddr = text.parse().map_err(|_| {
            format!(
                "{:?} is not an IPv4 or IPv6 address or network",
                shorten(text)
            )
        })?;
        Ok(IpNet::from(address))
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Validates and normalises a caller's list, in its order; a network listed
/// twice (after normalisation) is refused.
pub fn parse(raw: &[String]) -> Result<Vec<String>, NetworksError> {
    if raw.len() > MAX_NETWORKS {
        return Err(NetworksError {
            field: "allowed_networks".into(),
            reason: format!("at most {MAX_NETWORKS} networks, got {}", raw.len()),
        });
    }
    let mut parsed: Vec<IpNet> = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let bad = |reason| NetworksError {
            field: format!("allowed_networks[{i}]"),
            reason,
        };
        let net = parse_network(text).map_err(bad)?;
        if parsed.contains(&net) {
            return Err(bad(format!("{net} is listed twice")));
        }
        parsed.push(net);
    }
    Ok(parsed.iter().map(IpNet::to_string).collect())
}

/// The parsed networks as the key cache holds them, each with its stored
/// text (so a response copies the text rather than formatting the network);
/// empty: any address.
#[derive(Debug, Clone, Default)]
pub struct AllowedNetworks(Arc<[(IpNet, Box<str>)]>);

impl AllowedNetworks {
    /// From stored (normalised) strings. One that no longer parses is
    /// dropped with a warning; if none is left the key stays closed (a key
    /// whose stored allowlist is unreadable is never opened to any address).
    pub fn from_stored(stored: &[String]) -> Self {
        let nets: Vec<(IpNet, Box<str>)> = stored
            .iter()
            .filter_map(|text| match parse_network(text) {
                Ok(net) => Some((net, text.as_str().into())),
                Err(reason) => {
                    tracing::warn!(network = %shorten(text), %reason, "stored allowed network does not parse; ignoring it");
                    None
                }
            })
            .collect();
        if nets.is_empty() && !stored.is_empty() {
            // `0.0.0.0/32` is never a client's address: the key stays denied.
            let closed = IpNet::from(IpAddr::from([0, 0, 0, 0]));
            return Self(Arc::from([(closed, "0.0.0.0/32".into())]));
        }
        Self(nets.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The networks as stored (normalised text).
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, text)| &**text)
    }

    /// The networks, parsed.
    pub fn nets(&self) -> impl ExactSizeIterator<Item = IpNet> + '_ {
        self.0.iter().map(|(net, _)| *net)
    }

    /// Whether a request from `client` may use the key (see [`allows`]).
    pub fn allows(&self, client: Option<IpAddr>) -> bool {
        allows(self.nets(), client)
    }
}

/// Whether a request from `client` may use a key with these networks: any
/// address when there are none; otherwise only a listed one, and never an
/// unknown address. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a
/// dual-stack socket reports) count as their IPv4 address.
pub fn allows(mut networks: impl ExactSizeIterator<Item = IpNet>, client: Option<IpAddr>) -> bool {
    if networks.len() == 0 {
        return true;
    }
    let Some(client) = client else {
        return false;
    };
    let client = client.to_canonical();
    networks.any(|net| net.contains(&client))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn networks_are_normalised_and_bad_ones_named() {
        assert_eq!(
            parse(&strings(&[
                "10.0.0.1",
                "192.168.0.0/16",
                "2001:DB8:0:0::1",
                "2001:db8::/32"
            ]))
            .unwrap(),
            strings(&[
                "10.0.0.1/32",
                "192.168.0.0/16",
                "2001:db8::1/128",
                "2001:db8::/32"
            ])
        );
        for (list, field) in [
            (vec!["10.0.0.1", "nope"], "allowed_networks[1]"),
            (vec!["10.0.0.1/24"], "allowed_networks[0]"),
            (vec!["10.0.0.0/33"], "allowed_networks[0]"),
            (vec!["10.0.0.1", "10.0.0.1/32"], "allowed_networks[1]"),
            (vec![""], "allowed_networks[0]"),
            (vec!["10.0.0.1:80"], "allowed_networks[0]"),
        ] {
            assert_eq!(parse(&strings(&list)).unwrap_err().field, field, "{list:?}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(parse(&many).unwrap_err().field, "allowed_networks");
    }

    #[test]
    fn only_listed_addresses_are_allowed() {
        let allowed = AllowedNetworks::from_stored(&strings(&["10.1.0.0/16", "2001:db8::/32"]));
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(allowed.allows(ip("10.1.2.3")));
        assert!(allowed.allows(ip("::ffff:10.1.2.3")));
        assert!(allowed.allows(ip("2001:db8::7")));
        assert!(!allowed.allows(ip("10.2.0.1")));
        assert!(!allowed.allows(ip("2001:db9::1")));
        assert!(!allowed.allows(None));
        assert!(AllowedNetworks::default().allows(None));
        assert!(!AllowedNetworks::from_stored(&strings(&["garbage"])).allows(ip("0.0.0.1")));
    }
}
