//! Validation of Services, EndpointSlices and Endpoints, with Kubernetes'
//! paths and messages (`pkg/apis/core/validation`, `pkg/apis/discovery/validation`).
//!
//! What depends on the master's configuration (the service CIDR, the
//! NodePort range, addresses already taken) is checked by the master's
//! allocator, not here.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::{
    child, index, is_dns1123_label, is_dns1123_subdomain, port_number_error, validate_labels,
    validate_port_num_or_name, Errors, FieldError, IMMUTABLE, PROTOCOLS,
};
use crate::api::{EndpointSlice, Endpoints, PodSpec, ServiceSpec};
use crate::meta::IntOrString;

/// The Service types bramble serves.
pub const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// The longest session affinity timeout (one day), as Kubernetes.
pub const MAX_AFFINITY_TIMEOUT_SECONDS: i64 = 86400;

/// The effective type of a Service (`ClusterIP` when unset).
pub fn service_type(spec: &ServiceSpec) -> &str {
    spec.type_
        .as_deref()
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP")
}

pub(super) fn validate_service(spec: &ServiceSpec, errs: &mut Errors) {
    let service_type = service_type(spec);
    errs.one_of("spec.type".into(), spec.type_.as_ref(), &SERVICE_TYPES);
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let headless = cluster_ip == "None";
    let external_name = service_type == "ExternalName";
    if external_name {
        if !cluster_ip.is_empty() && cluster_ip != "None" {
            errs.forbidden(
                "spec.clusterIP".into(),
                "may not be set for ExternalName services",
            );
        }
        let name = spec.external_name.as_deref().unwrap_or("");
        if name.is_empty() {
            errs.required("spec.externalName".into());
        } else {
            let messages = is_dns1123_subdomain(name.strip_suffix('.').unwrap_or(name));
            if !messages.is_empty() {
                errs.invalid_each("spec.externalName", name, messages);
            }
        }
    } else if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<Ipv4Addr>().is_err() {
        errs.invalid(
            "spec.clusterIP".into(),
            cluster_ip,
            "must be a valid IPv4 address (e.g. 10.96.0.10), `None` for a headless service, or empty to allocate one",
        );
    }
    if headless && matches!(service_type, "NodePort" | "LoadBalancer") {
        errs.invalid(
            "spec.clusterIP".into(),
            cluster_ip,
            format!("may not be set to 'None' for {service_type} services"),
        );
    }
    for (i, ip) in spec.cluster_ips.iter().enumerate() {
        if ip != "None" && ip.parse::<Ipv4Addr>().is_err() {
            errs.invalid(
                index("spec.clusterIPs", i),
                ip,
                "must be a valid IPv4 address",
            );
        }
    }
    if spec.cluster_ips.len() > 1 {
        errs.invalid(
            "spec.clusterIPs".into(),
            format!("{:?}", spec.cluster_ips),
            "may hold one address: this cluster is single-stack IPv4",
        );
    }
    if let Some(first) = spec.cluster_ips.first() {
        if !cluster_ip.is_empty() && first != cluster_ip {
            errs.invalid(
                index("spec.clusterIPs", 0),
                first,
                "must match `clusterIP` when present",
            );
        }
    }
    for (i, family) in spec.ip_families.iter().enumerate() {
        if family != "IPv4" {
            errs.invalid(
                index("spec.ipFamilies", i),
                family,
                "not configured on this cluster (bramble is single-stack IPv4)",
            );
        }
    }
    if let Some(policy) = spec.ip_family_policy.as_deref().filter(|p| !p.is_empty()) {
        let supported = ["PreferDualStack", "RequireDualStack", "SingleStack"];
        if !supported.contains(&policy) {
            errs.not_supported("spec.ipFamilyPolicy".into(), policy, &supported);
        } else if policy == "RequireDualStack" && !(headless && spec.selector.is_empty()) {
            errs.invalid(
                "spec.ipFamilyPolicy".into(),
                policy,
                "this cluster is not configured for dual-stack services",
            );
        }
    }
    if spec.ports.is_empty() && !headless && !external_name {
        errs.required("spec.ports".into());
    }
    let mut names = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let port_path = index("spec.ports", i);
        match port.name.as_deref().filter(|n| !n.is_empty()) {
            None => {
                if spec.ports.len() > 1 {
                    errs.required(child(&port_path, "name"));
                }
            }
            Some(name) => {
                let messages = is_dns1123_label(name);
                if !messages.is_empty() {
                    errs.invalid_each(&child(&port_path, "name"), name, messages);
                } else if !names.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(child(&port_path, "name"), name));
                }
            }
        }
        let protocol = port
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        errs.one_of(
            child(&port_path, "protocol"),
            port.protocol.as_ref(),
            &PROTOCOLS,
        );
        if let Some(msg) = port_number_error(port.port) {
            errs.invalid(child(&port_path, "port"), port.port, msg);
        } else if !ports.insert((port.port, protocol.to_string())) {
            errs.push(FieldError::duplicate(
                port_path.clone(),
                format!("{}/{protocol}", port.port),
            ));
        }
        match &port.target_port {
            None | Some(IntOrString::Int(0)) => {}
            Some(IntOrString::String(s)) if s.is_empty() => {}
            Some(target) => {
                validate_port_num_or_name(target, child(&port_path, "targetPort"), errs)
            }
        }
        if let Some(node_port) = port.node_port.filter(|&p| p != 0) {
            let np_path = child(&port_path, "nodePort");
            if !matches!(service_type, "NodePort" | "LoadBalancer") {
                errs.forbidden(
                    np_path,
                    format!("may not be used when `type` is '{service_type}'"),
                );
            } else if port_number_error(node_port).is_some() {
                errs.invalid(np_path, node_port, "must be between 1 and 65535, inclusive");
            } else if !node_ports.insert((node_port, protocol.to_string())) {
                errs.push(FieldError::duplicate(np_path, node_port));
            }
        }
    }
    validate_labels(&spec.selector, "spec.selector", errs);
    errs.one_of(
        "spec.sessionAffinity".into(),
        spec.session_affinity.as_ref(),
        &["ClientIP", "None"],
    );
    let affinity = spec.session_affinity.as_deref().unwrap_or("None");
    if let Some(timeout) = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
    {
        let path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";
        if affinity != "ClientIP" {
            errs.forbidden(
                path.into(),
                "must not be set when `sessionAffinity` is None",
            );
        } else if !(1..=MAX_AFFINITY_TIMEOUT_SECONDS).contains(&timeout) {
            errs.invalid(
                path.into(),
                timeout,
                format!("must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT_SECONDS}"),
            );
        }
    }
    errs.one_of(
        "spec.internalTrafficPolicy".into(),
        spec.internal_traffic_policy.as_ref(),
        &["Cluster", "Local"],
    );
    errs.one_of(
        "spec.externalTrafficPolicy".into(),
        spec.external_traffic_policy.as_ref(),
        &["Cluster", "Local"],
    );
    if spec
        .external_traffic_policy
        .as_deref()
        .is_some_and(|p| !p.is_empty())
        && !matches!(service_type, "NodePort" | "LoadBalancer")
    {
        errs.invalid(
            "spec.externalTrafficPolicy".into(),
            spec.external_traffic_policy.as_deref().unwrap_or(""),
            "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
        );
    }
    errs.one_of(
        "spec.trafficDistribution".into(),
        spec.traffic_distribution.as_ref(),
        &["PreferClose", "PreferSameNode", "PreferSameZone"],
    );
    if spec.allocate_load_balancer_node_ports.is_some() && service_type != "LoadBalancer" {
        errs.forbidden(
            "spec.allocateLoadBalancerNodePorts".into(),
            "may only be used when `type` is 'LoadBalancer'",
        );
    }
    if spec.load_balancer_class.is_some() && service_type != "LoadBalancer" {
        errs.forbidden(
            "spec.loadBalancerClass".into(),
            "may only be used when `type` is 'LoadBalancer'",
        );
    }
}

