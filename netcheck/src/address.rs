//! Where a resolved address lives: a public Azure name that resolves to a
//! private address is served by a private endpoint.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use azbroker_proto::diagnose::AddressScope;

pub fn scope_of(address: IpAddr) -> AddressScope {
    match address {
        IpAddr::V4(v4) => scope_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => scope_v4(v4),
            None => scope_v6(v6),
        },
    }
}

fn scope_v4(ip: Ipv4Addr) -> AddressScope {
    let [a, b, ..] = ip.octets();
    // 100.64.0.0/10: carrier-grade NAT space, used by some VPNs and private networks.
    let shared = a == 100 && (64..128).contains(&b);
    if ip.is_loopback() {
        AddressScope::Loopback
    } else if ip.is_private() || shared {
        AddressScope::Private
    } else if ip.is_link_local() {
        AddressScope::LinkLocal
    } else if ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
    {
        AddressScope::Other
    } else {
        AddressScope::Public
    }
}

fn scope_v6(ip: Ipv6Addr) -> AddressScope {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        AddressScope::Loopback
    } else if first & 0xfe00 == 0xfc00 {
        // fc00::/7, unique local addresses.
        AddressScope::Private
    } else if first & 0xffc0 == 0xfe80 {
        AddressScope::LinkLocal
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || first == 0x2001 && ip.segments()[1] == 0x0db8
    {
        AddressScope::Other
    } else {
        AddressScope::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(text: &str) -> AddressScope {
        scope_of(text.parse().unwrap())
    }

    #[test]
    fn classifies_the_ranges_that_matter() {
        assert_eq!(scope("10.1.2.3"), AddressScope::Private);
        assert_eq!(scope("172.16.0.9"), AddressScope::Private);
        assert_eq!(scope("172.32.0.9"), AddressScope::Public);
        assert_eq!(scope("192.168.1.1"), AddressScope::Private);
        assert_eq!(scope("100.72.0.1"), AddressScope::Private);
        assert_eq!(scope("20.190.151.68"), AddressScope::Public);
        assert_eq!(scope("127.0.0.1"), AddressScope::Loopback);
        assert_eq!(scope("169.254.169.254"), AddressScope::LinkLocal);
        assert_eq!(scope("::1"), AddressScope::Loopback);
        assert_eq!(scope("fd12:3456::1"), AddressScope::Private);
        assert_eq!(scope("fe80::1"), AddressScope::LinkLocal);
        assert_eq!(scope("::ffff:10.0.0.1"), AddressScope::Private);
        assert_eq!(scope("2603:1030::1"), AddressScope::Public);
        assert_eq!(scope("0.0.0.0"), AddressScope::Other);
    }
}
