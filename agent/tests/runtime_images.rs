//! The local image store: imports of OCI layouts and docker save archives,
//! layer formats, platform checks, ls and rm.
#![allow(clippy::unwrap_used)]

mod support;

use bramble_agent::images::build::{ImageBuilder, LayerCompression, LayerEntry};
use bramble_agent::images::{ImageError, ImageStore};
use support::*;

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = ImageStore::open(dir.path()).unwrap();
    (dir, s)
}

#[test]
fn runtime_images_import_oci_layout_and_ls_rm() {
    ensure_busybox();
    let (dir, s) = store();
    let img = busybox_image("bramble.test/hello:1", &["echo", "hi"]);
    img.write_oci_layout(&dir.path().join("layout")).unwrap();
    let recs = s.import(&dir.path().join("layout")).unwrap();
    assert_eq!(recs[0].names, vec!["bramble.test/hello:1".to_string()]);
    let r = s.resolve("bramble.test/hello:1").unwrap();
    assert!(s.layer_dir(&r.layers[0]).join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(s.layer_dir(&r.layers[0]).join("bin/sh")).unwrap(),
        std::path::Path::new("busybox")
    );
    // By digest, as Kubernetes allows.
    assert_eq!(
        s.resolve(&format!("bramble.test/hello@{}", r.manifest_digest))
            .unwrap()
            .id,
        r.id
    );
    assert_eq!(s.list().unwrap().len(), 1);
    s.remove("bramble.test/hello:1").unwrap();
    assert!(s.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(s.root().join("layers")).unwrap().count(),
        0
    );
    assert!(matches!(
        s.resolve("bramble.test/hello:1"),
        Err(ImageError::NotFound(_))
    ));
}

