//! Pulls from a real registry (Debian's `docker-registry` on loopback,
//! filled with `skopeo`): by tag and digest, htpasswd credentials from a
//! pull secret, a multi-arch index for arm64 and armv6 nodes, a download
//! cut mid-layer that resumes, a pull stopped and resumed by a new puller
//! (an agent restart), and a registry serving corrupt content.
#![allow(clippy::unwrap_used)]

mod registry_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bramble_agent::images::auth::{Credentials, Keyring};
use bramble_agent::images::build::{ImageBuilder, LayerCompression, LayerEntry};
use bramble_agent::images::distribution::ClientOptions;
use bramble_agent::images::platform::Platform;
use bramble_agent::images::pull::{PullError, Puller};
use bramble_agent::images::registries::RegistriesConfig;
use bramble_agent::images::ImageStore;
use registry_support::{CuttingProxy, Registry};
use support::*;

fn puller(dir: &Path, platform: &str) -> Puller {
    let store = ImageStore::open(dir).unwrap();
    Puller::new(
        store,
        ClientOptions {
            stall_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        Platform::parse(platform).unwrap(),
    )
}

fn host_platform() -> String {
    Platform::host().to_string()
}

/// Bytes that do not compress (a xorshift stream).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn big_image(name: &str, bytes: usize) -> ImageBuilder {
    let mut b = busybox_image(name, &["true"]);
    b.compression = LayerCompression::None;
    b.layers.push(vec![LayerEntry::File {
        path: "data.bin".into(),
        data: noise(bytes, 42),
        mode: 0o644,
    }]);
    b
}

#[test]
fn registry_pull_by_tag_and_digest() {
    ensure_busybox();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    busybox_image("app:1", &["echo", "pulled"])
        .write_oci_layout(&layout)
        .unwrap();
    reg.push(&layout, "1", "team/app:1", false);

    let p = puller(&tmp.path().join("node"), &host_platform());
    let none = AtomicBool::new(false);
    let image = format!("{}/team/app:1", reg.host);
    let out = p.pull(&image, &Keyring::default(), &none).unwrap();
    assert_eq!(out.image.names, vec![image.clone()]);
    let repo_digest = out.image.repo_digests[0].clone();
    assert!(
        repo_digest.starts_with(&format!("{}/team/app@sha256:", reg.host)),
        "{repo_digest}"
    );
    assert!(out.received >= out.size - 4096, "{out:?}");
    let store = p.store();
    let rec = store.resolve(&image).unwrap();
    assert!(store
        .layer_dir(&rec.layers[0])
        .join("bin/busybox")
        .is_file());
    assert!(store.resolve(&repo_digest).is_ok());

    // Again: the layers are there, only the manifest and config travel.
    let again = p.pull(&image, &Keyring::default(), &none).unwrap();
    assert_eq!(again.received, 0, "{again:?}");
    // By digest.
    let by_digest = p.pull(&repo_digest, &Keyring::default(), &none).unwrap();
    assert_eq!(by_digest.image.id, out.image.id);

    // A missing tag: the registry's answer, nothing stored.
    let err = p
        .pull(
            &format!("{}/team/app:nope", reg.host),
            &Keyring::default(),
            &none,
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PullError::Resolve { .. }), "{msg}");
    assert!(msg.contains("not found"), "{msg}");
    assert!(msg.contains("team/app:nope"), "{msg}");
    // No registry at all: unreachable, said so.
    let dead = format!("127.0.0.1:{}/x:1", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let err = p.pull(&dead, &Keyring::default(), &none).unwrap_err();
    assert!(err.is_unreachable(), "{err}");
}

#[test]
fn registry_pull_with_htpasswd_credentials() {
    ensure_busybox();
    let reg = Registry::start(Some(("alice", "s3cret")));
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    busybox_image("private:1", &["true"])
        .write_oci_layout(&layout)
        .unwrap();
    reg.push(&layout, "1", "private:1", false);
    let p = puller(&tmp.path().join("node"), &host_platform());
    let none = AtomicBool::new(false);
    let image = format!("{}/private:1", reg.host);

    let err = p.pull(&image, &Keyring::default(), &none).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("401 Unauthorized"), "{msg}");

    let mut wrong = Keyring::default();
    wrong.add(
        &reg.host,
        Credentials::Basic {
            username: "alice".into(),
            password: "wrong".into(),
        },
    );
    let msg = p.pull(&image, &wrong, &none).unwrap_err().to_string();
    assert!(msg.contains("401 Unauthorized"), "{msg}");

    // A kubernetes.io/dockerconfigjson secret's content.
    let mut secret = BTreeMap::new();
    secret.insert(
        ".dockerconfigjson".to_string(),
        format!(
            r#"{{"auths":{{"{}":{{"username":"alice","password":"s3cret"}}}}}}"#,
            reg.host
        )
        .into_bytes(),
    );
    let mut good = Keyring::default();
    good.add_secret(&secret).unwrap();
    let out = p.pull(&image, &good, &none).unwrap();
    assert_eq!(out.image.names, vec![image]);
}

