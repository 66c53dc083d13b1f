//! Where a host name leads: the resolver plugged into each allow-list's
//! `reqwest::Client`. It looks the name up (the system resolver, as
//! reqwest's default does) and keeps only the addresses the allow-list
//! permits ([`AllowList::permits_resolved`]): a name a rule allows may not
//! lead to loopback, link-local, private or unique-local addresses unless a
//! rule names that address or range. When nothing is left the connection
//! fails with [`AddressRefused`], which the hooks report as
//! `HTTP-request-denied`.
//!
//! IP literals in URLs never reach a resolver; the hooks check them before
//! sending ([`AllowList::allows_target`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::allow::{AllowList, internal_range};

/// Every address a name resolved to was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{name}` resolves only to addresses the sink's allow-list does not name: {}",
    refused.iter().map(|(ip, range)| format!("{ip} ({range})")).collect::<Vec<_>>().join(", ")
)]
pub(crate) struct AddressRefused {
    /// The name.
    pub name: String,
    /// The addresses with their ranges.
    pub refused: Vec<(IpAddr, &'static str)>,
}

/// Splits resolved addresses into those `allow` permits and the refused
/// ones; an error when none is left.
pub(crate) fn filter_addresses(
    allow: &AllowList,
    name: &str,
    addrs: impl IntoIterator<Item = IpAddr>,
) -> Result<Vec<IpAddr>, AddressRefused> {
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for ip in addrs {
        if allow.permits_resolved(ip) {
            kept.push(ip);
        } else {
            refused.push((ip, internal_range(ip).unwrap_or("internal")));
        }
    }
    if kept.is_empty() {
        return Err(AddressRefused {
            name: name.to_owned(),
            refused,
        });
    }
    Ok(kept)
}

/// The resolver of one allow-list.
#[derive(Debug)]
struct GuardedResolver {
    allow: Arc<AllowList>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let kept = filter_addresses(&allow, &name, found.map(|a| a.ip()))?;
            let addrs: reqwest::dns::Addrs =
                Box::new(kept.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The client for requests under `allow`: rustls (ring), no proxy from the
/// environment, no redirects (which could leave the allow-list), and the
/// guarded resolver. Clients are kept per allow-list, so sinks with the
/// same list share a connection pool. An error when the client cannot be
/// built (there is no fallback to a default client).
pub(crate) fn client_for(allow: &Arc<AllowList>) -> Result<reqwest::Client, String> {
    static CLIENTS: Mutex<Option<HashMap<AllowList, reqwest::Client>>> = Mutex::new(None);
    let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    let clients = clients.get_or_insert_with(HashMap::new);
    if let Some(client) = clients.get(allow.as_ref()) {
        return Ok(client.clone());
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .dns_resolver(Arc::new(GuardedResolver {
            allow: allow.clone(),
        }))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    // Distinct allow-lists are few (one per configured sink); a test
    // process making many is bounded here.
    if clients.len() >= 256 {
        clients.clear();
    }
    clients.insert(allow.as_ref().clone(), client.clone());
    Ok(client)
}

/// The [`AddressRefused`] in an error's source chain, if any.
pub(crate) fn address_refused<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a AddressRefused> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<AddressRefused>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().expect("ip")).collect()
    }

    #[test]
    fn internal_addresses_behind_a_name_are_left_out() {
        // A wildcard rule whose names resolve (in this fake answer) to
        // loopback and a public address.
        let allow = AllowList::parse(&["http://*.example.test:*"]).expect("valid");
        let kept = filter_addresses(&allow, "a.example.test", ips(&["127.0.0.1", "8.8.8.8"]))
            .expect("one public address");
        assert_eq!(kept, ips(&["8.8.8.8"]));
        let err = filter_addresses(
            &allow,
            "a.example.test",
            ips(&["127.0.0.1", "::1", "169.254.169.254"]),
        )
        .expect_err("only internal addresses");
        let text = err.to_string();
        assert!(
            text.contains("a.example.test") && text.contains("127.0.0.1 (loopback"),
            "{text}"
        );
        assert!(text.contains("169.254.169.254 (link-local"), "{text}");
        // Naming the address (or its range) explicitly permits it.
        let named =
            AllowList::parse(&["http://*.example.test:*", "http://127.0.0.0/8:*"]).expect("valid");
        assert_eq!(
            filter_addresses(&named, "a.example.test", ips(&["127.0.0.1", "::1"])).expect("named"),
            ips(&["127.0.0.1"])
        );
    }

    #[test]
    fn refusal_is_found_in_a_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] AddressRefused);
        let inner = AddressRefused {
            name: "x".into(),
            refused: vec![],
        };
        let outer = Outer(inner.clone());
        assert_eq!(address_refused(&outer), Some(&inner));
    }
}
