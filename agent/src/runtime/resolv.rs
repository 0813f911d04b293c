//! A pod's `/etc/resolv.conf`, as the kubelet writes it
//! (`pkg/kubelet/network/dns`): from the pod's `dnsPolicy`, its
//! `dnsConfig`, the cluster DNS address and domain, and the node's own
//! `resolv.conf`. Pure.
//!
//! - `ClusterFirst` (the default): the cluster DNS server, search
//!   `ns.svc.domain svc.domain domain` then the node's search domains,
//!   `options ndots:5`; a host-network pod (or a node without cluster DNS)
//!   gets `Default` instead.
//! - `ClusterFirstWithHostNet`: the cluster settings, host network or not.
//! - `Default`: the node's nameservers, search domains and options.
//! - `None`: only what `dnsConfig` says.
//!
//! `dnsConfig` is merged in last: its nameservers and search domains are
//! appended (duplicates dropped), its options replace those of the same
//! name. At most 3 nameservers and 32 search domains are kept (the
//! resolver's limits, as the kubelet does).

use bramble_common::api::PodDnsConfig;

/// Most nameservers a resolver uses.
pub const MAX_NAMESERVERS: usize = 3;
/// Most search domains kept.
pub const MAX_SEARCHES: usize = 32;

/// The node's `resolv.conf`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Resolv {
    nameservers: Vec<String>,
    searches: Vec<String>,
    /// `(name, value)`; `ndots:5` is `("ndots", Some("5"))`.
    options: Vec<(String, Option<String>)>,
}

fn parse(text: &str) -> Resolv {
    let mut resolv = Resolv::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => resolv.nameservers.extend(words.next().map(str::to_string)),
            // The last `search` (or `domain`) line wins, as in resolv.conf(5).
            Some("search") | Some("domain") => {
                resolv.searches = words.map(str::to_string).collect();
            }
            Some("options") => {
                for option in words {
                    set_option(&mut resolv.options, option_of(option));
                }
            }
            _ => {}
        }
    }
    resolv
}

fn option_of(text: &str) -> (String, Option<String>) {
    match text.split_once(':') {
        Some((name, value)) => (name.to_string(), Some(value.to_string())),
        None => (text.to_string(), None),
    }
}

fn set_option(options: &mut Vec<(String, Option<String>)>, option: (String, Option<String>)) {
    match options.iter_mut().find(|(name, _)| *name == option.0) {
        Some(existing) => *existing = option,
        None => options.push(option),
    }
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !item.is_empty() && !list.iter().any(|i| i == item) {
        list.push(item.to_string());
    }
}

