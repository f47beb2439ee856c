//! Network leaves shared by config, the upstream client and the proxy's
//! destination checks: CIDR blocks and the `upstream.resolve` pins.
//!
//! They live here, below all three, so that none of those modules imports
//! another that imports it back.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// An IPv4 or IPv6 CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { network: addr, prefix })
    }

    /// Bits of the network part: the longer, the more specific.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A resolve-map target: an IP (keep the URL's port) or IP:port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveTarget {
    Ip(IpAddr),
    Addr(SocketAddr),
}

pub fn parse_resolve_target(s: &str) -> Option<ResolveTarget> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(ResolveTarget::Addr(addr));
    }
    s.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().ok().map(ResolveTarget::Ip)
}

/// Host names pinned to addresses by config (`upstream.resolve`).
#[derive(Debug, Default)]
pub struct ResolveMap {
    /// Keys are `host:port` or bare `host`, lower-case.
    entries: HashMap<String, ResolveTarget>,
}

impl ResolveMap {
    pub fn new(config: &std::collections::BTreeMap<String, String>) -> ResolveMap {
        let mut entries = HashMap::new();
        for (key, target) in config {
            // Config validation has already rejected unparsable targets.
            if let Some(target) = parse_resolve_target(target) {
                entries.insert(key.to_ascii_lowercase(), target);
            }
        }
        ResolveMap { entries }
    }

    /// The pinned address for `host` (lower-case) and `port`, if any.
    pub fn pinned(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let target = self.entries.get(&format!("{host}:{port}")).or_else(|| self.entries.get(host))?;
        Some(match *target {
            ResolveTarget::Ip(ip) => SocketAddr::new(ip, port),
            ResolveTarget::Addr(addr) => addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks() {
        let c = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(c.contains(ip("127.9.9.9")));
        assert!(!c.contains(ip("128.0.0.1")));
        assert!(!c.contains(ip("::1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("10.0.0.1")));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("example.com/8"), None);
    }

    #[test]
    fn resolve_targets() {
        assert_eq!(
            parse_resolve_target("127.0.0.1:9443"),
            Some(ResolveTarget::Addr("127.0.0.1:9443".parse().unwrap()))
        );
        assert_eq!(parse_resolve_target("::1"), Some(ResolveTarget::Ip("::1".parse().unwrap())));
        assert_eq!(parse_resolve_target("example.com"), None);
    }

    #[test]
    fn pin_prefers_host_and_port_then_host() {
        let mut map = HashMap::new();
        map.insert("api.openai.com:443".to_string(), ResolveTarget::Addr("127.0.0.1:1000".parse().unwrap()));
        map.insert("api.anthropic.com".to_string(), ResolveTarget::Ip("127.0.0.2".parse().unwrap()));
        let c = ResolveMap { entries: map };
        assert_eq!(c.pinned("api.openai.com", 443), Some("127.0.0.1:1000".parse().unwrap()));
        assert_eq!(c.pinned("api.openai.com", 8443), None);
        assert_eq!(c.pinned("api.anthropic.com", 443), Some("127.0.0.2:443".parse().unwrap()));
    }
}
