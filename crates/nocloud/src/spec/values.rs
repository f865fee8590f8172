//! The typed values of a spec — subnets with prefixes, MAC addresses, byte sizes — parsed from the
//! text a spec file holds with the same messages validation reports, and written back as that text.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP address family usable in a [`Cidr`]: [`Ipv4Addr`] or [`Ipv6Addr`].
pub trait Addr: FromStr + Copy + fmt::Display {
    /// Address width in bits (32 or 128).
    const BITS: u32;
    /// The family's name in messages (`IPv4`, `IPv6`).
    const FAMILY: &'static str;
    /// The address as an unsigned integer, for prefix arithmetic.
    fn to_u128(self) -> u128;
}

impl Addr for Ipv4Addr {
    const BITS: u32 = 32;
    const FAMILY: &'static str = "IPv4";
    fn to_u128(self) -> u128 {
        u128::from(u32::from(self))
    }
}

impl Addr for Ipv6Addr {
    const BITS: u32 = 128;
    const FAMILY: &'static str = "IPv6";
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
}

/// `address/prefix`, with the host bits of `address` zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr<A> {
    /// The network address (its host bits are zero in a valid subnet).
    pub network: A,
    /// The prefix length in bits, `0..=A::BITS`.
    pub prefix: u32,
}

impl<A: Addr> Cidr<A> {
    fn mask(&self) -> u128 {
        if self.prefix == 0 {
            0
        } else {
            (!0u128 << (A::BITS - self.prefix)) & (!0u128 >> (128 - A::BITS))
        }
    }

    /// Whether `a` lies inside the subnet.
    pub fn contains(&self, a: A) -> bool {
        a.to_u128() & self.mask() == self.network.to_u128()
    }

    /// IPv4 network/broadcast addresses (meaningless for /31, /32 and IPv6).
    pub fn is_network_or_broadcast(&self, a: A) -> bool {
        if A::BITS != 32 || self.prefix >= 31 {
            return false;
        }
        let x = a.to_u128();
        x == self.network.to_u128() || x == self.network.to_u128() | !self.mask() & 0xffff_ffff
    }
}

/// Parse `192.168.122.0/24` or `fd00::/64`; host bits must be zero.
pub fn parse_cidr<A: Addr>(s: &str) -> Result<Cidr<A>, String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not an {} CIDR like address/prefix", A::FAMILY))?;
    let network: A = a
        .parse()
        .map_err(|_| format!("{s:?}: {a:?} is not an {} address", A::FAMILY))?;
    let prefix: u32 = l
        .parse()
        .ok()
        .filter(|&n| n <= A::BITS)
        .ok_or_else(|| format!("{s:?}: prefix {l:?} is not 0..={}", A::BITS))?;
    let c = Cidr { network, prefix };
    if network.to_u128() & !c.mask() & (!0u128 >> (128 - A::BITS)) != 0 {
        return Err(format!("{s:?} has host bits set"));
    }
    Ok(c)
}

/// A MAC address `aa:bb:cc:dd:ee:ff` (or with `-`), returned lowercase with colons; `None` when
/// `s` is not one.
pub fn normalize_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

/// A disk size as specs write it: [`kiln_common::units::parse_size`]'s grammar (`80G`, `512M`,
/// `1.5T`, `10GiB`, `4096`), and not zero. Returns bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    match kiln_common::units::parse_size(s)? {
        0 => Err(format!("{s:?} is zero")),
        n => Ok(n),
    }
}

pub use kiln_common::units::parse_duration;

impl<A: Addr> FromStr for Cidr<A> {
    type Err = String;
    /// Same as [`parse_cidr`].
    fn from_str(s: &str) -> Result<Self, String> {
        parse_cidr(s)
    }
}

impl<A: Addr> fmt::Display for Cidr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A MAC address, six bytes; written `52:54:00:12:34:56` (lower case, colons) and read with colons
/// or dashes in either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a MAC address like 52:54:00:12:34:56");
        let text = normalize_mac(s).ok_or_else(bad)?;
        let mut out = [0u8; 6];
        for (o, part) in out.iter_mut().zip(text.split(':')) {
            *o = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A disk size in bytes, written with the largest binary unit that divides it exactly (`40G`,
/// `512M`, `4097`) and read with [`parse_size`]'s grammar (never zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` gibibytes (saturating).
    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(1 << 30))
    }

    /// `n` mebibytes (saturating).
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(1 << 20))
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_size(s).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        let n = self.0;
        for (bits, unit) in UNITS {
            if n != 0 && n.trailing_zeros() >= bits {
                return write!(f, "{}{unit}", n >> bits);
            }
        }
        write!(f, "{n}")
    }
}

/// A whole number of seconds written `300s`; sub-second parts are written as a fraction that
/// validation refuses, so nothing is silently rounded.
pub(crate) fn duration_text(d: std::time::Duration) -> String {
    match d.subsec_nanos() {
        0 => format!("{}s", d.as_secs()),
        ns => format!("{}.{ns:09}s", d.as_secs()),
    }
}

/// Serde for values whose text form is their `Display`/`FromStr`.
macro_rules! serde_as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_text!(MacAddr, ByteSize, Cidr<Ipv4Addr>, Cidr<Ipv6Addr>);