pub(super) fn validate_service_update(old: &ServiceSpec, new: &ServiceSpec, errs: &mut Errors) {
    let old_ip = old.cluster_ip.as_deref().unwrap_or("");
    let new_ip = new.cluster_ip.as_deref().unwrap_or("");
    // Changing to or from ExternalName drops or allocates the address.
    let types_keep_ip = service_type(old) != "ExternalName" && service_type(new) != "ExternalName";
    if types_keep_ip && !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip {
        errs.invalid("spec.clusterIP".into(), new_ip, IMMUTABLE);
    }
}

const ADDRESS_TYPES: [&str; 3] = ["FQDN", "IPv4", "IPv6"];
/// Most endpoints in one EndpointSlice, as Kubernetes.
const MAX_SLICE_ENDPOINTS: usize = 1000;
/// Most ports in one EndpointSlice, as Kubernetes.
const MAX_SLICE_PORTS: usize = 20000;

pub(super) fn validate_endpoint_slice(slice: &EndpointSlice, errs: &mut Errors) {
    let address_type = slice.address_type.as_str();
    if address_type.is_empty() {
        errs.required("addressType".into());
    } else if !ADDRESS_TYPES.contains(&address_type) {
        errs.not_supported("addressType".into(), address_type, &ADDRESS_TYPES);
    }
    if slice.endpoints.len() > MAX_SLICE_ENDPOINTS {
        errs.invalid(
            "endpoints".into(),
            slice.endpoints.len(),
            format!("must have at most {MAX_SLICE_ENDPOINTS} items"),
        );
    }
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        let path = index("endpoints", i);
        if endpoint.addresses.is_empty() {
            errs.required(child(&path, "addresses"));
        }
        if endpoint.addresses.len() > 100 {
            errs.invalid(
                child(&path, "addresses"),
                endpoint.addresses.len(),
                "must have at most 100 items",
            );
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            let address_path = index(&child(&path, "addresses"), j);
            match address_type {
                "IPv4" => {
                    if address.parse::<Ipv4Addr>().is_err() {
                        errs.invalid(address_path, address, "must be a valid IPv4 address");
                    }
                }
                "IPv6" => {
                    if address.parse::<std::net::Ipv6Addr>().is_err() {
                        errs.invalid(address_path, address, "must be a valid IPv6 address");
                    }
                }
                _ => errs.invalid_each(&address_path, address, is_dns1123_subdomain(address)),
            }
        }
        if let Some(hostname) = endpoint.hostname.as_deref() {
            errs.invalid_each(
                &child(&path, "hostname"),
                hostname,
                is_dns1123_label(hostname),
            );
        }
    }
    if slice.ports.len() > MAX_SLICE_PORTS {
        errs.invalid(
            "ports".into(),
            slice.ports.len(),
            format!("must have at most {MAX_SLICE_PORTS} items"),
        );
    }
    let mut names = BTreeSet::new();
    for (i, port) in slice.ports.iter().enumerate() {
        let path = index("ports", i);
        let name = port.name.clone().unwrap_or_default();
        if !name.is_empty() {
            errs.invalid_each(&child(&path, "name"), &name, is_dns1123_label(&name));
        }
        if !names.insert(name.clone()) {
            errs.push(FieldError::duplicate(child(&path, "name"), name));
        }
        errs.one_of(child(&path, "protocol"), port.protocol.as_ref(), &PROTOCOLS);
        if let Some(number) = port.port {
            if let Some(msg) = port_number_error(number) {
                errs.invalid(child(&path, "port"), number, msg);
            }
        }
    }
}

