//! A container's security settings as the kubelet applies them: the seccomp
//! filter its `seccompProfile` asks for, and the `runAsNonRoot` check.
//!
//! Profiles of type `Localhost` are files under the node's seccomp profile
//! directory (`<state-dir>/seccomp`, like the kubelet's
//! `/var/lib/kubelet/seccomp`), written in the OCI runtime spec's
//! `linux.seccomp` format (`defaultAction`, `architectures`, `syscalls`
//! with `names`, `action`, `errnoRet`, `args`), which is also the shape of
//! the profiles in the Kubernetes documentation.

use std::path::{Component, Path};

use bramble_common::api::{Pod, SeccompProfile, SecurityContext};
use libcontainer::oci_spec::runtime::LinuxSeccomp;
use serde_json::Value;

use super::spec::Seccomp;

/// The largest profile file read (Docker's own default profile is ~20 KiB).
const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// The filter for a container whose effective `seccompProfile` is
/// `profile`. Without one the container gets the agent's default filter
/// when `default_enabled` (the agent's `seccomp` setting), else none.
/// `Localhost` profiles are read from `profile_dir`. The error is the
/// message of a `CreateContainerError`.
pub fn seccomp_for(
    profile: Option<&SeccompProfile>,
    default_enabled: bool,
    profile_dir: &Path,
) -> Result<Seccomp, String> {
    let Some(profile) = profile else {
        return Ok(if default_enabled {
            Seccomp::Default
        } else {
            Seccomp::Unconfined
        });
    };
    let need_support = || {
        if cfg!(feature = "seccomp") {
            Ok(())
        } else {
            Err(format!(
                "seccomp profile {} was asked for, but this bramble-agent was built without seccomp \
                 support (the `seccomp` feature); run the pod on a node whose agent has it",
                profile.profile_type
            ))
        }
    };
    match profile.profile_type.as_str() {
        "Unconfined" => Ok(Seccomp::Unconfined),
        "RuntimeDefault" => need_support().map(|()| Seccomp::Default),
        "Localhost" => {
            need_support()?;
            let relative = profile.localhost_profile.as_deref().unwrap_or("");
            load_profile(profile_dir, relative).map(Seccomp::Profile)
        }
        other => Err(format!(
            "seccomp profile type {other:?} is not one of Localhost, RuntimeDefault, Unconfined"
        )),
    }
}

