//! The allow-list: which `scheme://host:port` a sink may reach, and which
//! addresses behind a name it may connect to (see the syntax in
//! [`crate::http`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An allow-list entry that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP allow-list entry `{entry}`: {reason}")]
pub struct AllowListError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The scheme of an allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SchemeRule {
    /// `http://`.
    Http,
    /// `https://`, or no scheme.
    Https,
    /// `*://`: either.
    Any,
}

/// The host of an allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostRule {
    /// A name, exactly.
    Exact(String),
    /// `*.suffix`: names ending in `.suffix` (stored with the dot).
    Suffix(String),
    /// `*`: any name or public address.
    Any,
    /// An IP address named explicitly (`127.0.0.1`, `[::1]`), or a range
    /// (`10.0.0.0/8`, `[fd00::/8]`): the address itself, whatever range it
    /// is in.
    Net(IpAddr, u8),
}

/// The port of an allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRule {
    /// A number.
    Exact(u16),
    /// None given: the scheme's default.
    Default,
    /// `*`.
    Any,
}

/// One allow-list entry, parsed: `[scheme://]host[:port]`. The one parser
/// of such authorities, also used for endpoints in configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The scheme.
    pub scheme: SchemeRule,
    /// The host.
    pub host: HostRule,
    /// The port.
    pub port: PortRule,
}

/// What a request is addressed to: a host name (resolved later, through
/// [`AllowList::permits_resolved`]) or an IP literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A DNS name, lower case, without a trailing dot.
    Name(&'a str),
    /// An address written as such in the URL.
    Ip(IpAddr),
}

impl Target<'_> {
    /// The target of a URL host as written (`[::1]` in brackets or not).
    pub fn parse(host: &str) -> Target<'_> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Target::Ip(ip),
            Err(_) => Target::Name(host),
        }
    }
}

/// A parsed allow-list (see [`crate::http`] for the syntax).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AllowList {
    rules: Vec<Rule>,
}

pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The IPv4 address an IPv6 address stands for (mapped `::ffff:a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`), if any.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// The range an address is in when it is not a public unicast address
/// (loopback, link-local, private, unique-local, ...); `None` for a public
/// address. A sink reaches such an address only through a rule that names
/// it (or its range) explicitly.
pub(crate) fn internal_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback 127.0.0.0/8")
            } else if v4.is_link_local() {
                Some("link-local 169.254.0.0/16")
            } else if v4.is_private() {
                Some("private (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)")
            } else if a == 0 {
                Some("this-network 0.0.0.0/8")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared address space 100.64.0.0/10")
            } else if a == 198 && (b == 18 || b == 19) {
                Some("benchmarking 198.18.0.0/15")
            } else if v4.is_multicast() {
                Some("multicast 224.0.0.0/4")
            } else if a >= 240 {
                Some("reserved 240.0.0.0/4")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return internal_range(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback ::1")
            } else if v6.is_unspecified() {
                Some("unspecified ::")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local fe80::/10")
            } else if first & 0xffc0 == 0xfec0 {
                Some("site-local fec0::/10")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local fc00::/7")
            } else if v6.is_multicast() {
                Some("multicast ff00::/8")
            } else if v6.segments()[..6] == [0; 6] {
                // IPv4-compatible ::a.b.c.d (deprecated) and ::/96.
                Some("IPv4-compatible ::/96")
            } else {
                None
            }
        }
    }
}

fn net_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    // Compare IPv4 addresses in IPv6 clothing as IPv4.
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Parses `ip`, `ip/len` (IPv4) or the inside of `[...]` (IPv6).
fn parse_net(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some((ip, len))
}

