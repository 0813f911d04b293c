//! `bramble apply -f`: create objects, or update them from the last applied
//! manifest (kept, as kubectl does, in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, so bramble
//! and kubectl can apply the same objects in turn).
//!
//! Every file is parsed and every object checked before anything is written;
//! then each object is tried on the server with `dryRun=All`. Only when all of
//! them would succeed are they written, so a bad document never leaves a
//! half-applied set behind. Each object is reported as created, configured,
//! unchanged or rejected.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bramble_common::manifest::{self, Document};
use bramble_common::Kind;
use hyper::Method;
use serde_json::{json, Map, Value};

use super::client::{Client, ClientError};
use super::NamespaceArgs;

/// The annotation holding the last applied manifest.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Flags of `bramble apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Files or directories to apply (`-` reads standard input). Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Descend into subdirectories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Namespace flags.
    #[command(flatten)]
    pub namespace: NamespaceArgs,
}

/// One object to apply.
pub struct Planned {
    /// Where it came from (`app.yaml#2`).
    pub origin: String,
    /// Its kind.
    pub kind: Kind,
    /// Its namespace (empty for cluster-scoped kinds).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The manifest as given.
    pub manifest: Value,
}

impl Planned {
    /// `pod/web`, `deployment.apps/web`.
    pub fn display_name(&self) -> String {
        display_name(self.kind, &self.name)
    }
}

/// kubectl's `resource[.group]/name`.
pub fn display_name(kind: Kind, name: &str) -> String {
    let info = kind.info();
    if info.group.is_empty() {
        format!("{}/{name}", info.singular)
    } else {
        format!("{}.{}/{name}", info.singular, info.group)
    }
}

/// The API path of a collection (`namespace` ignored for cluster-scoped kinds).
pub fn collection_path(kind: Kind, namespace: &str) -> String {
    let info = kind.info();
    let prefix = if info.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    };
    if info.namespaced && !namespace.is_empty() {
        format!("{prefix}/namespaces/{namespace}/{}", info.plural)
    } else {
        format!("{prefix}/{}", info.plural)
    }
}

/// The API path of an object.
pub fn object_path(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{}/{name}", collection_path(kind, namespace))
}

fn collect_files(spec: &str, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let path = Path::new(spec);
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("cannot read directory {spec}: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            if entry.is_dir() {
                if recursive {
                    collect_files(&entry.to_string_lossy(), recursive, out)?;
                }
            } else if matches!(
                entry.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(entry);
            }
        }
        Ok(())
    } else if path.exists() {
        out.push(path.to_path_buf());
        Ok(())
    } else {
        Err(format!("the path \"{spec}\" does not exist"))
    }
}

/// Read and parse every document of the given files (`-` is stdin).
pub fn read_documents(files: &[String], recursive: bool) -> Result<Vec<Document>, String> {
    let mut documents = Vec::new();
    for spec in files {
        if spec == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            documents.extend(manifest::parse_documents("-", &text).map_err(|e| e.to_string())?);
            continue;
        }
        let mut paths = Vec::new();
        collect_files(spec, recursive, &mut paths)?;
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let source = path.display().to_string();
            documents.extend(manifest::parse_documents(&source, &text).map_err(|e| e.to_string())?);
        }
    }
    Ok(documents)
}

/// Check every document locally and work out where it goes. Returns the
/// objects, or one message per rejected document.
pub fn plan(
    documents: Vec<Document>,
    flag_namespace: Option<&str>,
    default_namespace: &str,
) -> Result<Vec<Planned>, Vec<String>> {
    let mut planned = Vec::new();
    let mut errors = Vec::new();
    for doc in documents {
        let origin = format!("{}:{}", doc.source, doc.line);
        let object = match manifest::decode_object(doc.value.clone()) {
            Ok(object) => object,
            Err(e) => {
                errors.push(format!("{origin}: {e}"));
                continue;
            }
        };
        let kind = object.kind();
        let meta = object.metadata();
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            errors.push(format!("{origin}: {kind} has no metadata.name (apply needs a name; generateName only works with create)"));
            continue;
        };
        let mut manifest = doc.value;
        let namespace = if kind.namespaced() {
            match (meta.namespace.as_deref(), flag_namespace) {
                (Some(ns), Some(flag)) if ns != flag => {
                    errors.push(format!(
                        "{origin}: the namespace from the provided object \"{ns}\" does not match the namespace \"{flag}\"; pass --namespace={ns} or remove it from the manifest"
                    ));
                    continue;
                }
                (Some(ns), _) => ns.to_string(),
                (None, Some(flag)) => flag.to_string(),
                (None, None) => default_namespace.to_string(),
            }
        } else {
            String::new()
        };
        if kind.namespaced() {
            manifest["metadata"]["namespace"] = json!(namespace);
        }
        planned.push(Planned {
            origin,
            kind,
            namespace,
            name,
            manifest,
        });
    }
    if errors.is_empty() {
        Ok(planned)
    } else {
        Err(errors)
    }
}

/// What applying one object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The object was created.
    Created,
    /// The object was changed.
    Configured,
    /// Nothing to change.
    Unchanged,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// A JSON merge patch turning `from` into `to` (null deletes).
pub fn merge_patch_between(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = Map::new();
            for key in a.keys() {
                if !b.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            for (key, new) in b {
                match a.get(key) {
                    Some(old) if old == new => {}
                    Some(old @ Value::Object(_)) if new.is_object() => {
                        let inner = merge_patch_between(old, new);
                        if inner.as_object().is_some_and(|m| !m.is_empty()) {
                            patch.insert(key.clone(), inner);
                        }
                    }
                    _ => {
                        patch.insert(key.clone(), new.clone());
                    }
                }
            }
            Value::Object(patch)
        }
        _ => to.clone(),
    }
}