/// Reads and checks the `Localhost` profile `relative` under `dir`.
fn load_profile(dir: &Path, relative: &str) -> Result<Value, String> {
    let path = dir.join(relative);
    let fail = |reason: String| {
        format!(
            "cannot load seccomp profile {:?}: {reason}",
            path.display().to_string()
        )
    };
    // The API refuses these; the desired state still comes from outside.
    let descends = !relative.is_empty()
        && Path::new(relative)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !descends {
        return Err(fail(
            "localhostProfile must be a relative path inside the node's seccomp directory".into(),
        ));
    }
    let metadata = std::fs::metadata(&path).map_err(|e| fail(e.to_string()))?;
    if metadata.len() > MAX_PROFILE_BYTES {
        return Err(fail(format!(
            "the file has {} bytes, more than the {MAX_PROFILE_BYTES} a profile may have",
            metadata.len()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    parse_profile(&text).map_err(fail)
}

/// Checks a profile's text: JSON in the OCI `linux.seccomp` format, without
/// the Docker-only rules this agent would otherwise apply unconditionally.
pub fn parse_profile(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("the profile must be a JSON object".into());
    }
    let docker_only = value.get("archMap").is_some()
        || value["syscalls"].as_array().is_some_and(|rules| {
            rules
                .iter()
                .any(|rule| rule.get("includes").is_some() || rule.get("excludes").is_some())
        });
    if docker_only {
        return Err(
            "the profile uses Docker's archMap, includes or excludes, which bramble does not \
             evaluate; write it in the OCI runtime spec's linux.seccomp format (architectures, \
             and syscalls with names, action, errnoRet and args)"
                .into(),
        );
    }
    serde_json::from_value::<LinuxSeccomp>(value.clone())
        .map_err(|e| format!("not a seccomp profile: {e}"))?;
    Ok(value)
}

/// The kubelet's `runAsNonRoot` check (`verifyRunAsNonRoot`) for a
/// container whose effective security context is `security` and whose image
/// runs as `image_user` (the image config's `User`). The error is the
/// message of a `CreateContainerConfigError`.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &str,
    security: Option<&SecurityContext>,
    image_user: Option<&str>,
) -> Result<(), String> {
    let Some(security) = security else {
        return Ok(());
    };
    if security.run_as_non_root != Some(true) {
        return Ok(());
    }
    let pod_ref = format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    );
    match security.run_as_user {
        Some(0) => {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: \"{pod_ref}\", container: {container})"
            ))
        }
        Some(_) => return Ok(()),
        None => {}
    }
    let user = image_user.unwrap_or("").split(':').next().unwrap_or("");
    match user.parse::<u32>() {
        Ok(0) => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: \"{pod_ref}\", container: {container})"
        )),
        Ok(_) => Ok(()),
        Err(_) if user.is_empty() => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: \"{pod_ref}\", container: {container})"
        )),
        Err(_) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: \"{pod_ref}\", container: {container})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(kind: &str, local: Option<&str>) -> SeccompProfile {
        SeccompProfile {
            profile_type: kind.into(),
            localhost_profile: local.map(str::to_string),
        }
    }

    #[test]
    fn the_profile_types_choose_the_filter() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(seccomp_for(None, true, dir.path()), Ok(Seccomp::Default));
        assert_eq!(
            seccomp_for(None, false, dir.path()),
            Ok(Seccomp::Unconfined)
        );
        assert_eq!(
            seccomp_for(Some(&profile("Unconfined", None)), true, dir.path()),
            Ok(Seccomp::Unconfined)
        );
        let runtime_default =
            seccomp_for(Some(&profile("RuntimeDefault", None)), false, dir.path());
        if cfg!(feature = "seccomp") {
            assert_eq!(runtime_default, Ok(Seccomp::Default));
        } else {
            assert!(runtime_default.is_err());
        }
    }

    #[cfg(feature = "seccomp")]
    #[test]
    fn localhost_profiles_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("profiles")).expect("mkdir");
        let good = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#;
        std::fs::write(dir.path().join("profiles/deny-mkdir.json"), good).expect("write");
        let got = seccomp_for(
            Some(&profile("Localhost", Some("profiles/deny-mkdir.json"))),
            true,
            dir.path(),
        )
        .expect("profile");
        let Seccomp::Profile(value) = got else {
            panic!("{got:?}")
        };
        assert_eq!(value["syscalls"][0]["names"][1], "mkdirat");

        let missing = seccomp_for(
            Some(&profile("Localhost", Some("nope.json"))),
            true,
            dir.path(),
        )
        .expect_err("missing");
        assert!(
            missing.starts_with("cannot load seccomp profile"),
            "{missing}"
        );
        assert!(missing.contains("nope.json"), "{missing}");
        for escape in ["../etc/passwd", "/etc/passwd", ""] {
            let err = seccomp_for(Some(&profile("Localhost", Some(escape))), true, dir.path())
                .expect_err(escape);
            assert!(err.contains("relative path inside"), "{escape}: {err}");
        }
        std::fs::write(
            dir.path().join("docker.json"),
            r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[],"syscalls":[]}"#,
        )
        .expect("write");
        let err = seccomp_for(
            Some(&profile("Localhost", Some("docker.json"))),
            true,
            dir.path(),
        )
        .expect_err("docker format");
        assert!(err.contains("archMap"), "{err}");
        std::fs::write(
            dir.path().join("bad.json"),
            r#"{"defaultAction":"SCMP_ACT_NOPE"}"#,
        )
        .expect("write");
        let err = seccomp_for(
            Some(&profile("Localhost", Some("bad.json"))),
            true,
            dir.path(),
        )
        .expect_err("bad action");
        assert!(err.contains("not a seccomp profile"), "{err}");
    }

    #[test]
    fn run_as_non_root_is_the_kubelets_check() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("apps".into());
        pod.metadata.uid = Some("u1".into());
        let sc = |user: Option<i64>| SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: user,
            ..Default::default()
        };
        assert_eq!(
            verify_run_as_non_root(&pod, "c", Some(&sc(Some(0))), Some("1000")),
            Err("container's runAsUser breaks non-root policy (pod: \"web_apps(u1)\", container: c)".into())
        );
        assert_eq!(
            verify_run_as_non_root(&pod, "c", Some(&sc(Some(1000))), None),
            Ok(())
        );
        assert_eq!(
            verify_run_as_non_root(&pod, "c", Some(&sc(None)), None),
            Err("container has runAsNonRoot and image will run as root (pod: \"web_apps(u1)\", container: c)".into())
        );
        assert_eq!(
            verify_run_as_non_root(&pod, "c", Some(&sc(None)), Some("65534:65534")),
            Ok(())
        );
        assert_eq!(
            verify_run_as_non_root(&pod, "c", Some(&sc(None)), Some("nobody")),
            Err("container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: \"web_apps(u1)\", container: c)".into())
        );
        let allowed = SecurityContext::default();
        assert_eq!(
            verify_run_as_non_root(&pod, "c", Some(&allowed), None),
            Ok(())
        );
    }
}
