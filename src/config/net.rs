//! CIDR networks for `[exempt] networks`, matched against PAM_RHOST.
//! A remote host that is not an IP address (a host name, garbage, empty)
//! never matches: names can be spoofed through DNS, addresses cannot be
//! chosen by the client once the TCP handshake is done.

use std::fmt;
use std::net::IpAddr;

/// An IPv4 or IPv6 network: address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a single address.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
                p.parse().ok()?
            }
            Some(_) => return None,
        };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `host` (PAM_RHOST) is an address inside this network.
    /// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) count as IPv4.
    pub fn contains_host(&self, host: &str) -> bool {
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), 32, self.prefix)
                    == masked(u128::from(u32::from(ip)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(value: u128, bits: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        value >> (bits - prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv4 and IPv6 networks match their members and nothing else.
    #[test]
    fn networks_match_exactly_their_members() {
        let v4 = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(v4.contains_host("192.0.2.1"));
        assert!(v4.contains_host("192.0.2.255"));
        assert!(!v4.contains_host("192.0.3.1"));
        assert!(v4.contains_host("::ffff:192.0.2.9"));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains_host("2001:db8:1::5"));
        assert!(!v6.contains_host("2001:db9::1"));
        assert!(!v6.contains_host("192.0.2.1"));
        let one = Cidr::parse("203.0.113.7").unwrap();
        assert!(one.contains_host("203.0.113.7") && !one.contains_host("203.0.113.8"));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains_host("8.8.8.8"));
    }

    /// Host names, empty and garbage remote hosts never match.
    #[test]
    fn non_addresses_never_match() {
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        for host in [
            "",
            "localhost",
            "example.com",
            "192.0.2.1.evil",
            "1.2.3.4 ",
            "::1%eth0",
        ] {
            assert!(!all.contains_host(host), "{host:?}");
        }
    }

    /// Malformed networks are refused.
    #[test]
    fn malformed_networks_are_refused() {
        for text in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "::/129",
            "10.0.0.0/+8",
            "x/8",
            "",
        ] {
            assert_eq!(Cidr::parse(text), None, "{text:?}");
        }
    }
}
