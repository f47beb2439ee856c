//! Where the forward proxy may connect: allowed ports, and no private,
//! loopback or link-local destinations unless config allows them.
//!
//! A name is resolved exactly once and the proxy connects to the address it
//! checked, so a DNS answer that changes between check and connect (DNS
//! rebinding) cannot smuggle a connection onto the internal network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::config::ProxyConfig;
use crate::dispatch::cloud::ResolveMap;

/// Why a destination is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("port {0} is not allowed through this proxy")]
    Port(u16),
    #[error("{host} resolves to {addr}, a private, loopback or link-local address")]
    Private { host: String, addr: IpAddr },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
}

impl Refusal {
    /// Short label for metrics and audit reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Port(_) => "port",
            Refusal::Private { .. } => "private_address",
            Refusal::Resolve { .. } => "resolve",
        }
    }
}

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

/// Addresses that are not the public internet: loopback, RFC 1918, carrier
/// NAT, link-local (cloud metadata lives there), unique-local, unspecified,
/// multicast and broadcast. IPv4-mapped IPv6 is judged as the IPv4 it holds.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || first & 0xfe00 == 0xfc00 // unique local fc00::/7
                || first & 0xffc0 == 0xfe80 // link-local fe80::/10
                || v6 == Ipv6Addr::from(0u128)
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
}

/// The proxy's destination rules, built once from config.
pub struct NetPolicy {
    allowed_ports: Vec<u16>,
    allow_private: Vec<Cidr>,
    resolve: Arc<ResolveMap>,
}

impl NetPolicy {
    pub fn new(cfg: &ProxyConfig, resolve: Arc<ResolveMap>) -> NetPolicy {
        NetPolicy {
            allowed_ports: cfg.allowed_ports.clone(),
            // Config validation has rejected unparsable blocks.
            allow_private: cfg.allow_private.iter().filter_map(|c| Cidr::parse(c)).collect(),
            resolve,
        }
    }

    pub fn port_allowed(&self, port: u16) -> bool {
        self.allowed_ports.contains(&port)
    }

    /// Resolve `host` once and return the address to connect to, or why not.
    /// Addresses pinned in `upstream.resolve` are the operator's own choice
    /// (egress pinning, test doubles) and skip the internal-address check.
    pub async fn destination(&self, host: &str, port: u16) -> Result<SocketAddr, Refusal> {
        if !self.port_allowed(port) {
            return Err(Refusal::Port(port));
        }
        self.checked_address(host, port).await
    }

    /// [`Self::destination`] for plain-HTTP absolute-form requests, which may
    /// also use port 80.
    pub async fn http_destination(&self, host: &str, port: u16) -> Result<SocketAddr, Refusal> {
        if port != 80 && !self.port_allowed(port) {
            return Err(Refusal::Port(port));
        }
        self.checked_address(host, port).await
    }

    async fn checked_address(&self, host: &str, port: u16) -> Result<SocketAddr, Refusal> {
        let host = host.trim_matches(|c| c == '[' || c == ']').to_ascii_lowercase();
        if let Some(addr) = self.resolve.pinned(&host, port) {
            return Ok(addr);
        }
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| Refusal::Resolve { host: host.clone(), reason: e.to_string() })?
                .collect(),
        };
        // Every address must pass: a name that resolves to one public and one
        // internal address is an internal name in disguise.
        for addr in &addrs {
            if is_internal(addr.ip()) && !self.allow_private.iter().any(|c| c.contains(addr.ip())) {
                return Err(Refusal::Private { host, addr: addr.ip() });
            }
        }
        addrs.first().copied().ok_or(Refusal::Resolve { host, reason: "no address".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses() {
        for s in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:10.0.0.1"] {
            assert!(is_internal(ip(s)), "{s}");
        }
        for s in ["8.8.8.8", "104.18.6.192", "2606:4700::6810:7b9", "100.128.0.1", "172.32.0.1"] {
            assert!(!is_internal(ip(s)), "{s}");
        }
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

    #[tokio::test]
    async fn destination_rules() {
        let mut cfg = ProxyConfig::default();
        let mut pins = std::collections::BTreeMap::new();
        pins.insert("api.openai.com".to_string(), "127.0.0.1:9443".to_string());
        let policy = NetPolicy::new(&cfg, Arc::new(ResolveMap::new(&pins)));
        assert_eq!(policy.destination("api.openai.com", 22).await, Err(Refusal::Port(22)));
        assert_eq!(policy.destination("API.openai.com", 443).await, Ok("127.0.0.1:9443".parse().unwrap()));
        assert!(matches!(policy.destination("10.0.0.7", 443).await, Err(Refusal::Private { .. })));
        assert!(matches!(policy.destination("localhost", 443).await, Err(Refusal::Private { .. })));
        cfg.allow_private = vec!["10.0.0.0/8".into()];
        let policy = NetPolicy::new(&cfg, Arc::new(ResolveMap::default()));
        assert_eq!(policy.destination("10.0.0.7", 443).await, Ok("10.0.0.7:443".parse().unwrap()));
    }
}
