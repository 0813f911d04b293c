//! End-to-end tests of Jobs (`batch/v1`), driven as a user drives
//! Kubernetes: the real `bramble master`, a real `bramble-agent --runtime
//! sim` node (a container whose command is `true`/`false`/`exit N` exits
//! with that code after `bramble.io/sim-run-seconds`), and the stock
//! `kubectl` (`apply`, `create job`, `wait --for=condition=...`, `get`).
//! Every wait polls with a deadline and fails with what it last saw.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{fails, ok, wait_until, Agent, Master};

const SETTLE: Duration = Duration::from_secs(60);

fn job(name: &str, extra_spec: &str, command: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{extra_spec}  template:
    metadata:
      annotations:
        bramble.io/sim-run-seconds: \"1\"
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
        command: [\"sh\", \"-c\", \"{command}\"]
"
    )
}

fn cluster(dir: &Path) -> (Master, Agent) {
    let master = Master::start(
        &dir.join("data"),
        &["--heartbeat-seconds", "1", "--missed-heartbeats", "3"],
    );
    let out = ok(master.bramble(&["node", "add", "job-a"]));
    let token = out.split_whitespace().nth(1).expect("token").to_string();
    let agent = Agent::start(dir, &master.mqtt, "job-a", &token, &[]);
    wait_until("node Ready", SETTLE, || {
        let out = master.kubectl(&[
            "get",
            "node",
            "job-a",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        match support::stdout(&out).trim() {
            "True" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    (master, agent)
}

fn get_json(master: &Master, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = master.kubectl(&all);
    if !out.status.success() {
        return Err(support::stderr(&out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", support::stdout(&out)))
}

fn apply(master: &Master, dir: &Path, name: &str, manifest: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, manifest).expect("write");
    ok(master.kubectl(&["apply", "-f", path.to_str().expect("path")]));
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn jobs_run_to_completion_fail_past_their_backoff_limit_and_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (master, _agent) = cluster(dir.path());

    // completions 3, parallelism 2: kubectl wait returns once it completes.
    apply(
        &master,
        dir.path(),
        "batch",
        &job("batch", "  completions: 3\n  parallelism: 2\n", "exit 0"),
    );
    ok(master.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/batch",
        "--timeout=60s",
    ]));
    let j = get_json(&master, &["job", "batch"]).expect("job");
    assert_eq!(j["status"]["succeeded"], 3, "{}", j["status"]);
    assert!(j["status"]["completionTime"].is_string());
    assert!(j["status"]["startTime"].is_string());
    assert_eq!(j["spec"]["backoffLimit"], 6);
    assert_eq!(j["spec"]["completionMode"], "NonIndexed");
    let pods = items(&get_json(&master, &["pods", "-l", "job-name=batch"]).expect("pods"));
    assert_eq!(pods.len(), 3, "{pods:?}");
    for pod in &pods {
        assert_eq!(
            pod["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "batch"
        );
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(pod["status"]["phase"], "Succeeded");
    }
    let listed = ok(master.kubectl(&["get", "pods", "-l", "job-name=batch"]));
    assert_eq!(listed.matches("Completed").count(), 3, "{listed}");
    let row = ok(master.kubectl(&["get", "job", "batch"]));
    assert!(row.contains("Complete") && row.contains("3/3"), "{row}");
    let describe = ok(master.kubectl(&["describe", "job", "batch"]));
    assert!(describe.contains("SuccessfulCreate"), "{describe}");
    assert!(describe.contains("Completed"), "{describe}");

    // Indexed: one completion per index, each pod told its index.
    apply(
        &master,
        dir.path(),
        "indexed",
        &job(
            "indexed",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
            "exit 0",
        ),
    );
    ok(master.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/indexed",
        "--timeout=60s",
    ]));
    let j = get_json(&master, &["job", "indexed"]).expect("job");
    assert_eq!(j["status"]["completedIndexes"], "0-2", "{}", j["status"]);
    let pods = items(&get_json(&master, &["pods", "-l", "job-name=indexed"]).expect("pods"));
    let mut indexes: Vec<String> = pods
        .iter()
        .map(|p| {
            let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let env = p["spec"]["containers"][0]["env"].to_string();
            assert!(
                env.contains("JOB_COMPLETION_INDEX") && env.contains(&format!("\"{index}\"")),
                "{env}"
            );
            assert!(p["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("indexed-{index}-")));
            index
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);

    // Failing pods: past backoffLimit (after the 10 s backoff), Failed.
    apply(
        &master,
        dir.path(),
        "broken",
        &job("broken", "  backoffLimit: 1\n", "exit 3"),
    );
    ok(master.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/broken",
        "--timeout=60s",
    ]));
    let j = get_json(&master, &["job", "broken"]).expect("job");
    assert_eq!(j["status"]["failed"], 2, "{}", j["status"]);
    let failed = j["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Failed"))
        .cloned()
        .expect("Failed condition");
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );

    // activeDeadlineSeconds: a pod that never ends fails the Job.
    apply(
        &master,
        dir.path(),
        "slow",
        &job("slow", "  activeDeadlineSeconds: 2\n", "sleep 3600"),
    );
    ok(master.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/slow",
        "--timeout=60s",
    ]));
    let j = get_json(&master, &["job", "slow"]).expect("job");
    assert!(
        j["status"]["conditions"]
            .to_string()
            .contains("DeadlineExceeded"),
        "{}",
        j["status"]
    );
    wait_until("the slow job's pod deleted", SETTLE, || {
        let pods = items(&get_json(&master, &["pods", "-l", "job-name=slow"])?);
        if pods.is_empty() {
            Ok(())
        } else {
            Err(format!("{} pods", pods.len()))
        }
    });

    // ttlSecondsAfterFinished: the Job and its pods go after it finished.
    apply(
        &master,
        dir.path(),
        "brief",
        &job("brief", "  ttlSecondsAfterFinished: 1\n", "true"),
    );
    wait_until("the brief job deleted after its TTL", SETTLE, || {
        let out = master.kubectl(&["get", "job", "brief"]);
        let pods = items(&get_json(&master, &["pods", "-l", "job-name=brief"])?);
        if !out.status.success() && pods.is_empty() {
            Ok(())
        } else {
            Err(format!("{} {} pods", support::stdout(&out), pods.len()))
        }
    });

    // kubectl's typed client (protobuf) creates one too.
    ok(master.kubectl(&[
        "create",
        "job",
        "hello",
        "--image=busybox:1.36",
        "--",
        "true",
    ]));
    ok(master.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=60s",
    ]));

    // Bad specs: every error at once, with Kubernetes' words.
    let bad = job(
        "bad",
        "  completions: -1\n  completionMode: Sometimes\n",
        "true",
    )
    .replace("restartPolicy: Never", "restartPolicy: Always");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, bad).expect("write");
    let err = fails(master.kubectl(&["apply", "-f", path.to_str().expect("path")]));
    assert!(
        err.contains("spec.completions: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );
    assert!(
        err.contains("spec.completionMode: Unsupported value: \"Sometimes\""),
        "{err}"
    );
    assert!(
        err.contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""),
        "{err}"
    );
}