#[test]
fn registry_pull_multi_arch_index_by_platform() {
    ensure_busybox();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let mut descriptors = Vec::new();
    for (arch, variant) in [
        ("amd64", None),
        ("arm", Some("v7")),
        ("arm", Some("v6")),
        ("arm64", Some("v8")),
    ] {
        let mut b = ImageBuilder::new("multi:1");
        b.architecture = arch.into();
        b.variant = variant.map(str::to_string);
        b.layers.push(vec![LayerEntry::File {
            path: "arch".into(),
            data: format!("{arch}{}\n", variant.unwrap_or("")).into_bytes(),
            mode: 0o644,
        }]);
        b.write_oci_layout(&layout).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let mut d = index["manifests"][0].clone();
        d.as_object_mut().unwrap().remove("annotations");
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        d["platform"] = platform;
        descriptors.push(d);
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descriptors,
    }))
    .unwrap();
    use sha2::Digest;
    let hex = format!("{:x}", sha2::Sha256::digest(&index));
    std::fs::write(layout.join("blobs/sha256").join(&hex), &index).unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{hex}"),
                "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": "multi"},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    reg.push(&layout, "multi", "multi:1", true);
    let image = format!("{}/multi:1", reg.host);
    let none = AtomicBool::new(false);
    for (platform, want) in [
        ("linux/arm64", "arm64v8"),
        ("linux/arm/v6", "armv6"),
        ("linux/arm/v7", "armv7"),
        ("linux/amd64", "amd64"),
    ] {
        let dir = tmp.path().join(platform.replace('/', "-"));
        let p = puller(&dir, platform);
        let out = p.pull(&image, &Keyring::default(), &none).unwrap();
        let layer = p.store().layer_dir(&out.image.layers[0]);
        assert_eq!(
            std::fs::read_to_string(layer.join("arch")).unwrap().trim(),
            want,
            "{platform}"
        );
        // The repo digest is the index's, as containerd records it.
        assert_eq!(
            out.image.repo_digests[0],
            format!("{}/multi@sha256:{hex}", reg.host)
        );
    }
    let p = puller(&tmp.path().join("riscv"), "linux/riscv64");
    let msg = p
        .pull(&image, &Keyring::default(), &none)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("linux/riscv64"), "{msg}");
    assert!(
        msg.contains("linux/amd64, linux/arm/v7, linux/arm/v6, linux/arm64"),
        "{msg}"
    );
}

#[test]
fn registry_pull_cut_mid_layer_resumes() {
    ensure_busybox();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let layer_bytes = 8 << 20;
    big_image("big:1", layer_bytes)
        .write_oci_layout(&layout)
        .unwrap();
    reg.push(&layout, "1", "big:1", false);
    // Two cuts, 3 MB into a connection each.
    let proxy = CuttingProxy::start(&reg.host, 3 << 20, 2);
    let mut registries = RegistriesConfig::default();
    registries.mirrors.insert(
        "docker.io".into(),
        bramble_agent::images::registries::Mirror {
            endpoint: vec![format!("http://{}", proxy.host)],
            rewrite: BTreeMap::new(),
        },
    );
    let store = ImageStore::open(&tmp.path().join("node")).unwrap();
    let p = Puller::new(
        store,
        ClientOptions {
            registries,
            stall_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        Platform::host(),
    );
    let none = AtomicBool::new(false);
    // `big:1` is docker.io/library/big:1, served by the mirror as library/big.
    reg.push(&layout, "1", "library/big:1", false);
    let out = p.pull("big:1", &Keyring::default(), &none).unwrap();
    assert_eq!(proxy.cut.load(Ordering::SeqCst), 2, "the proxy cut twice");
    assert!(out.resumed > 0, "{out:?}");
    // Everything the proxy passed (manifests, headers, both cut attempts)
    // against the image's blobs as the registry stores them.
    let total = proxy.to_client.load(Ordering::SeqCst);
    let ratio = total as f64 / out.size as f64;
    eprintln!(
        "cut twice: {total} bytes to the client for {} bytes of blobs: {ratio:.3}x; resumed offsets {} bytes",
        out.size, out.resumed
    );
    assert!(ratio < 1.1, "downloaded {ratio:.3}x the image");
    let rec = p.store().resolve("docker.io/library/big:1").unwrap();
    let data = std::fs::read(p.store().layer_dir(&rec.layers[1]).join("data.bin")).unwrap();
    assert_eq!(data.len(), layer_bytes);
    assert!(data == noise(layer_bytes, 42));
    assert_eq!(
        std::fs::read_dir(p.store().root().join("ingest"))
            .unwrap()
            .count(),
        0,
        "no partial file left"
    );
}

#[test]
fn registry_pull_stopped_resumes_in_a_new_puller() {
    ensure_busybox();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    big_image("big:1", 24 << 20)
        .write_oci_layout(&layout)
        .unwrap();
    reg.push(&layout, "1", "big:1", false);
    // A slow link (about 16 MB/s): the proxy never cuts, the watcher stops the pull.
    let proxy = CuttingProxy::start_throttled(&reg.host, u64::MAX, 0, Duration::from_millis(1));
    let image = format!("{}/big:1", proxy.host);
    let node = tmp.path().join("node");
    let cancel = AtomicBool::new(false);
    let ingest = node.join("images/ingest");
    let kept = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            // Stop the pull once a few MB of the big layer are on disk.
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let have: u64 = std::fs::read_dir(&ingest)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                            .max()
                            .unwrap_or(0)
                    })
                    .unwrap_or(0);
                if have > 2 << 20 {
                    cancel.store(true, Ordering::SeqCst);
                    return have;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            0
        });
        let p = puller(&node, &host_platform());
        let err = p.pull(&image, &Keyring::default(), &cancel).unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
        watcher.join().unwrap()
    });
    assert!(kept > 0, "the pull finished before it could be stopped");
    let partial: u64 = std::fs::read_dir(&ingest)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .max()
        .unwrap();
    assert!(partial >= kept, "the partial file stays on disk");
    // A new puller (the agent restarted) resumes from the partial file.
    let p = puller(&node, &host_platform());
    let none = AtomicBool::new(false);
    let out = p.pull(&image, &Keyring::default(), &none).unwrap();
    assert!(out.resumed >= partial, "{out:?} partial {partial}");
    assert!(out.received + out.resumed <= out.size + 4096, "{out:?}");
}

