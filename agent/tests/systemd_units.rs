//! The systemd units in `systemd/` pass `systemd-analyze verify` (with the
//! agent unit pointing at the freshly built agent binary).

use std::process::Command;

#[test]
fn units_verify() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/verify");
    let out = Command::new("bash")
        .arg(script)
        .args(["--agent-bin", env!("CARGO_BIN_EXE_bramble-agent")])
        .output()
        .expect("run systemd/verify");
    assert!(
        out.status.success(),
        "systemd/verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
