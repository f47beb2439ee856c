//! Where the forward proxy may connect: allowed ports, and no private,
//! loopback or link-local destinations unless config allows them.
//!
//! A name is resolved exactly once and the proxy connects to the address it
//! checked, so a DNS answer that changes between check and connect (DNS
//! rebinding) cannot smuggle a connection onto the internal network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::config::ProxyConfig;
use crate::net::{Cidr, ResolveMap};

/// Why a destination is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("port {0} is not allowed through this proxy")]
    Port(u16),
    #[error("{host} resolves to {addr}, an internal or reserved address (not the public internet)")]
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

/// Addresses that are not plainly the public internet: the IANA IPv4 and
/// IPv6 special-purpose registries (loopback, private, carrier NAT,
/// link-local where cloud metadata lives, documentation, benchmarking,
/// reserved, multicast, broadcast, ...) and everything outside IPv6 global
/// unicast. Fails closed: a block that is not known to be public is internal.
///
/// Formats that carry an IPv4 address inside IPv6 (IPv4-mapped, NAT64's
/// well-known prefix, 6to4) are judged by the IPv4 they lead to, since that
/// is where a connection ends up; IPv4-compatible IPv6, local-use NAT64 and
/// Teredo are internal outright.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

/// IPv4 special-purpose blocks that are not globally reachable (RFC 6890
/// and its updates), plus the deprecated 6to4 relay anycast block.
const INTERNAL_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // carrier-grade NAT
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, cloud metadata
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // TEST-NET-1
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // TEST-NET-2
    ([203, 0, 113, 0], 24),  // TEST-NET-3
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, and 255.255.255.255 broadcast
];

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let ip = u32::from(ip);
    INTERNAL_V4.iter().any(|&(net, prefix)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        ip & mask == u32::from(Ipv4Addr::from(net)) & mask
    })
}

/// IPv6 blocks inside global unicast (2000::/3) that are not globally
/// reachable. Everything outside 2000::/3 is internal anyway.
const INTERNAL_V6_IN_GLOBAL: &[(u128, u8)] = &[
    (0x2001_0000 << 96, 23), // IETF protocol assignments, Teredo (2001::/32) included
    (0x2001_0db8 << 96, 32), // documentation
    (0x3fff_0000 << 96, 20), // documentation (RFC 9637)
];