#[test]
fn runtime_images_import_docker_save_and_oci_archive_zstd_whiteouts() {
    ensure_busybox();
    let (dir, s) = store();
    let mut img = busybox_image("busybox:test", &["sh"]);
    img.compression = LayerCompression::Zstd;
    img.layers.push(vec![
        LayerEntry::Whiteout {
            path: "www/index.html".into(),
        },
        LayerEntry::File {
            path: "etc/motd".into(),
            data: b"hi".to_vec(),
            mode: 0o644,
        },
        LayerEntry::HardLink {
            path: "etc/motd2".into(),
            target: "etc/motd".into(),
        },
    ]);
    let archive = dir.path().join("save.tar");
    img.write_docker_archive(&archive).unwrap();
    let recs = s.import(&archive).unwrap();
    assert_eq!(
        recs[0].names,
        vec!["docker.io/library/busybox:test".to_string()]
    );
    let r = s.resolve("busybox:test").unwrap();
    assert_eq!(r.layers.len(), 2);
    let top = s.layer_dir(&r.layers[1]);
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(std::fs::symlink_metadata(top.join("www/index.html"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(std::fs::metadata(top.join("etc/motd2")).unwrap().nlink(), 2);
    // An OCI layout packed in a tar imports too.
    let layout = dir.path().join("layout");
    busybox_image("bramble.test/other:2", &["sh"])
        .write_oci_layout(&layout)
        .unwrap();
    let tarball = dir.path().join("oci.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.into_inner().unwrap();
    s.import(&tarball).unwrap();
    assert_eq!(s.list().unwrap().len(), 2);
}

#[test]
fn runtime_images_wrong_architecture_is_refused_naming_both() {
    let (dir, s) = store();
    let mut img = ImageBuilder::new("bramble.test/foreign:1");
    let node = bramble_agent::images::node_platform();
    img.architecture = if node.ends_with("arm64") {
        "amd64"
    } else {
        "arm64"
    }
    .into();
    img.layers.push(vec![LayerEntry::File {
        path: "x".into(),
        data: b"x".to_vec(),
        mode: 0o644,
    }]);
    img.write_oci_layout(&dir.path().join("l")).unwrap();
    let err = s.import(&dir.path().join("l")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::WrongPlatform { .. }), "{msg}");
    assert!(
        msg.contains(&format!("linux/{}", img.architecture)),
        "{msg}"
    );
    assert!(msg.contains(&node), "{msg}");
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn runtime_images_preload_dir_is_imported() {
    ensure_busybox();
    let (dir, s) = store();
    let preload = dir.path().join("preload");
    std::fs::create_dir_all(&preload).unwrap();
    busybox_image("bramble.test/pre:1", &["sh"])
        .write_docker_archive(&preload.join("pre.tar"))
        .unwrap();
    assert_eq!(s.import_preload(&preload), 1);
    assert!(s.resolve("bramble.test/pre:1").is_ok());
}

#[test]
fn runtime_images_garbage_collection_follows_the_kubelets_rules() {
    use bramble_agent::images::gc::GcPolicy;
    ensure_busybox();
    let (dir, s) = store();
    for (i, name) in ["old:1", "newer:1", "used:1", "pre:1"].iter().enumerate() {
        let mut img = busybox_image(&format!("bramble.test/{name}"), &["true"]);
        img.layers.push(vec![LayerEntry::File {
            path: format!("marker{i}"),
            data: vec![b'x'; 1000 + i],
            mode: 0o644,
        }]);
        let layout = dir.path().join(format!("layout{i}"));
        img.write_oci_layout(&layout).unwrap();
        if *name == "pre:1" {
            let preload = dir.path().join("preload");
            std::fs::create_dir_all(&preload).unwrap();
            std::fs::rename(&layout, preload.join("pre")).unwrap();
            assert_eq!(s.import_preload(&preload), 1);
        } else {
            s.import(&layout).unwrap();
        }
    }
    let id = |n: &str| s.resolve(&format!("bramble.test/{n}")).unwrap().id;
    // "used" has a container; "newer" was used after "old".
    s.add_lease("pod_c", &id("newer:1")).unwrap();
    s.remove_lease("pod_c").unwrap();
    s.add_lease("pod_d", &id("used:1")).unwrap();
    // A fake file system: 100 units, each image 10 beyond a base of 50.
    let usage = || -> std::io::Result<(u64, u64)> {
        let n = s.list().map(|l| l.len() as u64).unwrap_or(0);
        Ok((50 + 10 * n, 100))
    };
    // 90 % used: above the threshold, but every image is too young.
    let r = s.collect_garbage(&GcPolicy::default(), usage).unwrap();
    assert_eq!(r.usage_before, 90);
    assert!(r.removed.is_empty(), "{r:?}");
    // Without the minimum age: least recently used first, down to 80 %.
    let policy = GcPolicy {
        minimum_age: std::time::Duration::ZERO,
        ..Default::default()
    };
    let r = s.collect_garbage(&policy, usage).unwrap();
    assert_eq!(r.removed, vec!["bramble.test/old:1".to_string()], "{r:?}");
    assert_eq!(r.usage_after, 80);
    // Below the threshold: nothing.
    let r = s.collect_garbage(&policy, usage).unwrap();
    assert!(r.removed.is_empty());
    // Far above: everything unused goes, never the used or preloaded one.
    let r = s.collect_garbage(&policy, || Ok((99, 100))).unwrap();
    assert_eq!(r.removed, vec!["bramble.test/newer:1".to_string()]);
    let left: Vec<String> = s
        .list()
        .unwrap()
        .iter()
        .map(|i| i.names[0].clone())
        .collect();
    assert_eq!(left, vec!["bramble.test/pre:1", "bramble.test/used:1"]);
    // Their blobs and layers went with them; the kept ones are whole.
    for img in s.list().unwrap() {
        for l in &img.layers {
            assert!(s.layer_dir(l).is_dir());
        }
    }
    let layers = std::fs::read_dir(s.root().join("layers")).unwrap().count();
    assert_eq!(layers, 3, "busybox shared + two markers");
}