fn with_last_applied(manifest: &Value) -> Value {
    let mut manifest = manifest.clone();
    // As kubectl does: the recorded manifest has `annotations: {}` (never
    // null) without the annotation itself.
    if !manifest["metadata"]["annotations"].is_object() {
        manifest["metadata"]["annotations"] = json!({});
    }
    if let Some(annotations) = manifest["metadata"]["annotations"].as_object_mut() {
        annotations.remove(LAST_APPLIED);
    }
    // kubectl records compact JSON with sorted keys and a final newline; the
    // same text lets kubectl and bramble apply in turn and see "unchanged".
    let recorded = serde_json::to_string(&manifest).unwrap_or_default() + "\n";
    manifest["metadata"]["annotations"][LAST_APPLIED] = json!(recorded);
    manifest
}

/// Apply one object; `dry_run` asks the server to check without writing.
pub async fn apply_one(
    client: &Client,
    object: &Planned,
    dry_run: bool,
) -> Result<Outcome, ClientError> {
    let suffix = if dry_run {
        "?dryRun=All&fieldManager=bramble"
    } else {
        "?fieldManager=bramble"
    };
    let path = object_path(object.kind, &object.namespace, &object.name);
    let modified = with_last_applied(&object.manifest);
    match client.get(&path).await {
        Err(e) if e.code() == Some(404) => {
            let body = serde_json::to_vec(&modified).unwrap_or_default();
            let collection = collection_path(object.kind, &object.namespace);
            client
                .json(
                    Method::POST,
                    &format!("{collection}{suffix}"),
                    Some("application/json"),
                    None,
                    body,
                )
                .await?;
            Ok(Outcome::Created)
        }
        Err(e) => Err(e),
        Ok(current) => {
            let last = current["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .map(|v| with_last_applied(&v))
                .unwrap_or_else(|| json!({}));
            let patch = merge_patch_between(&last, &modified);
            if patch.as_object().is_some_and(|m| m.is_empty()) {
                return Ok(Outcome::Unchanged);
            }
            let body = serde_json::to_vec(&patch).unwrap_or_default();
            client
                .json(
                    Method::PATCH,
                    &format!("{path}{suffix}"),
                    Some("application/merge-patch+json"),
                    None,
                    body,
                )
                .await?;
            Ok(Outcome::Configured)
        }
    }
}

/// Run `bramble apply`.
pub async fn run(kubeconfig: Option<&Path>, args: ApplyArgs) -> Result<ExitCode, ClientError> {
    let documents = match read_documents(&args.files, args.recursive) {
        Ok(docs) => docs,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was applied");
            return Ok(ExitCode::FAILURE);
        }
    };
    let client = Client::from_kubeconfig(kubeconfig)?;
    let planned = match plan(
        documents,
        args.namespace.namespace.as_deref(),
        &client.default_namespace,
    ) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("rejected: {e}");
            }
            eprintln!("nothing was applied");
            return Ok(ExitCode::FAILURE);
        }
    };
    if planned.is_empty() {
        eprintln!("error: no objects passed to apply");
        return Ok(ExitCode::FAILURE);
    }
    // Namespaces created by this apply do not exist yet during the dry run.
    let new_namespaces: Vec<&str> = planned
        .iter()
        .filter(|p| p.kind == Kind::Namespace)
        .map(|p| p.name.as_str())
        .collect();
    let mut rejected = Vec::new();
    for object in &planned {
        match apply_one(&client, object, true).await {
            Ok(_) => {}
            Err(ClientError::Api(status))
                if status.code == 404
                    && new_namespaces.contains(&object.namespace.as_str())
                    && status.message.starts_with("namespaces ") => {}
            Err(ClientError::Api(status)) => rejected.push(format!(
                "{} ({}): {}",
                object.display_name(),
                object.origin,
                status.message
            )),
            Err(other) => return Err(other),
        }
    }
    if !rejected.is_empty() {
        for r in &rejected {
            eprintln!("rejected: {r}");
        }
        eprintln!(
            "nothing was applied ({} of {} objects rejected)",
            rejected.len(),
            planned.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    let mut failed = false;
    for object in &planned {
        match apply_one(&client, object, false).await {
            Ok(outcome) => println!("{} {}", object.display_name(), outcome.as_str()),
            Err(ClientError::Api(status)) => {
                failed = true;
                eprintln!(
                    "rejected: {} ({}): {}",
                    object.display_name(),
                    object.origin,
                    status.message
                );
            }
            Err(other) => return Err(other),
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_between_sets_changes_and_deletes_removed_keys() {
        let from = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        let to = json!({"a": 1, "b": {"c": 5}, "l": [1], "e": "x"});
        assert_eq!(
            merge_patch_between(&from, &to),
            json!({"b": {"c": 5, "d": null}, "l": [1], "e": "x"})
        );
        assert_eq!(merge_patch_between(&to, &to), json!({}));
    }

    #[test]
    fn paths_follow_kubernetes() {
        assert_eq!(
            object_path(Kind::Pod, "default", "web"),
            "/api/v1/namespaces/default/pods/web"
        );
        assert_eq!(object_path(Kind::Node, "", "pi-1"), "/api/v1/nodes/pi-1");
        assert_eq!(
            collection_path(Kind::Deployment, "x"),
            "/apis/apps/v1/namespaces/x/deployments"
        );
        assert_eq!(display_name(Kind::Deployment, "web"), "deployment.apps/web");
    }
}
