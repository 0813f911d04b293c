//! `bramble get`, `bramble describe` and `bramble delete`.

use std::path::Path;
use std::process::ExitCode;

use bramble_common::Kind;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::Value;

use super::apply::{collection_path, display_name, object_path, plan, read_documents};
use super::client::{Client, ClientError};
use super::output::{print_json, print_table, print_yaml, TABLE_ACCEPT};
use super::NamespaceArgs;

/// Output formats of `bramble get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// More columns.
    Wide,
    /// The objects as YAML.
    Yaml,
    /// The objects as JSON.
    Json,
    /// `kind/name` per object.
    Name,
}

/// Flags of `bramble get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Kind to list (`pods`, `po`, `deployments.apps`, `nodes`, ...).
    pub kind: String,
    /// Names of objects to show (all when empty).
    pub names: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
    /// After listing, watch for changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector (`app=web,tier!=db`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector (`spec.nodeName=pi-1`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Namespace flags.
    #[command(flatten)]
    pub namespace: NamespaceArgs,
}

/// Flags of `bramble describe`.
#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// Namespace flags.
    #[command(flatten)]
    pub namespace: NamespaceArgs,
}

/// Flags of `bramble delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Kind of the objects (omit with -f).
    pub kind: Option<String>,
    /// Names of the objects.
    pub names: Vec<String>,
    /// Delete the objects described in these files.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Seconds a pod gets to stop (default: its terminationGracePeriodSeconds).
    #[arg(long = "grace-period")]
    pub grace_period: Option<i64>,
    /// With --grace-period=0: delete at once, without waiting for the node.
    #[arg(long)]
    pub force: bool,
    /// Wait until the objects are gone (a pod: once its node stopped it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub wait: bool,
    /// Give up waiting after this many seconds (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// Namespace flags.
    #[command(flatten)]
    pub namespace: NamespaceArgs,
}

fn resolve_kind(name: &str) -> Result<Kind, ClientError> {
    Kind::from_cli_name(name).ok_or_else(|| {
        let known: Vec<String> = Kind::all()
            .iter()
            .map(|k| {
                let info = k.info();
                match info.short_names.first() {
                    Some(short) => format!("{} ({short})", info.plural),
                    None => info.plural.to_string(),
                }
            })
            .collect();
        ClientError::Config(format!(
            "the server doesn't have a resource type \"{name}\"; bramble serves: {}",
            known.join(", ")
        ))
    })
}

fn print_api_error(status: &bramble_common::meta::Status) {
    eprintln!("Error from server ({}): {}", status.reason, status.message);
}

