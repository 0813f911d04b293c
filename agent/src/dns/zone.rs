//! The cluster domain's records, per the Kubernetes DNS specification
//! (<https://github.com/kubernetes/dns/blob/master/docs/specification.md>),
//! answered from the node's copy of the Services. Pure: no I/O, no wire
//! format (see [`super::server`]).
//!
//! - `svc.ns.svc.zone`: `A` the cluster IP; for a headless Service one `A`
//!   per ready endpoint; for an ExternalName Service a `CNAME`.
//! - `_port._proto.svc.ns.svc.zone`: `SRV` per named port (headless: one
//!   per ready endpoint, targets `hostname.svc.ns.svc.zone`, or the address
//!   with dashes when the pod has no hostname).
//! - `hostname.svc.ns.svc.zone` (headless, pods with `hostname` and
//!   `subdomain`) and `a-b-c-d.svc.ns.svc.zone`: `A` that endpoint.
//! - `d.c.b.a.in-addr.arpa`: `PTR` for cluster IPs and headless endpoints.
//! - `a-b-c-d.ns.pod.zone`: `A` (CoreDNS' `pods insecure`).
//! - A name that exists with no record of the asked type: NODATA
//!   ([`Answer::NoData`]); a name under the zone that does not exist:
//!   NXDOMAIN. Names outside the zone (and reverse names of addresses the
//!   cluster does not own) are [`Answer::NotOurs`]: forwarded.

use std::net::Ipv4Addr;

use bramble_common::wire::{WireService, WireServiceType};

/// A query type this zone knows (others get NODATA for existing names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    /// `A`.
    A,
    /// `SRV`.
    Srv,
    /// `PTR`.
    Ptr,
    /// `CNAME`.
    Cname,
    /// `ANY` (answered with what the name has).
    Any,
    /// Anything else (`AAAA`, `TXT`, ...).
    Other,
}

/// One record of an answer. Names are absolute, lowercase, without the
/// final dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `name A address`.
    A {
        /// The owner name.
        name: String,
        /// The address.
        address: Ipv4Addr,
    },
    /// `name SRV 0 weight port target`.
    Srv {
        /// The owner name.
        name: String,
        /// The weight.
        weight: u16,
        /// The port.
        port: u16,
        /// The target host.
        target: String,
    },
    /// `name CNAME target`.
    Cname {
        /// The owner name.
        name: String,
        /// The alias' target.
        target: String,
    },
    /// `name PTR target`.
    Ptr {
        /// The owner name.
        name: String,
        /// The name the address belongs to.
        target: String,
    },
}

/// What the zone says about a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Not in the cluster's zone: forward it.
    NotOurs,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The name exists, without records of that type (NOERROR, empty).
    NoData,
    /// The records (answer section), and extra ones (additional section:
    /// the `A` records of SRV targets).
    Records(Vec<Record>, Vec<Record>),
}

/// Dashed form of an address (`10-244-1-5`).
fn dashed(address: Ipv4Addr) -> String {
    address.to_string().replace('.', "-")
}

fn undashed(label: &str) -> Option<Ipv4Addr> {
    let dotted = label.replace('-', ".");
    if dotted.split('.').count() != 4 {
        return None;
    }
    dotted.parse().ok()
}

