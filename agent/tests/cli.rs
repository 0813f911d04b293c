//! The `bramble-agent` binary: version, `check-config`, and its refusals.

use std::path::Path;
use std::process::{Command, Output};

const AGENT: &str = env!("CARGO_BIN_EXE_bramble-agent");

fn agent(args: &[&str]) -> Output {
    Command::new(AGENT)
        .args(args)
        .output()
        .expect("run bramble-agent")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write config");
    path.to_string_lossy().into_owned()
}

#[test]
fn version() {
    let out = agent(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("bramble-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_on_the_cross_sample() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../cross/sample/agent.toml");
    let out = agent(&["check-config", "--config", sample]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("node = \"pi-01\""), "{stdout}");
    assert!(
        stdout.contains("master = \"mqtt://192.168.1.10:1883\""),
        "{stdout}"
    );
    assert!(stdout.contains("token = \"<redacted>\""), "{stdout}");
    assert!(
        !stdout.contains("sample-join-token"),
        "token leaked: {stdout}"
    );
}

#[test]
fn flags_override_the_file_and_global_flags_work_after_the_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        dir.path(),
        "a.toml",
        "master = \"mqtt://a:1883\"\nnode = \"pi-01\"\ntoken = \"t\"\n",
    );
    let out = agent(&[
        "--node",
        "pi-09",
        "check-config",
        "--config",
        &cfg,
        "--run-dir",
        "/tmp/r",
        "--bridge",
        "brpi9",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("node = \"pi-09\""), "{stdout}");
    assert!(stdout.contains("run-dir = \"/tmp/r\""), "{stdout}");
    assert!(stdout.contains("bridge = \"brpi9\""), "{stdout}");
}

#[test]
fn missing_explicit_file_is_an_error() {
    let out = agent(&["check-config", "--config", "/nonexistent/agent.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read config file /nonexistent/agent.toml"));
}

#[test]
fn mqtts_is_refused_until_tls_exists() {
    // An agent that accepted mqtts:// and then failed to connect would leave
    // a flashed device that never joins: check-config says so up front.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        dir.path(),
        "a.toml",
        "master = \"mqtts://a:8883\"\nnode = \"pi-01\"\ntoken = \"t\"\n",
    );
    let out = agent(&["check-config", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("mqtts:// (MQTT over TLS) is not supported by this release"),
        "{stderr}"
    );
    assert!(stderr.contains("use mqtt://HOST:PORT"), "{stderr}");
}

#[test]
fn unknown_key_is_named_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        dir.path(),
        "a.toml",
        "master = \"mqtt://a:1883\"\nnode = \"pi-01\"\ntoken = \"t\"\nmqtt-port = 1\n",
    );
    let out = agent(&["check-config", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("{cfg}:4:1:")), "{stderr}");
    assert!(stderr.contains("mqtt-port"), "{stderr}");
}

#[test]
fn invalid_values_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        dir.path(),
        "a.toml",
        "master = \"mqtt://a:1883\"\nnode = \"pi-01\"\ntoken = \"t\"\n",
    );
    for (flag, value, key) in [
        ("--master", "tcp://a:1", "master"),
        ("--master", "mqtt://a", "master"),
        ("--node", "Pi_01", "node"),
        ("--token", "", "token"),
        ("--bridge", "a-bridge-name-too-long", "bridge"),
    ] {
        let out = agent(&["check-config", "--config", &cfg, flag, value]);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("invalid `{key}`")),
            "{flag} {value}: {stderr}"
        );
    }
}

#[test]
fn image_commands_need_no_master_or_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_string_lossy().into_owned();
    let out = agent(&[
        "--config",
        "/dev/null",
        "--state-dir",
        &state,
        "image",
        "ls",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ID"), "{}", text(&out.stdout));
    assert!(dir.path().join("images").is_dir());
    let out = agent(&[
        "--config",
        "/dev/null",
        "--state-dir",
        &state,
        "image",
        "rm",
        "nope:1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot remove image nope:1"),
        "{}",
        text(&out.stderr)
    );
    let missing = dir
        .path()
        .join("missing.tar")
        .to_string_lossy()
        .into_owned();
    let out = agent(&[
        "--config",
        "/dev/null",
        "--state-dir",
        &state,
        "image",
        "import",
        &missing,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot import"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn reset_needs_the_node_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_string_lossy().into_owned();
    let out = agent(&["--config", "/dev/null", "--state-dir", &state, "reset"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--node NAME"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_config_shows_the_registries_file_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        dir.path(),
        "a.toml",
        "master = \"mqtt://a:1883\"\nnode = \"pi-01\"\ntoken = \"t\"\n",
    );
    let registries = write(
        dir.path(),
        "registries.yaml",
        "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\"]\nconfigs:\n  \"127.0.0.1:5000\":\n    auth: {username: pi, password: secret}\n",
    );
    let out = agent(&[
        "check-config",
        "--config",
        &cfg,
        "--registries",
        &registries,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("registries = \"{registries}\"")),
        "{stdout}"
    );
    assert!(
        stdout.contains("#   mirror docker.io: http://127.0.0.1:5000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("#   config 127.0.0.1:5000: user pi"),
        "{stdout}"
    );
    assert!(!stdout.contains("secret"), "password leaked: {stdout}");
    // The key in the file works too, and a bad file is refused by name.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "mirrors:\n  docker.io:\n    endpoints: [x]\n",
    );
    let cfg2 = write(
        dir.path(),
        "b.toml",
        &format!(
            "master = \"mqtt://a:1883\"\nnode = \"pi-01\"\ntoken = \"t\"\nregistries = \"{bad}\"\n"
        ),
    );
    let out = agent(&["check-config", "--config", &cfg2]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("invalid `registries`"), "{stderr}");
    assert!(stderr.contains("endpoints"), "{stderr}");
}

#[test]
fn image_pull_from_nowhere_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_string_lossy().into_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let image = format!("127.0.0.1:{port}/app:1");
    let out = agent(&[
        "--config",
        "/dev/null",
        "--state-dir",
        &state,
        "image",
        "pull",
        &image,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("cannot pull {image}")), "{stderr}");
    assert!(stderr.contains("failed to resolve reference"), "{stderr}");
    let out = agent(&[
        "--config",
        "/dev/null",
        "--state-dir",
        &state,
        "image",
        "pull",
        "Bad Name",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("invalid reference format"),
        "{}",
        text(&out.stderr)
    );
}