fn query_string(args: &GetArgs, extra: &[(&str, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    if let Some(l) = &args.selector {
        parts.push(format!("labelSelector={}", enc(l)));
    }
    if let Some(f) = &args.field_selector {
        parts.push(format!("fieldSelector={}", enc(f)));
    }
    for (k, v) in extra {
        parts.push(format!("{k}={}", enc(v)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Run `bramble get`.
pub async fn get(kubeconfig: Option<&Path>, args: GetArgs) -> Result<ExitCode, ClientError> {
    let kind = resolve_kind(&args.kind)?;
    let client = Client::from_kubeconfig(kubeconfig)?;
    let namespace = if args.all_namespaces || !kind.namespaced() {
        String::new()
    } else {
        args.namespace
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace.clone())
    };
    let with_namespace = args.all_namespaces && kind.namespaced();
    let wide = args.output == Some(OutputFormat::Wide);
    let structured = matches!(
        args.output,
        Some(OutputFormat::Yaml | OutputFormat::Json | OutputFormat::Name)
    );

    let mut failed = false;
    if !args.names.is_empty() {
        for name in &args.names {
            let path = object_path(kind, &namespace, name);
            let accept = if structured { None } else { Some(TABLE_ACCEPT) };
            match client
                .json(Method::GET, &path, None, accept, Vec::new())
                .await
            {
                Ok(value) => match args.output {
                    Some(OutputFormat::Yaml) => print_yaml(&value),
                    Some(OutputFormat::Json) => print_json(&value),
                    Some(OutputFormat::Name) => println!("{}", display_name(kind, name)),
                    _ => {
                        print_table(&value, wide, with_namespace);
                    }
                },
                Err(ClientError::Api(status)) => {
                    print_api_error(&status);
                    failed = true;
                }
                Err(e) => return Err(e),
            }
        }
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }

    let path = format!(
        "{}{}",
        collection_path(kind, &namespace),
        query_string(&args, &[])
    );
    let accept = if structured { None } else { Some(TABLE_ACCEPT) };
    let list = match client
        .json(Method::GET, &path, None, accept, Vec::new())
        .await
    {
        Ok(v) => v,
        Err(ClientError::Api(status)) => {
            print_api_error(&status);
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e),
    };
    let resource_version = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let layout = match args.output {
        Some(OutputFormat::Yaml) => {
            print_yaml(&list);
            None
        }
        Some(OutputFormat::Json) => {
            print_json(&list);
            None
        }
        Some(OutputFormat::Name) => {
            for item in list["items"].as_array().into_iter().flatten() {
                println!(
                    "{}",
                    display_name(kind, item["metadata"]["name"].as_str().unwrap_or(""))
                );
            }
            None
        }
        _ => {
            let empty = list["rows"].as_array().is_none_or(Vec::is_empty);
            if empty && !args.watch {
                if kind.namespaced() && !args.all_namespaces {
                    eprintln!("No resources found in {namespace} namespace.");
                } else {
                    eprintln!("No resources found");
                }
                None
            } else {
                Some(print_table(&list, wide, with_namespace))
            }
        }
    };
    if !args.watch {
        return Ok(ExitCode::SUCCESS);
    }
    let watch_query = query_string(
        &args,
        &[
            ("watch", "true".into()),
            ("resourceVersion", resource_version),
        ],
    );
    let path = format!("{}{}", collection_path(kind, &namespace), watch_query);
    let (status, mut body) = client
        .send(Method::GET, &path, None, accept, Vec::new())
        .await?;
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        print_api_error(&super::client::status_from(status, &bytes));
        return Ok(ExitCode::FAILURE);
    }
    let mut layout = layout;
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Unreachable {
            server: client.server().to_string(),
            reason: e.to_string(),
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=pos).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let object = &event["object"];
            match args.output {
                Some(OutputFormat::Yaml) => {
                    println!("---");
                    print_yaml(object);
                }
                Some(OutputFormat::Json) => print_json(object),
                Some(OutputFormat::Name) => {
                    println!(
                        "{}",
                        display_name(kind, object["metadata"]["name"].as_str().unwrap_or(""))
                    )
                }
                _ => match &mut layout {
                    Some(layout) => {
                        let rows = layout.rows(object);
                        layout.fit(&rows);
                        for row in rows {
                            println!("{}", layout.line(&row));
                        }
                    }
                    None => layout = Some(print_table(object, wide, with_namespace)),
                },
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn field(label: &str, value: impl std::fmt::Display) {
    println!("{:<14}{value}", format!("{label}:"));
}

fn map_lines(value: &Value, skip: &[&str]) -> Vec<String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_string)
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn print_map(label: &str, value: &Value, skip: &[&str]) {
    let lines = map_lines(value, skip);
    if lines.is_empty() {
        field(label, "<none>");
    } else {
        for (i, line) in lines.iter().enumerate() {
            if i == 0 {
                field(label, line);
            } else {
                println!("{:<14}{line}", "");
            }
        }
    }
}

fn print_conditions(conditions: &Value) {
    let Some(list) = conditions.as_array().filter(|l| !l.is_empty()) else {
        return;
    };
    println!("Conditions:");
    println!("  {:<20} {:<8} {:<28} MESSAGE", "TYPE", "STATUS", "REASON");
    for c in list {
        println!(
            "  {:<20} {:<8} {:<28} {}",
            c["type"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        );
    }
}

fn indented_yaml(label: &str, value: &Value) {
    if value.is_null() {
        return;
    }
    println!("{label}:");
    if let Ok(text) = serde_yaml::to_string(value) {
        for line in text.lines() {
            println!("  {line}");
        }
    }
}

/// Run `bramble describe`.
pub async fn describe(
    kubeconfig: Option<&Path>,
    args: DescribeArgs,
) -> Result<ExitCode, ClientError> {
    let kind = resolve_kind(&args.kind)?;
    let client = Client::from_kubeconfig(kubeconfig)?;
    let namespace = if kind.namespaced() {
        args.namespace
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace.clone())
    } else {
        String::new()
    };
    let object = match client.get(&object_path(kind, &namespace, &args.name)).await {
        Ok(o) => o,
        Err(ClientError::Api(status)) => {
            print_api_error(&status);
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e),
    };
    let meta = &object["metadata"];
    field("Name", meta["name"].as_str().unwrap_or(""));
    if kind.namespaced() {
        field("Namespace", meta["namespace"].as_str().unwrap_or(""));
    }
    print_map("Labels", &meta["labels"], &[]);
    print_map(
        "Annotations",
        &meta["annotations"],
        &[super::apply::LAST_APPLIED],
    );
    field("Created", meta["creationTimestamp"].as_str().unwrap_or(""));
    match kind {
        Kind::Pod => describe_pod(&object),
        Kind::Node => describe_node(&client, &object).await?,
        _ => {
            indented_yaml("Spec", &object["spec"]);
            for key in [
                "data",
                "binaryData",
                "type",
                "involvedObject",
                "reason",
                "message",
            ] {
                indented_yaml(key, &object[key]);
            }
            indented_yaml("Status", &object["status"]);
        }
    }
    print_events(&client, kind, &namespace, &args.name).await;
    Ok(ExitCode::SUCCESS)
}

fn describe_pod(pod: &Value) {
    let spec = &pod["spec"];
    let status = &pod["status"];
    field("Node", spec["nodeName"].as_str().unwrap_or("<none>"));
    field("Status", bramble_common::table::pod_status(pod));
    field("IP", status["podIP"].as_str().unwrap_or("<none>"));
    for (title, key, status_key) in [
        ("Init Containers", "initContainers", "initContainerStatuses"),
        ("Containers", "containers", "containerStatuses"),
    ] {
        let Some(containers) = spec[key].as_array().filter(|c| !c.is_empty()) else {
            continue;
        };
        println!("{title}:");
        for c in containers {
            let name = c["name"].as_str().unwrap_or("");
            let cs = status[status_key]
                .as_array()
                .and_then(|l| l.iter().find(|s| s["name"] == name))
                .cloned()
                .unwrap_or(Value::Null);
            println!("  {name}:");
            println!("    Image:          {}", c["image"].as_str().unwrap_or(""));
            let state = &cs["state"];
            let state_text = if state["running"].is_object() {
                format!(
                    "Running (since {})",
                    state["running"]["startedAt"].as_str().unwrap_or("?")
                )
            } else if state["terminated"].is_object() {
                format!(
                    "Terminated ({}, exit code {})",
                    state["terminated"]["reason"].as_str().unwrap_or(""),
                    state["terminated"]["exitCode"]
                )
            } else if state["waiting"].is_object() {
                format!(
                    "Waiting ({})",
                    state["waiting"]["reason"].as_str().unwrap_or("")
                )
            } else {
                "Unknown".into()
            };
            println!("    State:          {state_text}");
            println!(
                "    Ready:          {}",
                cs["ready"].as_bool().unwrap_or(false)
            );
            println!(
                "    Restart Count:  {}",
                cs["restartCount"].as_i64().unwrap_or(0)
            );
            for (label, key) in [("Requests", "requests"), ("Limits", "limits")] {
                let lines = map_lines(&c["resources"][key], &[]);
                if !lines.is_empty() {
                    println!("    {label}:       {}", lines.join(", "));
                }
            }
        }
    }
    print_conditions(&status["conditions"]);
    indented_yaml("Volumes", &spec["volumes"]);
}

async fn describe_node(client: &Client, node: &Value) -> Result<(), ClientError> {
    let status = &node["status"];
    let roles = map_lines(&node["metadata"]["labels"], &[])
        .into_iter()
        .filter_map(|l| {
            l.strip_prefix("node-role.kubernetes.io/")
                .map(|r| r.split('=').next().unwrap_or("").to_string())
        })
        .collect::<Vec<_>>();
    field(
        "Roles",
        if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        },
    );
    field(
        "PodCIDR",
        node["spec"]["podCIDR"].as_str().unwrap_or("<none>"),
    );
    let taints: Vec<String> = node["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| match t["value"].as_str() {
                    Some(v) => format!(
                        "{}={v}:{}",
                        t["key"].as_str().unwrap_or(""),
                        t["effect"].as_str().unwrap_or("")
                    ),
                    None => format!(
                        "{}:{}",
                        t["key"].as_str().unwrap_or(""),
                        t["effect"].as_str().unwrap_or("")
                    ),
                })
                .collect()
        })
        .unwrap_or_default();
    field(
        "Taints",
        if taints.is_empty() {
            "<none>".to_string()
        } else {
            taints.join(", ")
        },
    );
    field(
        "Unschedulable",
        node["spec"]["unschedulable"].as_bool().unwrap_or(false),
    );
    print_conditions(&status["conditions"]);
    if let Some(addresses) = status["addresses"].as_array() {
        println!("Addresses:");
        for a in addresses {
            println!(
                "  {}: {}",
                a["type"].as_str().unwrap_or(""),
                a["address"].as_str().unwrap_or("")
            );
        }
    }
    for (label, key) in [("Capacity", "capacity"), ("Allocatable", "allocatable")] {
        let lines = map_lines(&status[key], &[]);
        if !lines.is_empty() {
            println!("{label}:");
            for l in lines {
                println!("  {}", l.replacen('=', ": ", 1));
            }
        }
    }
    let info = &status["nodeInfo"];
    if info.is_object() {
        println!("System Info:");
        for (label, key) in [
            ("Kernel Version", "kernelVersion"),
            ("OS Image", "osImage"),
            ("Operating System", "operatingSystem"),
            ("Architecture", "architecture"),
            ("Container Runtime Version", "containerRuntimeVersion"),
            ("Agent Version", "kubeletVersion"),
        ] {
            println!(
                "  {:<27}{}",
                format!("{label}:"),
                info[key].as_str().unwrap_or("")
            );
        }
    }
    let name = node["metadata"]["name"].as_str().unwrap_or("");
    let pods = client
        .get(&format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{name}"
        ))
        .await?;
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    println!("Pods:           ({} in total)", items.len());
    if !items.is_empty() {
        println!(
            "  {:<20} {:<40} {:<12} MEMORY REQUESTS",
            "NAMESPACE", "NAME", "CPU REQUESTS"
        );
        for pod in &items {
            let sum = |res: &str| -> String {
                let values: Vec<String> = pod["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["resources"]["requests"][res].as_str().map(str::to_string))
                    .collect();
                if values.is_empty() {
                    "0".into()
                } else {
                    values.join("+")
                }
            };
            println!(
                "  {:<20} {:<40} {:<12} {}",
                pod["metadata"]["namespace"].as_str().unwrap_or(""),
                pod["metadata"]["name"].as_str().unwrap_or(""),
                sum("cpu"),
                sum("memory")
            );
        }
    }
    Ok(())
}

async fn print_events(client: &Client, kind: Kind, namespace: &str, name: &str) {
    let selector = format!(
        "involvedObject.name%3D{name},involvedObject.kind%3D{}",
        kind.name()
    );
    let path = format!(
        "{}?fieldSelector={selector}",
        collection_path(Kind::Event, namespace)
    );
    let events = match client.get(&path).await {
        Ok(e) => e,
        Err(_) => return,
    };
    let items = events["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("Events:       <none>");
        return;
    }
    println!("Events:");
    println!("  {:<8} {:<20} {:<6} MESSAGE", "TYPE", "REASON", "COUNT");
    for e in items {
        println!(
            "  {:<8} {:<20} {:<6} {}",
            e["type"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or(""),
            e["count"].as_i64().unwrap_or(1),
            e["message"].as_str().unwrap_or("")
        );
    }
}

/// Run `bramble delete`.
pub async fn delete(kubeconfig: Option<&Path>, args: DeleteArgs) -> Result<ExitCode, ClientError> {
    let client = Client::from_kubeconfig(kubeconfig)?;
    let mut targets: Vec<(Kind, String, String)> = Vec::new();
    if !args.files.is_empty() {
        if args.kind.is_some() {
            return Err(ClientError::Config(
                "give either KIND NAME... or -f FILE, not both".into(),
            ));
        }
        let documents = read_documents(&args.files, false).map_err(ClientError::Config)?;
        let planned = plan(
            documents,
            args.namespace.namespace.as_deref(),
            &client.default_namespace,
        )
        .map_err(|errors| ClientError::Config(errors.join("\n")))?;
        targets.extend(planned.into_iter().map(|p| (p.kind, p.namespace, p.name)));
    } else {
        let kind_name = args
            .kind
            .as_deref()
            .ok_or_else(|| ClientError::Config("give KIND NAME... or -f FILE".into()))?;
        let kind = resolve_kind(kind_name)?;
        if args.names.is_empty() {
            return Err(ClientError::Config(format!(
                "give the names of the {} to delete",
                kind.info().plural
            )));
        }
        let namespace = if kind.namespaced() {
            args.namespace
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace.clone())
        } else {
            String::new()
        };
        targets.extend(
            args.names
                .iter()
                .map(|n| (kind, namespace.clone(), n.clone())),
        );
    }
    let grace = match (args.grace_period, args.force) {
        (Some(g), _) if g < 0 => {
            return Err(ClientError::Config(format!(
                "--grace-period {g}: give 0 or more seconds"
            )))
        }
        (Some(0), false) => {
            return Err(ClientError::Config(
                "--grace-period=0 deletes without waiting for the node to stop the pod: add --force to confirm".into(),
            ))
        }
        (None, true) => {
            return Err(ClientError::Config(
                "--force needs --grace-period=0".into(),
            ))
        }
        (grace, _) => grace,
    };
    let body = match grace {
        Some(g) => serde_json::to_vec(&serde_json::json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": g,
        }))
        .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut failed = false;
    let mut pending = Vec::new();
    for (kind, namespace, name) in targets {
        let path = object_path(kind, &namespace, &name);
        let content_type = (!body.is_empty()).then_some("application/json");
        match client
            .json(Method::DELETE, &path, content_type, None, body.clone())
            .await
        {
            Ok(object) => {
                println!("{} \"{name}\" deleted", kind.info().singular);
                if object["metadata"]["deletionTimestamp"].is_string() {
                    let uid = object["metadata"]["uid"].as_str().unwrap_or("").to_string();
                    pending.push((kind, path, name, uid));
                }
            }
            Err(ClientError::Api(status)) => {
                print_api_error(&status);
                failed = true;
            }
            Err(e) => return Err(e),
        }
    }
    if args.wait && !pending.is_empty() {
        let limit = (args.timeout > 0).then(|| std::time::Duration::from_secs(args.timeout));
        if !wait_deleted(&client, &pending, limit).await? {
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Wait until each `(kind, path, name, uid)` is gone (or replaced by an
/// object with another UID); false when `limit` passed first.
async fn wait_deleted(
    client: &Client,
    pending: &[(Kind, String, String, String)],
    limit: Option<std::time::Duration>,
) -> Result<bool, ClientError> {
    let started = std::time::Instant::now();
    for (kind, path, name, uid) in pending {
        loop {
            match client.get(path).await {
                Ok(object) if object["metadata"]["uid"].as_str() == Some(uid.as_str()) => {}
                Ok(_) => break,
                Err(ClientError::Api(status)) if status.code == 404 => break,
                Err(e) => return Err(e),
            }
            if limit.is_some_and(|l| started.elapsed() >= l) {
                eprintln!(
                    "error: timed out waiting for {} \"{name}\" to be deleted (its node has not stopped it yet)",
                    kind.info().singular
                );
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(true)
}
