//! Pod features in real containers, through the stock kubectl: the
//! environment (`envFrom`, `configMapKeyRef`, `secretKeyRef`, `fieldRef`,
//! `resourceFieldRef`) and the security settings: `seccompProfile` (`RuntimeDefault`, `Unconfined`,
//! `Localhost`) at pod and container level, the Pod Security `restricted`
//! settings (`runAsNonRoot`, `allowPrivilegeEscalation: false`,
//! `capabilities.drop: [ALL]`, `supplementalGroups`), the kubelet's
//! `runAsNonRoot` refusal, and the API's field errors.
//!
//! Every assertion reads what the process saw from inside its container
//! (its log); every wait polls with a deadline; [`RealNode`] removes the
//! containers when the test ends, pass or fail.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::real::{RealNode, IMAGE};
use support::{add_node, fails, ok, wait_until, Master};

/// How long a pod may take to get where the test expects it.
const SETTLE: Duration = Duration::from_secs(60);

/// Tries `unshare -U` (refused by the default filter, which denies
/// `unshare`) and `mkdir` (refused by the test's Localhost profile).
const PROBE: &str =
    "if unshare -U true 2>/dev/null; then echo unshare=allowed; else echo unshare=denied; fi; \
     if mkdir /tmp/probe 2>/dev/null; then echo mkdir=allowed; else echo mkdir=denied; fi";

/// Prints who the process is and what it may do.
const IDENTITY: &str = "echo uid=$(id -u) gid=$(id -g) groups=\"$(id -G)\"; \
     grep -E '^(NoNewPrivs|CapEff|Seccomp):' /proc/self/status";

fn pod(name: &str, node: &str, script: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE, "command": ["sh", "-c", script]}],
        },
    })
}

fn kubectl_apply(master: &Master, object: &Value) -> std::process::Output {
    let file = master.data_dir.join(format!(
        "{}.json",
        object["metadata"]["name"].as_str().unwrap_or("object")
    ));
    std::fs::write(&file, object.to_string()).expect("write manifest");
    master.kubectl(&["apply", "-f", file.to_str().expect("path")])
}

/// The log of a pod that ran to completion.
fn log_of_succeeded(master: &Master, name: &str) -> String {
    wait_until(&format!("pod {name} Succeeded"), SETTLE, || {
        let phase = ok(master.kubectl(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]));
        if phase == "Succeeded" {
            Ok(())
        } else {
            let status = ok(master.kubectl(&["get", "pod", name, "-o", "jsonpath={.status}"]));
            Err(format!("phase {phase:?}: {status}"))
        }
    });
    ok(master.kubectl(&["logs", name]))
}

/// The container's waiting state once it has `reason`.
fn waiting(master: &Master, name: &str, reason: &str) -> String {
    wait_until(&format!("pod {name} waiting with {reason}"), SETTLE, || {
        let state = ok(master.kubectl(&[
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}",
        ]));
        match state.split_once('|') {
            Some((got, message)) if got == reason => Ok(message.to_string()),
            _ => Err(state),
        }
    })
}