#[test]
fn registry_pull_refuses_corrupt_blobs_and_keeps_the_store_clean() {
    ensure_busybox();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    big_image("bad:1", 1 << 20)
        .write_oci_layout(&layout)
        .unwrap();
    reg.push(&layout, "1", "bad:1", false);
    // Corrupt every layer in the registry's storage (same size; skopeo
    // may have recompressed them, so find them there).
    let mut corrupted = Vec::new();
    let blobs = reg.dir.path().join("data/docker/registry/v2/blobs/sha256");
    for prefix in std::fs::read_dir(&blobs).unwrap().flatten() {
        for blob in std::fs::read_dir(prefix.path()).unwrap().flatten() {
            let data = blob.path().join("data");
            let mut bytes = std::fs::read(&data).unwrap();
            if bytes.len() > 100_000 {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0xff;
                std::fs::write(&data, bytes).unwrap();
                corrupted.push(format!("sha256:{}", blob.file_name().to_string_lossy()));
            }
        }
    }
    assert!(!corrupted.is_empty());
    let p = puller(&tmp.path().join("node"), &host_platform());
    let none = AtomicBool::new(false);
    let msg = p
        .pull(&format!("{}/bad:1", reg.host), &Keyring::default(), &none)
        .unwrap_err()
        .to_string();
    assert!(
        corrupted.iter().any(|d| msg.contains(&format!("not {d}"))),
        "{msg}"
    );
    assert!(msg.contains("download is corrupt"), "{msg}");
    let store = p.store();
    assert!(store.list().unwrap().is_empty());
    for d in &corrupted {
        assert!(!store.blob_path(d).exists(), "{d} kept");
    }
    assert_eq!(
        std::fs::read_dir(store.root().join("ingest"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn registry_pull_with_the_cli_for_another_platform() {
    ensure_busybox();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let mut b = busybox_image("arm:1", &["true"]);
    b.architecture = "arm".into();
    b.variant = Some("v6".into());
    b.write_oci_layout(&layout).unwrap();
    reg.push(&layout, "1", "pi/app:1", false);
    let state = tmp.path().join("state").display().to_string();
    let image = format!("{}/pi/app:1", reg.host);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bramble-agent"))
            .args(["--config", "/dev/null", "--state-dir", &state])
            .args(args)
            .output()
            .unwrap()
    };
    // A v5 device cannot run an arm/v6 image, and the error says what the
    // image is; a v7 device runs it (containerd's fallback).
    let out = run(&["image", "pull", "--platform", "linux/arm/v5", &image]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains("linux/arm/v6"), "{stderr}");
    let out = run(&["image", "pull", "--platform", "linux/arm/v7", &image]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.starts_with("pulled "), "{stdout}");
    assert!(stdout.contains("linux/arm/v6"), "{stdout}");
    let out = run(&["image", "ls"]);
    let ls = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(ls.contains(&image), "{ls}");
}
