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