#[test]
fn environment_seccomp_and_the_restricted_settings_in_real_containers() {
    let dir = tempfile::tempdir().expect("tmp");
    let master = Master::start(&dir.path().join("data"), &[]);
    let name = format!("sec-{}", std::process::id());
    let token = add_node(&master, &name);
    let node = RealNode::start(
        dir.path(),
        &master.mqtt,
        &name,
        &token,
        &["--no-network"],
        &[],
    );
    // A Localhost profile: allow everything but mkdir.
    let profiles = node.state_dir().join("seccomp").join("profiles");
    std::fs::create_dir_all(&profiles).expect("profile dir");
    std::fs::write(
        profiles.join("deny-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .expect("write profile");

    let mut plain = pod("plain", &name, PROBE);
    let mut runtime_default = pod("runtime-default", &name, PROBE);
    runtime_default["spec"]["securityContext"] =
        json!({"seccompProfile": {"type": "RuntimeDefault"}});
    let mut unconfined = pod("unconfined", &name, PROBE);
    unconfined["spec"]["securityContext"] = json!({"seccompProfile": {"type": "RuntimeDefault"}});
    unconfined["spec"]["containers"][0]["securityContext"] =
        json!({"seccompProfile": {"type": "Unconfined"}});
    let mut localhost = pod("localhost", &name, PROBE);
    localhost["spec"]["containers"][0]["securityContext"] = json!({
        "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/deny-mkdir.json"},
    });
    // The Pod Security Standards' restricted level, as charts write it.
    let mut restricted = pod("restricted", &name, IDENTITY);
    restricted["spec"]["securityContext"] = json!({
        "runAsNonRoot": true,
        "runAsUser": 1000,
        "runAsGroup": 3000,
        "supplementalGroups": [4000],
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    restricted["spec"]["containers"][0]["securityContext"] = json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
    });
    let escalation = pod("escalation", &name, IDENTITY);
    let mut root_refused = pod("root-refused", &name, "true");
    root_refused["spec"]["securityContext"] = json!({"runAsNonRoot": true});
    let mut user_zero = pod("user-zero", &name, "true");
    user_zero["spec"]["containers"][0]["securityContext"] =
        json!({"runAsNonRoot": true, "runAsUser": 0});
    let mut missing = pod("missing-profile", &name, "true");
    missing["spec"]["securityContext"] = json!({
        "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/absent.json"},
    });
    plain["metadata"]["labels"] = json!({"test": "seccomp"});
    // The environment as the kubelet builds it: envFrom first, env wins.
    ok(kubectl_apply(
        &master,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                "data": {"MODE": "fast", "LEVEL": "3"}}),
    ));
    ok(master.kubectl(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=TOKEN=s3cr3t",
    ]));
    let mut env = pod(
        "env",
        &name,
        "echo \"mode=$CFG_MODE level=$CFG_LEVEL token=$TOKEN one=$ONE pod=$POD_NAME mem=$MEM_MI cpu=$CPU_MILLIS\"",
    );
    env["spec"]["containers"][0]["envFrom"] = json!([
        {"prefix": "CFG_", "configMapRef": {"name": "settings"}},
        {"secretRef": {"name": "creds"}},
    ]);
    env["spec"]["containers"][0]["env"] = json!([
        {"name": "CFG_LEVEL", "value": "9"},
        {"name": "ONE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "MODE"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "CPU_MILLIS", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
    ]);
    env["spec"]["containers"][0]["resources"] =
        json!({"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}});
    let mut env_missing = pod("env-missing", &name, "true");
    env_missing["spec"]["containers"][0]["env"] = json!([
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "ABSENT"}}},
    ]);
    ok(kubectl_apply(&master, &env));
    ok(kubectl_apply(&master, &env_missing));
    for object in [
        &plain,
        &runtime_default,
        &unconfined,
        &localhost,
        &restricted,
        &escalation,
        &root_refused,
        &user_zero,
        &missing,
    ] {
        ok(kubectl_apply(&master, object));
    }

    // No profile and RuntimeDefault: the agent's default filter.
    for pod in ["plain", "runtime-default"] {
        let log = log_of_succeeded(&master, pod);
        assert!(log.contains("unshare=denied"), "{pod}: {log}");
        assert!(log.contains("mkdir=allowed"), "{pod}: {log}");
    }
    // The container's Unconfined wins over the pod's RuntimeDefault.
    let log = log_of_succeeded(&master, "unconfined");
    assert!(log.contains("unshare=allowed"), "unconfined: {log}");
    // The Localhost profile replaces the default filter.
    let log = log_of_succeeded(&master, "localhost");
    assert!(log.contains("mkdir=denied"), "localhost: {log}");
    assert!(log.contains("unshare=allowed"), "localhost: {log}");

    let log = log_of_succeeded(&master, "env");
    assert_eq!(
        log.trim(),
        "mode=fast level=9 token=s3cr3t one=fast pod=env mem=64 cpu=250",
        "env"
    );
    let message = waiting(&master, "env-missing", "CreateContainerConfigError");
    assert_eq!(
        message,
        "couldn't find key ABSENT in ConfigMap default/settings"
    );

    let log = log_of_succeeded(&master, "restricted");
    assert!(log.contains("uid=1000 gid=3000"), "restricted: {log}");
    assert!(
        log.contains("4000"),
        "restricted: supplemental group: {log}"
    );
    assert!(log.contains("NoNewPrivs:\t1"), "restricted: {log}");
    assert!(
        log.contains("CapEff:\t0000000000000000"),
        "restricted: {log}"
    );
    assert!(log.contains("Seccomp:\t2"), "restricted: {log}");
    // Kubernetes sets no_new_privs only when allowPrivilegeEscalation is false.
    let log = log_of_succeeded(&master, "escalation");
    assert!(log.contains("uid=0"), "escalation: {log}");
    assert!(log.contains("NoNewPrivs:\t0"), "escalation: {log}");

    let message = waiting(&master, "root-refused", "CreateContainerConfigError");
    assert!(
        message.starts_with(
            "container has runAsNonRoot and image will run as root (pod: \"root-refused_default("
        ),
        "{message}"
    );
    assert!(message.ends_with("container: app)"), "{message}");
    let message = waiting(&master, "user-zero", "CreateContainerConfigError");
    assert!(
        message.starts_with("container's runAsUser breaks non-root policy"),
        "{message}"
    );
    let message = waiting(&master, "missing-profile", "CreateContainerError");
    assert!(
        message.starts_with("cannot load seccomp profile")
            && message.contains("profiles/absent.json"),
        "{message}"
    );

    // The API refuses what Kubernetes refuses, every field error at once.
    let mut invalid = pod("invalid", &name, "true");
    invalid["spec"]["securityContext"] = json!({"seccompProfile": {"type": "Strict"}});
    invalid["spec"]["containers"][0]["securityContext"] = json!({
        "privileged": true,
        "allowPrivilegeEscalation": false,
        "seccompProfile": {"type": "Localhost"},
    });
    let err = fails(kubectl_apply(&master, &invalid));
    for expected in [
        "spec.securityContext.seccompProfile.type: Unsupported value: \"Strict\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\"",
        "spec.containers[0].securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
        "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    drop(node);
}