/// The ready endpoints of a headless Service: (address, host label).
fn headless_hosts(service: &WireService) -> Vec<(Ipv4Addr, String)> {
    let mut hosts: Vec<(Ipv4Addr, String)> = service
        .endpoints
        .iter()
        .filter(|e| e.ready)
        .filter_map(|e| {
            let address: Ipv4Addr = e.address.parse().ok()?;
            let label = if e.hostname.is_empty() {
                dashed(address)
            } else {
                e.hostname.to_ascii_lowercase()
            };
            Some((address, label))
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Answers `qname` (any case, with or without the final dot) of type
/// `qtype` in the cluster zone `domain` from `services`.
pub fn answer(services: &[WireService], domain: &str, qname: &str, qtype: QueryType) -> Answer {
    let name = qname.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if let Some(reverse) = name.strip_suffix(".in-addr.arpa") {
        return answer_reverse(services, &domain, &name, reverse, qtype);
    }
    let Some(relative) = strip_zone(&name, &domain) else {
        return Answer::NotOurs;
    };
    // Labels from the right: [], ["svc"], ["svc", ns], ["svc", ns, svc], ...
    let labels: Vec<&str> = if relative.is_empty() {
        Vec::new()
    } else {
        relative.rsplit('.').collect()
    };
    match labels.as_slice() {
        [] | ["svc"] | ["pod"] => Answer::NoData,
        ["svc", namespace] => {
            if services.iter().any(|s| s.namespace == *namespace) {
                Answer::NoData
            } else {
                Answer::NxDomain
            }
        }
        ["svc", namespace, service_name, rest @ ..] => {
            let Some(service) = services
                .iter()
                .find(|s| s.namespace == *namespace && s.name == *service_name)
            else {
                return Answer::NxDomain;
            };
            let service_fqdn = format!("{service_name}.{namespace}.svc.{domain}");
            match rest {
                [] => service_records(service, &service_fqdn, &name, qtype),
                [host] if !host.starts_with('_') => host_records(service, &name, host, qtype),
                [proto, port] if proto.starts_with('_') && port.starts_with('_') => srv_records(
                    service,
                    &service_fqdn,
                    &name,
                    &proto[1..],
                    &port[1..],
                    qtype,
                ),
                // `_port._proto.svc...` with a proto but no port: an empty
                // non-terminal when such a port exists.
                [proto] if proto.starts_with('_') => {
                    if service
                        .ports
                        .iter()
                        .any(|p| !p.name.is_empty() && p.protocol.as_lower() == &proto[1..])
                    {
                        Answer::NoData
                    } else {
                        Answer::NxDomain
                    }
                }
                _ => Answer::NxDomain,
            }
        }
        ["pod", _namespace, host] => match undashed(host) {
            Some(address) => by_type(
                qtype,
                QueryType::A,
                vec![Record::A {
                    name: name.clone(),
                    address,
                }],
            ),
            None => Answer::NxDomain,
        },
        _ => Answer::NxDomain,
    }
}

/// `name` relative to `domain` (`""` for the apex), `None` outside it.
fn strip_zone<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    if name == domain {
        return Some("");
    }
    name.strip_suffix(domain)?.strip_suffix('.')
}

/// The records `records` when `qtype` asks for `kind` (or ANY); NODATA
/// otherwise or when there are none.
fn by_type(qtype: QueryType, kind: QueryType, records: Vec<Record>) -> Answer {
    if (qtype == kind || qtype == QueryType::Any) && !records.is_empty() {
        Answer::Records(records, Vec::new())
    } else {
        Answer::NoData
    }
}

fn service_records(service: &WireService, _fqdn: &str, name: &str, qtype: QueryType) -> Answer {
    match service.type_ {
        WireServiceType::ExternalName => {
            let target = service.external_name.trim_end_matches('.').to_string();
            if target.is_empty() {
                return Answer::NoData;
            }
            // A CNAME answers every type (the resolver follows it).
            Answer::Records(
                vec![Record::Cname {
                    name: name.to_string(),
                    target,
                }],
                Vec::new(),
            )
        }
        WireServiceType::Headless => by_type(
            qtype,
            QueryType::A,
            headless_hosts(service)
                .into_iter()
                .map(|(address, _)| Record::A {
                    name: name.to_string(),
                    address,
                })
                .collect(),
        ),
        _ => match service.cluster_ip.parse::<Ipv4Addr>() {
            Ok(address) => by_type(
                qtype,
                QueryType::A,
                vec![Record::A {
                    name: name.to_string(),
                    address,
                }],
            ),
            Err(_) => Answer::NoData,
        },
    }
}

fn host_records(service: &WireService, name: &str, host: &str, qtype: QueryType) -> Answer {
    if service.type_ != WireServiceType::Headless {
        return Answer::NxDomain;
    }
    let records: Vec<Record> = headless_hosts(service)
        .into_iter()
        .filter(|(address, label)| label == host || dashed(*address) == host)
        .map(|(address, _)| Record::A {
            name: name.to_string(),
            address,
        })
        .collect();
    if records.is_empty() {
        return Answer::NxDomain;
    }
    by_type(qtype, QueryType::A, records)
}

fn srv_records(
    service: &WireService,
    fqdn: &str,
    name: &str,
    proto: &str,
    port_name: &str,
    qtype: QueryType,
) -> Answer {
    let Some(index) = service
        .ports
        .iter()
        .position(|p| !p.name.is_empty() && p.name == port_name && p.protocol.as_lower() == proto)
    else {
        return Answer::NxDomain;
    };
    if service.type_ == WireServiceType::ExternalName {
        return Answer::NxDomain;
    }
    if !matches!(qtype, QueryType::Srv | QueryType::Any) {
        return Answer::NoData;
    }
    let port = &service.ports[index];
    if service.type_ == WireServiceType::Headless {
        let mut answers = Vec::new();
        let mut extra = Vec::new();
        for endpoint in service.endpoints.iter().filter(|e| e.ready) {
            let (Ok(address), Some(&endpoint_port)) = (
                endpoint.address.parse::<Ipv4Addr>(),
                endpoint.ports.get(index),
            ) else {
                continue;
            };
            if endpoint_port == 0 {
                continue;
            }
            let label = if endpoint.hostname.is_empty() {
                dashed(address)
            } else {
                endpoint.hostname.to_ascii_lowercase()
            };
            let target = format!("{label}.{fqdn}");
            answers.push(Record::Srv {
                name: name.to_string(),
                weight: 100,
                port: endpoint_port,
                target: target.clone(),
            });
            extra.push(Record::A {
                name: target,
                address,
            });
        }
        if answers.is_empty() {
            return Answer::NoData;
        }
        return Answer::Records(answers, extra);
    }
    let Ok(address) = service.cluster_ip.parse::<Ipv4Addr>() else {
        return Answer::NoData;
    };
    Answer::Records(
        vec![Record::Srv {
            name: name.to_string(),
            weight: 100,
            port: port.port,
            target: fqdn.to_string(),
        }],
        vec![Record::A {
            name: fqdn.to_string(),
            address,
        }],
    )
}

fn answer_reverse(
    services: &[WireService],
    domain: &str,
    name: &str,
    reverse: &str,
    qtype: QueryType,
) -> Answer {
    let octets: Vec<&str> = reverse.split('.').collect();
    if octets.len() != 4 {
        return Answer::NotOurs;
    }
    let dotted = format!("{}.{}.{}.{}", octets[3], octets[2], octets[1], octets[0]);
    let Ok(address) = dotted.parse::<Ipv4Addr>() else {
        return Answer::NotOurs;
    };
    let mut targets = Vec::new();
    for service in services {
        let fqdn = format!("{}.{}.svc.{domain}", service.name, service.namespace);
        if service.cluster_ip.parse::<Ipv4Addr>().ok() == Some(address) {
            targets.push(fqdn.clone());
        }
        if service.type_ == WireServiceType::Headless {
            for endpoint in &service.endpoints {
                if endpoint.ready
                    && !endpoint.hostname.is_empty()
                    && endpoint.address.parse::<Ipv4Addr>().ok() == Some(address)
                {
                    targets.push(format!("{}.{fqdn}", endpoint.hostname.to_ascii_lowercase()));
                }
            }
        }
    }
    if targets.is_empty() {
        return Answer::NotOurs;
    }
    targets.sort();
    targets.dedup();
    by_type(
        qtype,
        QueryType::Ptr,
        targets
            .into_iter()
            .map(|target| Record::Ptr {
                name: name.to_string(),
                target,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_common::wire::{WireEndpoint, WireProtocol, WireServicePort};

    fn services() -> Vec<WireService> {
        let port = |name: &str, protocol, port| WireServicePort {
            name: name.into(),
            protocol,
            port,
            node_port: 0,
        };
        let endpoint = |address: &str, hostname: &str, ready| WireEndpoint {
            address: address.into(),
            hostname: hostname.into(),
            ready,
            serving: ready,
            ports: vec![5432],
            ..WireEndpoint::default()
        };
        vec![
            WireService {
                namespace: "default".into(),
                name: "web".into(),
                cluster_ip: "10.96.0.20".into(),
                ports: vec![port("http", WireProtocol::Tcp, 80)],
                ..WireService::default()
            },
            WireService {
                namespace: "db".into(),
                name: "pg".into(),
                type_: WireServiceType::Headless,
                ports: vec![port("sql", WireProtocol::Tcp, 5432)],
                endpoints: vec![
                    endpoint("10.244.1.5", "pg-0", true),
                    endpoint("10.244.2.7", "", true),
                    endpoint("10.244.2.8", "pg-2", false),
                ],
                ..WireService::default()
            },
            WireService {
                namespace: "db".into(),
                name: "ext".into(),
                type_: WireServiceType::ExternalName,
                external_name: "db.example.com".into(),
                ..WireService::default()
            },
        ]
    }

    fn a(name: &str, address: &str) -> Record {
        Record::A {
            name: name.into(),
            address: address.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        }
    }

    const Z: &str = "cluster.local";

    #[test]
    fn cluster_ip_services_answer_a_and_srv() {
        let s = services();
        assert_eq!(
            answer(&s, Z, "Web.Default.svc.cluster.local.", QueryType::A),
            Answer::Records(
                vec![a("web.default.svc.cluster.local", "10.96.0.20")],
                vec![]
            )
        );
        assert_eq!(
            answer(&s, Z, "web.default.svc.cluster.local", QueryType::Other),
            Answer::NoData,
            "AAAA of an existing name: NODATA"
        );
        assert_eq!(
            answer(
                &s,
                Z,
                "_http._tcp.web.default.svc.cluster.local",
                QueryType::Srv
            ),
            Answer::Records(
                vec![Record::Srv {
                    name: "_http._tcp.web.default.svc.cluster.local".into(),
                    weight: 100,
                    port: 80,
                    target: "web.default.svc.cluster.local".into(),
                }],
                vec![a("web.default.svc.cluster.local", "10.96.0.20")]
            )
        );
        assert_eq!(
            answer(
                &s,
                Z,
                "_http._udp.web.default.svc.cluster.local",
                QueryType::Srv
            ),
            Answer::NxDomain
        );
        assert_eq!(
            answer(&s, Z, "_tcp.web.default.svc.cluster.local", QueryType::Srv),
            Answer::NoData
        );
    }

    #[test]
    fn nxdomain_and_nodata_where_the_spec_says() {
        let s = services();
        assert_eq!(
            answer(&s, Z, "nope.default.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            answer(&s, Z, "default.svc.cluster.local", QueryType::A),
            Answer::NoData
        );
        assert_eq!(
            answer(&s, Z, "nons.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            answer(&s, Z, "svc.cluster.local", QueryType::A),
            Answer::NoData
        );
        assert_eq!(answer(&s, Z, "cluster.local", QueryType::A), Answer::NoData);
        assert_eq!(
            answer(&s, Z, "x.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(answer(&s, Z, "example.com", QueryType::A), Answer::NotOurs);
        assert_eq!(
            answer(&s, Z, "notcluster.local", QueryType::A),
            Answer::NotOurs
        );
        assert_eq!(
            answer(
                &s,
                Z,
                "web.default.svc.cluster.local.default.svc.cluster.local",
                QueryType::A
            ),
            Answer::NxDomain,
            "a search-path expansion of a full name does not exist"
        );
    }

    #[test]
    fn headless_services_answer_per_endpoint() {
        let s = services();
        assert_eq!(
            answer(&s, Z, "pg.db.svc.cluster.local", QueryType::A),
            Answer::Records(
                vec![
                    a("pg.db.svc.cluster.local", "10.244.1.5"),
                    a("pg.db.svc.cluster.local", "10.244.2.7"),
                ],
                vec![]
            ),
            "only ready endpoints"
        );
        assert_eq!(
            answer(&s, Z, "pg-0.pg.db.svc.cluster.local", QueryType::A),
            Answer::Records(
                vec![a("pg-0.pg.db.svc.cluster.local", "10.244.1.5")],
                vec![]
            )
        );
        assert_eq!(
            answer(&s, Z, "10-244-2-7.pg.db.svc.cluster.local", QueryType::A),
            Answer::Records(
                vec![a("10-244-2-7.pg.db.svc.cluster.local", "10.244.2.7")],
                vec![]
            )
        );
        assert_eq!(
            answer(&s, Z, "pg-2.pg.db.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        let Answer::Records(srv, extra) =
            answer(&s, Z, "_sql._tcp.pg.db.svc.cluster.local", QueryType::Srv)
        else {
            panic!("srv")
        };
        assert_eq!(srv.len(), 2);
        assert!(extra.contains(&a("pg-0.pg.db.svc.cluster.local", "10.244.1.5")));
        assert!(extra.contains(&a("10-244-2-7.pg.db.svc.cluster.local", "10.244.2.7")));
    }

    #[test]
    fn external_name_reverse_and_pod_records() {
        let s = services();
        assert_eq!(
            answer(&s, Z, "ext.db.svc.cluster.local", QueryType::A),
            Answer::Records(
                vec![Record::Cname {
                    name: "ext.db.svc.cluster.local".into(),
                    target: "db.example.com".into()
                }],
                vec![]
            )
        );
        assert_eq!(
            answer(&s, Z, "20.0.96.10.in-addr.arpa.", QueryType::Ptr),
            Answer::Records(
                vec![Record::Ptr {
                    name: "20.0.96.10.in-addr.arpa".into(),
                    target: "web.default.svc.cluster.local".into()
                }],
                vec![]
            )
        );
        assert_eq!(
            answer(&s, Z, "5.1.244.10.in-addr.arpa", QueryType::Ptr),
            Answer::Records(
                vec![Record::Ptr {
                    name: "5.1.244.10.in-addr.arpa".into(),
                    target: "pg-0.pg.db.svc.cluster.local".into()
                }],
                vec![]
            )
        );
        assert_eq!(
            answer(&s, Z, "1.1.168.192.in-addr.arpa", QueryType::Ptr),
            Answer::NotOurs
        );
        assert_eq!(
            answer(&s, Z, "10-244-1-9.default.pod.cluster.local", QueryType::A),
            Answer::Records(
                vec![a("10-244-1-9.default.pod.cluster.local", "10.244.1.9")],
                vec![]
            )
        );
        assert_eq!(
            answer(&s, Z, "x.default.pod.cluster.local", QueryType::A),
            Answer::NxDomain
        );
    }
}