impl Rule {
    /// Parses one entry `[scheme://]host[:port]` (see [`crate::http`] for
    /// the syntax); an error names the entry.
    pub fn parse(entry: &str) -> Result<Rule, AllowListError> {
        let bad = |reason: &str| AllowListError {
            entry: entry.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = entry.trim();
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((s, rest)) => (s.to_ascii_lowercase(), rest),
            None => ("https".to_string(), trimmed),
        };
        let scheme = match scheme.as_str() {
            "http" => SchemeRule::Http,
            "https" => SchemeRule::Https,
            "*" => SchemeRule::Any,
            _ => return Err(bad("the scheme must be http, https or *")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['?', '@', '#']) {
            return Err(bad("expected [scheme://]host[:port], without a path"));
        }
        // `[v6]`, `[v6/len]`, then an optional `:port`.
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let Some((h, after)) = inner.split_once(']') else {
                return Err(bad("an IPv6 address needs its closing `]`"));
            };
            (format!("[{h}]"), after.strip_prefix(':').map(str::to_owned))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.to_string())),
                None => (rest.to_string(), None),
            }
        };
        let port = match port.as_deref() {
            Some("*") => PortRule::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => PortRule::Exact(p),
                _ => return Err(bad("the port must be 1..=65535 or *")),
            },
            None if rest.starts_with('[') && !rest.ends_with(']') => {
                return Err(bad("expected `:port` after the IPv6 address"));
            }
            None => PortRule::Default,
        };
        let host = host.to_ascii_lowercase();
        let valid_name = |h: &str| {
            !h.is_empty()
                && h.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
        let net = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => match parse_net(inner) {
                Some((ip @ IpAddr::V6(_), len)) => Some((ip, len)),
                _ => return Err(bad("`[...]` must hold an IPv6 address or range")),
            },
            None => parse_net(&host).filter(|(ip, _)| ip.is_ipv4()),
        };
        let host = if let Some((ip, len)) = net {
            HostRule::Net(ip, len)
        } else if host.contains('/') {
            return Err(bad(
                "expected [scheme://]host[:port], without a path (a range is ADDRESS/LENGTH)",
            ));
        } else if host == "*" {
            HostRule::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if !valid_name(suffix) {
                return Err(bad("the host after `*.` is not a DNS name"));
            }
            HostRule::Suffix(format!(".{suffix}"))
        } else if valid_name(&host) {
            HostRule::Exact(host)
        } else {
            return Err(bad(
                "the host must be a name, an IP address or range, *.domain or *",
            ));
        };
        Ok(Rule { scheme, host, port })
    }

    fn scheme_and_port_match(&self, scheme: &str, port: u16) -> bool {
        let scheme_ok = match self.scheme {
            SchemeRule::Http => scheme == "http",
            SchemeRule::Https => scheme == "https",
            SchemeRule::Any => scheme == "http" || scheme == "https",
        };
        let port_ok = match self.port {
            PortRule::Exact(p) => p == port,
            PortRule::Default => Some(port) == default_port(scheme),
            PortRule::Any => true,
        };
        scheme_ok && port_ok
    }

    /// Whether the rule names `ip` (or a range holding it) explicitly.
    fn names_ip(&self, ip: IpAddr) -> bool {
        matches!(self.host, HostRule::Net(net, len) if net_contains(net, len, ip))
    }
}