/// The `resolv.conf` of a pod in `namespace` with `policy` (`None`:
/// `ClusterFirst`) and `dns_config`, on a node whose own `resolv.conf` is
/// `host`, in a cluster whose DNS server is `cluster_dns` (`None`: no
/// cluster DNS) and domain `domain`.
pub fn resolv_conf(
    policy: Option<&str>,
    host_network: bool,
    dns_config: Option<&PodDnsConfig>,
    namespace: &str,
    cluster_dns: Option<&str>,
    domain: &str,
    host: &str,
) -> String {
    let host = parse(host);
    let cluster = match (policy.unwrap_or("ClusterFirst"), cluster_dns) {
        ("ClusterFirst", Some(dns)) if !host_network => Some(dns),
        ("ClusterFirstWithHostNet", Some(dns)) => Some(dns),
        _ => None,
    };
    let mut resolv = match (policy, cluster) {
        (Some("None"), _) => Resolv::default(),
        (_, Some(dns)) => {
            let mut searches = vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ];
            for search in &host.searches {
                push_unique(&mut searches, search);
            }
            Resolv {
                nameservers: vec![dns.to_string()],
                searches,
                options: vec![("ndots".into(), Some("5".into()))],
            }
        }
        _ => host,
    };
    if let Some(config) = dns_config {
        for nameserver in &config.nameservers {
            push_unique(&mut resolv.nameservers, nameserver);
        }
        for search in &config.searches {
            push_unique(&mut resolv.searches, search);
        }
        for option in &config.options {
            if !option.name.is_empty() {
                set_option(
                    &mut resolv.options,
                    (option.name.clone(), option.value.clone()),
                );
            }
        }
    }
    resolv.nameservers.truncate(MAX_NAMESERVERS);
    resolv.searches.truncate(MAX_SEARCHES);
    let mut out = String::new();
    if !resolv.searches.is_empty() {
        out.push_str(&format!("search {}\n", resolv.searches.join(" ")));
    }
    for nameserver in &resolv.nameservers {
        out.push_str(&format!("nameserver {nameserver}\n"));
    }
    if !resolv.options.is_empty() {
        let options: Vec<String> = resolv
            .options
            .iter()
            .map(|(name, value)| match value {
                Some(value) => format!("{name}:{value}"),
                None => name.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_common::api::PodDnsConfigOption;

    const HOST: &str = "# node\nnameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch lan home.arpa\noptions edns0 timeout:2\n";

    fn conf(policy: Option<&str>, host_network: bool, config: Option<&PodDnsConfig>) -> String {
        resolv_conf(
            policy,
            host_network,
            config,
            "shop",
            Some("10.96.0.10"),
            "cluster.local",
            HOST,
        )
    }

    #[test]
    fn cluster_first_is_the_default() {
        assert_eq!(
            conf(None, false, None),
            "search shop.svc.cluster.local svc.cluster.local cluster.local lan home.arpa\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert_eq!(
            conf(Some("ClusterFirst"), false, None),
            conf(None, false, None)
        );
    }

    #[test]
    fn host_network_and_default_use_the_nodes_resolvers() {
        let host = "search lan home.arpa\nnameserver 192.168.1.1\nnameserver 192.168.1.2\noptions edns0 timeout:2\n";
        assert_eq!(
            conf(None, true, None),
            host,
            "ClusterFirst with hostNetwork falls back"
        );
        assert_eq!(conf(Some("Default"), false, None), host);
        assert_eq!(
            conf(Some("ClusterFirstWithHostNet"), true, None),
            conf(None, false, None)
        );
        assert_eq!(
            resolv_conf(None, false, None, "shop", None, "cluster.local", HOST),
            host,
            "no cluster DNS: the node's"
        );
    }

    #[test]
    fn none_with_dns_config_and_merging() {
        let config = PodDnsConfig {
            nameservers: vec!["1.1.1.1".into(), "10.96.0.10".into()],
            searches: vec!["example.com".into()],
            options: vec![
                PodDnsConfigOption {
                    name: "ndots".into(),
                    value: Some("2".into()),
                },
                PodDnsConfigOption {
                    name: "single-request".into(),
                    value: None,
                },
            ],
        };
        assert_eq!(
            conf(Some("None"), false, Some(&config)),
            "search example.com\nnameserver 1.1.1.1\nnameserver 10.96.0.10\noptions ndots:2 single-request\n"
        );
        assert_eq!(
            conf(None, false, Some(&config)),
            "search shop.svc.cluster.local svc.cluster.local cluster.local lan home.arpa example.com\nnameserver 10.96.0.10\nnameserver 1.1.1.1\noptions ndots:2 single-request\n"
        );
        assert_eq!(conf(Some("None"), false, None), "");
        let many = PodDnsConfig {
            nameservers: (1..=5).map(|i| format!("10.0.0.{i}")).collect(),
            searches: (0..40).map(|i| format!("d{i}.example")).collect(),
            options: Vec::new(),
        };
        let text = conf(Some("None"), false, Some(&many));
        assert_eq!(text.matches("nameserver").count(), MAX_NAMESERVERS);
        assert_eq!(
            text.lines().next().unwrap_or("").split_whitespace().count(),
            MAX_SEARCHES + 1
        );
    }
}
