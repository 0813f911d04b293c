//! Table columns and cells of Endpoints, EndpointSlices and the Service's
//! EXTERNAL-IP, as kubectl's printers (`pkg/printers/internalversion`) make
//! them.

use serde_json::{json, Value};

use super::{col, s, Column};

/// At most this many entries are listed before ` + N more...`.
const MAX_LISTED: usize = 3;

/// `a,b,c + N more...` (kubectl's `listWithMoreString`); `empty` when none.
fn list_with_more(list: &[String], count: usize, empty: &str) -> String {
    if count > MAX_LISTED {
        return format!("{} + {} more...", list.join(","), count - MAX_LISTED);
    }
    if list.is_empty() {
        return empty.to_string();
    }
    list.join(",")
}

/// The columns of Endpoints.
pub(super) fn endpoints_columns(name: Column, age: Column) -> Vec<Column> {
    vec![
        name,
        col(
            "Endpoints",
            0,
            "The ready addresses and ports of the Service.",
        ),
        age,
    ]
}

/// The columns of EndpointSlices.
pub(super) fn endpoint_slice_columns(name: Column, age: Column) -> Vec<Column> {
    vec![
        name,
        col("AddressType", 0, "IPv4, IPv6 or FQDN."),
        col("Ports", 0, "The ports of the slice."),
        col("Endpoints", 0, "The addresses of the slice."),
        age,
    ]
}

/// The ENDPOINTS cell of an Endpoints object: ready `ip:port` pairs, `<none>`
/// without subsets (kubectl's `formatEndpoints`).
pub(super) fn endpoints_cell(o: &Value) -> String {
    let subsets = o["subsets"].as_array().cloned().unwrap_or_default();
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut list = Vec::new();
    let mut count = 0;
    for subset in &subsets {
        let addresses = subset["addresses"].as_array().cloned().unwrap_or_default();
        let ports = subset["ports"].as_array().cloned().unwrap_or_default();
        if ports.is_empty() {
            count += addresses.len();
            for a in &addresses {
                if list.len() < MAX_LISTED {
                    list.push(s(&a["ip"]).to_string());
                }
            }
            continue;
        }
        for port in &ports {
            count += addresses.len();
            for a in &addresses {
                if list.len() < MAX_LISTED {
                    list.push(format!(
                        "{}:{}",
                        s(&a["ip"]),
                        port["port"].as_i64().unwrap_or(0)
                    ));
                }
            }
        }
    }
    list_with_more(&list, count, "")
}

/// The cells of an EndpointSlice after its name (address type, ports,
/// endpoints), as kubectl's `formatDiscoveryPorts`/`formatDiscoveryEndpoints`.
pub(super) fn endpoint_slice_cells(o: &Value) -> [Value; 3] {
    let ports = o["ports"].as_array().cloned().unwrap_or_default();
    let port_list: Vec<String> = ports
        .iter()
        .take(MAX_LISTED)
        .map(|p| match (p["port"].as_i64(), p["name"].as_str()) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    let addresses: Vec<String> = o["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .map(|a| s(&a).to_string())
        .collect();
    let listed: Vec<String> = addresses.iter().take(MAX_LISTED).cloned().collect();
    [
        json!(s(&o["addressType"])),
        json!(list_with_more(&port_list, ports.len(), "<unset>")),
        json!(list_with_more(&listed, addresses.len(), "<unset>")),
    ]
}

/// The EXTERNAL-IP cell of a Service (kubectl's `getServiceExternalIP`):
/// `<none>` for ClusterIP and NodePort, the ingress addresses or
/// `<pending>` for LoadBalancer, the alias for ExternalName.
pub(super) fn service_external_ip(o: &Value) -> String {
    let spec = &o["spec"];
    let external_ips: Vec<String> = spec["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| s(v).to_string())
        .collect();
    match s(&spec["type"]) {
        "" | "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".into(),
        "" | "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut ingress: Vec<String> = o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i["ip"]
                        .as_str()
                        .filter(|x| !x.is_empty())
                        .or_else(|| i["hostname"].as_str())
                        .map(str::to_string)
                })
                .collect();
            ingress.extend(external_ips);
            // The whole list: kube-apiserver prints its tables wide, so it
            // never shortens it (kubectl's own `...` is for client-side
            // printing only).
            if ingress.is_empty() {
                "<pending>".into()
            } else {
                ingress.join(",")
            }
        }
        "ExternalName" => s(&spec["externalName"]).to_string(),
        _ => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_list_ready_addresses_with_ports() {
        let o = json!({"subsets": [{
            "addresses": [{"ip": "10.244.1.2"}, {"ip": "10.244.2.2"}],
            "notReadyAddresses": [{"ip": "10.244.1.9"}],
            "ports": [{"port": 80}]
        }]});
        assert_eq!(endpoints_cell(&o), "10.244.1.2:80,10.244.2.2:80");
        let many = json!({"subsets": [{
            "addresses": [{"ip": "a"}, {"ip": "b"}, {"ip": "c"}, {"ip": "d"}, {"ip": "e"}],
            "ports": [{"port": 1}]
        }]});
        assert_eq!(endpoints_cell(&many), "a:1,b:1,c:1 + 2 more...");
        assert_eq!(endpoints_cell(&json!({})), "<none>");
    }

    #[test]
    fn slices_list_ports_and_addresses() {
        let o = json!({"addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.244.1.2"]}, {"addresses": ["10.244.2.2"]}]});
        let [t, p, e] = endpoint_slice_cells(&o);
        assert_eq!(
            (t, p, e),
            (json!("IPv4"), json!("8080"), json!("10.244.1.2,10.244.2.2"))
        );
        let empty = json!({"addressType": "IPv4", "endpoints": []});
        assert_eq!(endpoint_slice_cells(&empty)[1], json!("<unset>"));
        assert_eq!(endpoint_slice_cells(&empty)[2], json!("<unset>"));
    }

    #[test]
    fn external_ip_per_type() {
        assert_eq!(
            service_external_ip(&json!({"spec": {"type": "ClusterIP"}})),
            "<none>"
        );
        assert_eq!(
            service_external_ip(&json!({"spec": {"type": "LoadBalancer"}})),
            "<pending>"
        );
        let lb = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "172.31.0.10"}]}}});
        assert_eq!(service_external_ip(&lb), "172.31.0.10");
        let many = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [
            {"ip": "172.31.0.10"}, {"ip": "172.31.0.11"}, {"hostname": "lb-é.example"}]}}});
        assert_eq!(
            service_external_ip(&many),
            "172.31.0.10,172.31.0.11,lb-é.example"
        );
        let en = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(service_external_ip(&en), "db.example.com");
    }
}