impl AllowList {
    /// Parses entries; the first bad one is an error naming it.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowListError> {
        let mut rules = Vec::with_capacity(entries.len());
        for entry in entries {
            rules.push(Rule::parse(entry.as_ref())?);
        }
        Ok(Self { rules })
    }

    /// Whether a request to `scheme://host:port` may be sent (`port` `None`:
    /// the scheme's default). For a name, the addresses it resolves to are
    /// checked when connecting ([`permits_resolved`](Self::permits_resolved));
    /// an IP literal is checked here: a loopback, link-local, private or
    /// other internal address needs a rule naming it or its range.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allows_target(scheme, Target::parse(&host), port)
    }

    /// [`allows`](Self::allows) for a parsed target.
    pub(crate) fn allows_target(
        &self,
        scheme: &str,
        target: Target<'_>,
        port: Option<u16>,
    ) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let Some(port) = port.or_else(|| default_port(&scheme)) else {
            return false;
        };
        let mut rules = self
            .rules
            .iter()
            .filter(|r| r.scheme_and_port_match(&scheme, port));
        match target {
            Target::Name(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                rules.any(|r| match &r.host {
                    HostRule::Exact(h) => *h == name,
                    HostRule::Suffix(s) => name.len() > s.len() && name.ends_with(s.as_str()),
                    HostRule::Any => true,
                    HostRule::Net(..) => false,
                })
            }
            Target::Ip(ip) => {
                let internal = internal_range(ip).is_some();
                rules.any(|r| match &r.host {
                    HostRule::Any => !internal,
                    HostRule::Net(..) => r.names_ip(ip),
                    HostRule::Exact(_) | HostRule::Suffix(_) => false,
                })
            }
        }
    }

    /// Whether a connection may go to `ip`, an address a name the list
    /// allows resolved to: a public address, or one a rule names explicitly
    /// (`127.0.0.1`, `10.0.0.0/8`, `[::1]`). Every resolved address is
    /// checked, and the refused ones are left out.
    pub(crate) fn permits_resolved(&self, ip: IpAddr) -> bool {
        internal_range(ip).is_none() || self.rules.iter().any(|r| r.names_ip(ip))
    }

    /// Whether the authority `scheme://ip:port` is allowed by a rule that
    /// names the address itself (or its range).
    pub(crate) fn names_address(&self, scheme: &str, ip: IpAddr, port: Option<u16>) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let Some(port) = port.or_else(|| default_port(&scheme)) else {
            return false;
        };
        self.rules
            .iter()
            .any(|r| r.scheme_and_port_match(&scheme, port) && r.names_ip(ip))
    }

    /// True when nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_scheme_host_and_port() {
        let list = AllowList::parse(&[
            "https://*.log.aliyuncs.com",
            "http://127.0.0.1:9000",
            "*://localhost:*",
        ])
        .expect("valid");
        assert!(list.allows("https", "proj.cn-hangzhou.log.aliyuncs.com", None));
        assert!(list.allows("https", "proj.cn-hangzhou.log.aliyuncs.com", Some(443)));
        assert!(
            !list.allows("https", "log.aliyuncs.com", None),
            "bare suffix"
        );
        assert!(
            !list.allows("http", "proj.cn-hangzhou.log.aliyuncs.com", None),
            "scheme"
        );
        assert!(
            !list.allows("https", "proj.log.aliyuncs.com", Some(8443)),
            "port"
        );
        assert!(!list.allows("https", "evil-log.aliyuncs.com.attacker.io", None));
        assert!(list.allows("http", "127.0.0.1", Some(9000)));
        assert!(!list.allows("http", "127.0.0.1", Some(9001)));
        assert!(!list.allows("https", "127.0.0.1", Some(9000)));
        assert!(list.allows("http", "LOCALHOST", Some(1234)));
        assert!(!list.allows("ftp", "localhost", Some(21)));
        assert!(!AllowList::default().allows("https", "example.com", None));
    }

    #[test]
    fn internal_addresses_need_a_rule_that_names_them() {
        let any = AllowList::parse(&["*://*:*"]).expect("valid");
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            let addr: IpAddr = ip.parse().expect(ip);
            assert!(internal_range(addr).is_some(), "{ip} is internal");
            assert!(!any.allows("http", ip, Some(80)), "`*` does not grant {ip}");
            assert!(!any.permits_resolved(addr), "a name may not lead to {ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            let addr: IpAddr = ip.parse().expect(ip);
            assert_eq!(internal_range(addr), None, "{ip}");
            assert!(any.allows("http", ip, Some(80)), "{ip}");
            assert!(any.permits_resolved(addr), "{ip}");
        }
        let named = AllowList::parse(&[
            "http://127.0.0.1:9000",
            "http://10.0.0.0/8:*",
            "http://[::1]:9000",
            "http://[fd00::/8]",
        ])
        .expect("valid");
        assert!(named.allows("http", "127.0.0.1", Some(9000)));
        assert!(!named.allows("http", "127.0.0.2", Some(9000)));
        assert!(named.allows("http", "10.1.2.3", Some(8080)));
        assert!(named.allows("http", "[::1]", Some(9000)));
        assert!(named.allows("http", "::ffff:127.0.0.1", Some(9000)));
        assert!(named.allows("http", "fd12::1", None));
        assert!(!named.allows("http", "fe80::1", None));
        assert!(named.permits_resolved("127.0.0.1".parse().expect("ip")));
        assert!(named.permits_resolved("10.9.9.9".parse().expect("ip")));
        assert!(!named.permits_resolved("127.0.0.2".parse().expect("ip")));
        assert!(!named.permits_resolved("169.254.169.254".parse().expect("ip")));
        let range = AllowList::parse(&["http://127.0.0.0/8:*"]).expect("valid");
        assert!(range.permits_resolved("127.0.0.1".parse().expect("ip")));
        assert!(range.names_address("http", "127.0.0.1".parse().expect("ip"), Some(1)));
        assert!(!range.names_address("https", "127.0.0.1".parse().expect("ip"), Some(1)));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "ftp://x",
            "http://h:0",
            "http://h/path",
            "*.",
            "http://a..b",
            "",
            "http://127.0.0.1/33",
            "http://[::1",
            "http://[nothost]:80",
            "http://[::1]x",
        ] {
            let err = AllowList::parse(&[bad]).expect_err(bad);
            assert_eq!(err.entry, bad);
        }
        assert!(AllowList::parse(&["*"]).is_ok());
        assert!(AllowList::parse(&["http://[::1]"]).is_ok());
    }
}