pub(super) fn validate_endpoints(endpoints: &Endpoints, errs: &mut Errors) {
    for (i, subset) in endpoints.subsets.iter().enumerate() {
        let path = index("subsets", i);
        if subset.addresses.is_empty() && subset.not_ready_addresses.is_empty() {
            errs.required(child(&path, "addresses or notReadyAddresses"));
        }
        for (field, list) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (j, address) in list.iter().enumerate() {
                let address_path = child(&index(&child(&path, field), j), "ip");
                if address.ip.parse::<Ipv4Addr>().is_err() {
                    errs.invalid(address_path, &address.ip, "must be a valid IPv4 address");
                }
            }
        }
        for (j, port) in subset.ports.iter().enumerate() {
            let port_path = index(&child(&path, "ports"), j);
            match port.port {
                Some(number) => {
                    if let Some(msg) = port_number_error(number) {
                        errs.invalid(child(&port_path, "port"), number, msg);
                    }
                }
                None => errs.required(child(&port_path, "port")),
            }
            errs.one_of(
                child(&port_path, "protocol"),
                port.protocol.as_ref(),
                &PROTOCOLS,
            );
        }
    }
}

/// Most nameservers in a pod's `resolv.conf`, as Kubernetes (and glibc).
pub const MAX_DNS_NAMESERVERS: usize = 3;
/// Most search domains in a pod's `resolv.conf`, as Kubernetes.
pub const MAX_DNS_SEARCHES: usize = 32;

/// `subdomain` and `dnsConfig` of a pod spec (Kubernetes' `validateDNSPolicy`
/// and `validatePodDNSConfig`).
pub(super) fn validate_pod_dns(spec: &PodSpec, path: &str, errs: &mut Errors) {
    if let Some(subdomain) = spec.subdomain.as_deref().filter(|n| !n.is_empty()) {
        errs.invalid_each(
            &child(path, "subdomain"),
            subdomain,
            is_dns1123_label(subdomain),
        );
    }
    let policy_none = spec.dns_policy.as_deref() == Some("None");
    let config_path = child(path, "dnsConfig");
    let Some(config) = &spec.dns_config else {
        if policy_none {
            // Kubernetes adds "must provide `dnsConfig` when `dnsPolicy` is None".
            errs.required(config_path);
        }
        return;
    };
    let nameservers_path = child(&config_path, "nameservers");
    if policy_none && config.nameservers.is_empty() {
        // Kubernetes adds "must provide at least one DNS nameserver when `dnsPolicy` is None".
        errs.required(nameservers_path.clone());
    }
    if config.nameservers.len() > MAX_DNS_NAMESERVERS {
        errs.invalid(
            nameservers_path.clone(),
            config.nameservers.join(","),
            format!("must not have more than {MAX_DNS_NAMESERVERS} nameservers"),
        );
    }
    for (i, ns) in config.nameservers.iter().enumerate() {
        if ns.parse::<std::net::IpAddr>().is_err() {
            errs.invalid(
                index(&nameservers_path, i),
                ns,
                "must be a valid IP address",
            );
        }
    }
    let searches_path = child(&config_path, "searches");
    if config.searches.len() > MAX_DNS_SEARCHES {
        errs.invalid(
            searches_path.clone(),
            config.searches.join(","),
            format!("must not have more than {MAX_DNS_SEARCHES} search paths"),
        );
    }
    for (i, search) in config.searches.iter().enumerate() {
        let name = search.strip_suffix('.').unwrap_or(search);
        errs.invalid_each(
            &index(&searches_path, i),
            search,
            is_dns1123_subdomain(name),
        );
    }
    for (i, option) in config.options.iter().enumerate() {
        if option.name.is_empty() {
            errs.required(child(&index(&child(&config_path, "options"), i), "name"));
        }
    }
}