fn in_block(ip: u128, net: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    ip & mask == net & mask
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let low_v4 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    // ::ffff:a.b.c.d is how dual-stack sockets name IPv4 peers.
    if in_block(bits, 0xffff << 32, 96) {
        return is_internal_v4(low_v4);
    }
    // NAT64 well-known prefix: the gateway connects to the embedded IPv4.
    // (64:ff9b:1::/48, local-use NAT64, falls through to "outside 2000::/3".)
    if in_block(bits, 0x0064_ff9b << 96, 96) {
        return is_internal_v4(low_v4);
    }
    // 6to4: 2002:AABB:CCDD::/48 tunnels to AA.BB.CC.DD.
    if in_block(bits, 0x2002 << 112, 16) {
        return is_internal_v4(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    // Only 2000::/3 is allocated as global unicast: the rest (::/128, ::1,
    // IPv4-compatible ::/96, 100::/64 discard, 5f00::/16 SRv6, fc00::/7,
    // fe80::/10, fec0::/10, ff00::/8, and unallocated space) is internal.
    if !in_block(bits, 0x2000 << 112, 3) {
        return true;
    }
    INTERNAL_V6_IN_GLOBAL.iter().any(|&(net, prefix)| in_block(bits, net, prefix))
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
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip(s)), "{s}");
        }
        for s in ["8.8.8.8", "104.18.6.192", "2606:4700::6810:7b9", "100.128.0.1", "172.32.0.1"] {
            assert!(!is_internal(ip(s)), "{s}");
        }
    }

    /// Each IPv4 special-purpose block: its first and last address are
    /// internal, and the neighbours just outside it are not.
    #[test]
    fn ipv4_special_purpose_blocks() {
        let cases = [
            ("0.0.0.0/8", "0.0.0.0", "0.255.255.255", None, Some("1.0.0.0")),
            ("100.64.0.0/10", "100.64.0.0", "100.127.255.255", Some("100.63.255.255"), Some("100.128.0.0")),
            ("127.0.0.0/8", "127.0.0.0", "127.255.255.255", Some("126.255.255.255"), Some("128.0.0.0")),
            ("169.254.0.0/16", "169.254.0.0", "169.254.255.255", Some("169.253.255.255"), Some("169.255.0.0")),
            ("172.16.0.0/12", "172.16.0.0", "172.31.255.255", Some("172.15.255.255"), Some("172.32.0.0")),
            ("192.0.0.0/24", "192.0.0.0", "192.0.0.255", Some("191.255.255.255"), Some("192.0.1.0")),
            ("192.0.2.0/24", "192.0.2.0", "192.0.2.255", Some("192.0.1.255"), Some("192.0.3.0")),
            ("192.88.99.0/24", "192.88.99.0", "192.88.99.255", Some("192.88.98.255"), Some("192.88.100.0")),
            ("192.168.0.0/16", "192.168.0.0", "192.168.255.255", Some("192.167.255.255"), Some("192.169.0.0")),
            ("198.18.0.0/15", "198.18.0.0", "198.19.255.255", Some("198.17.255.255"), Some("198.20.0.0")),
            ("198.51.100.0/24", "198.51.100.0", "198.51.100.255", Some("198.51.99.255"), Some("198.51.101.0")),
            ("203.0.113.0/24", "203.0.113.0", "203.0.113.255", Some("203.0.112.255"), Some("203.0.114.0")),
            ("224.0.0.0/4", "224.0.0.0", "239.255.255.255", Some("223.255.255.255"), None),
            ("240.0.0.0/4", "240.0.0.0", "255.255.255.254", None, None),
            ("255.255.255.255/32", "255.255.255.255", "255.255.255.255", None, None),
            ("10.0.0.0/8", "10.0.0.0", "10.255.255.255", Some("9.255.255.255"), Some("11.0.0.0")),
        ];
        for (block, first, last, below, above) in cases {
            assert!(is_internal(ip(first)), "{block}: {first}");
            assert!(is_internal(ip(last)), "{block}: {last}");
            for outside in [below, above].into_iter().flatten() {
                assert!(!is_internal(ip(outside)), "{block}: {outside} is public");
            }
        }
    }

    #[test]
    fn ipv6_special_purpose_blocks() {
        let internal = [
            ("::/128 unspecified", "::"),
            ("::1/128 loopback", "::1"),
            ("IPv4-compatible", "::8.8.8.8"),
            ("IPv4-compatible", "::7f00:1"),
            ("100::/64 discard", "100::1"),
            ("100::/64 discard", "100::ffff:ffff:ffff:ffff"),
            ("64:ff9b:1::/48 local-use NAT64", "64:ff9b:1::808:808"),
            ("64:ff9b:1::/48 local-use NAT64", "64:ff9b:1:ffff::1"),
            ("2001::/23 IETF protocol assignments", "2001:2::1"),
            ("2001::/23 IETF protocol assignments", "2001:1ff:ffff::1"),
            ("2001::/32 Teredo", "2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            ("2001::/32 Teredo", "2001::1"),
            ("2001:db8::/32 documentation", "2001:db8::1"),
            ("2001:db8::/32 documentation", "2001:db8:ffff:ffff::1"),
            ("3fff::/20 documentation", "3fff:fff::1"),
            ("5f00::/16 SRv6", "5f00::1"),
            ("fc00::/7 unique local", "fc00::1"),
            ("fc00::/7 unique local", "fdff:ffff::1"),
            ("fe80::/10 link-local", "fe80::1"),
            ("fe80::/10 link-local", "febf::1"),
            ("fec0::/10 site-local", "fec0::1"),
            ("fec0::/10 site-local", "feff::1"),
            ("ff00::/8 multicast", "ff02::1"),
            ("ff00::/8 multicast", "ff0e::1"),
            ("unallocated", "4000::1"),
            ("unallocated", "1::1"),
        ];
        for (block, s) in internal {
            assert!(is_internal(ip(s)), "{block}: {s}");
        }
        let public = [
            "2606:4700::6810:7b9",
            "2a00:1450:4001:82a::200e",
            "2001:200::1", // just past 2001::/23
            "2001:db7:ffff::1",
            "2001:db9::1",
            "3ffe::1",
            "3fff:1000::1",
        ];
        for s in public {
            assert!(!is_internal(ip(s)), "{s} is public");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_by_the_ipv4() {
        // IPv4-mapped
        assert!(is_internal(ip("::ffff:127.0.0.1")));
        assert!(is_internal(ip("::ffff:169.254.169.254")));
        assert!(is_internal(ip("::ffff:198.18.0.1")));
        assert!(!is_internal(ip("::ffff:8.8.8.8")));
        // NAT64 well-known prefix
        assert!(is_internal(ip("64:ff9b::10.0.0.1")));
        assert!(is_internal(ip("64:ff9b::a9fe:a9fe")));
        assert!(is_internal(ip("64:ff9b::240.0.0.1")));
        assert!(!is_internal(ip("64:ff9b::8.8.8.8")));
        // 6to4: 2002:AABB:CCDD::/48
        assert!(is_internal(ip("2002:7f00:1::1")));
        assert!(is_internal(ip("2002:a00:1::1")));
        assert!(is_internal(ip("2002:a9fe:a9fe::1")));
        assert!(is_internal(ip("2002:c0a8:101:1::1")));
        assert!(!is_internal(ip("2002:808:808::1")));
        // IPv4-compatible is internal even around a public IPv4.
        assert!(is_internal(ip("::8.8.8.8")));
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
