//! Pulling from a real registry (docker-registry on loopback) through the
//! library API.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{
    PATH, Registry, blobs_of, sha256, stored_blobs, test_image, write_multi_platform_layout,
};
use container::image::{Error, ImageStore, PullOptions, Reference};

fn reference(s: &str) -> Reference {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn ingest_is_empty(app_root: &Path) -> bool {
    std::fs::read_dir(app_root.join("content/ingest"))
        .unwrap()
        .next()
        .is_none()
}

#[tokio::test]
async fn pull_by_tag_stores_verified_blobs_and_a_record() {
    let registry = Registry::start();
    let digest = registry.push_test_image("busybox", "latest");
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let r = reference(&format!("{}/busybox", registry.addr()));

    assert_eq!(store.lookup(&r).unwrap(), None);
    let image = store.pull(&r, &PullOptions::default()).await.unwrap();

    assert_eq!(
        image.reference,
        format!("{}/busybox:latest", registry.addr())
    );
    assert_eq!(image.digest, digest);
    assert_eq!(image.config.env, [PATH]);
    assert_eq!(image.config.cmd, ["sh"]);
    assert!(image.config.entrypoint.is_empty());
    assert_eq!(image.config.working_dir, "");

    let (config, layers) = blobs_of(&test_image().dir, &digest);
    let expected: BTreeSet<String> = [digest.clone(), config].into_iter().chain(layers).collect();
    assert_eq!(stored_blobs(root.path()), expected);
    assert!(ingest_is_empty(root.path()));

    // A fresh store on the same app root sees the record.
    let reopened = ImageStore::open(root.path()).unwrap();
    assert_eq!(reopened.lookup(&r).unwrap(), Some(image.clone()));
    assert_eq!(
        reopened
            .lookup(&reference(&format!("{}/busybox:other", registry.addr())))
            .unwrap(),
        None
    );
    // A digest reference finds the image pulled by tag.
    let by_digest = reference(&format!("{}/busybox@{digest}", registry.addr()));
    assert_eq!(reopened.lookup(&by_digest).unwrap().unwrap().digest, digest);
}

#[tokio::test]
async fn pull_docker_v2_image() {
    let registry = Registry::start();
    registry.push_test_image_as_docker("docker", "v2");
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let r = reference(&format!("{}/docker:v2", registry.addr()));

    let image = store.pull(&r, &PullOptions::default()).await.unwrap();
    assert_eq!(image.config.cmd, ["sh"]);
    assert_eq!(image.config.env, [PATH]);
    let hex = image.digest.strip_prefix("sha256:").unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.path().join("content/blobs/sha256").join(hex)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(stored_blobs(root.path()).len(), 3);
}

#[tokio::test]
async fn pull_by_digest() {
    let registry = Registry::start();
    let digest = registry.push_test_image("pinned", "v1");
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let r = reference(&format!("{}/pinned@{digest}", registry.addr()));

    let image = store.pull(&r, &PullOptions::default()).await.unwrap();
    assert_eq!(image.digest, digest);
    assert_eq!(
        image.reference,
        format!("{}/pinned@{digest}", registry.addr())
    );
    assert_eq!(image.config.cmd, ["sh"]);
    assert_eq!(store.lookup(&r).unwrap(), Some(image));

    // A digest the registry does not have is not found.
    let absent = format!("sha256:{}", "0".repeat(64));
    let err = store
        .pull(
            &reference(&format!("{}/pinned@{absent}", registry.addr())),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn repull_skips_blobs_already_stored() {
    let registry = Registry::start();
    let digest = registry.push_test_image("busybox", "latest");
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let r = reference(&format!("{}/busybox:latest", registry.addr()));
    store.pull(&r, &PullOptions::default()).await.unwrap();

    // Remove the layer and config from the registry: a second pull can only
    // succeed if it does not ask for them again.
    let (config, layers) = blobs_of(&test_image().dir, &digest);
    for blob in layers.iter().chain([&config]) {
        std::fs::remove_file(registry.blob_data(blob)).unwrap();
    }
    let image = store.pull(&r, &PullOptions::default()).await.unwrap();
    assert_eq!(image.digest, digest);

    // ...whereas an empty store cannot pull it any more.
    let other = tempfile::tempdir().unwrap();
    let fresh = ImageStore::open(other.path()).unwrap();
    let err = fresh.pull(&r, &PullOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn missing_image_or_tag_is_not_found() {
    let registry = Registry::start();
    registry.push_test_image("busybox", "latest");
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();

    for name in ["nope:latest", "busybox:nope"] {
        let r = reference(&format!("{}/{name}", registry.addr()));
        let err = store.pull(&r, &PullOptions::default()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("image {}/{name} not found in the registry", registry.addr())
        );
        assert_eq!(store.lookup(&r).unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_leave_a_consistent_store() {
    let registry = Registry::start();
    let digest = registry.push_test_image("busybox", "latest");
    registry.push_test_image("busybox", "second");
    let root = tempfile::tempdir().unwrap();
    let tag = |t: &str| reference(&format!("{}/busybox:{t}", registry.addr()));

    // Separate stores, as two CLI processes would have, racing on every blob
    // and on the records file.
    let pulls = (0..4).map(|i| {
        let root = root.path().to_path_buf();
        let r = tag(if i % 2 == 0 { "latest" } else { "second" });
        tokio::spawn(async move {
            let store = ImageStore::open(&root).unwrap();
            store.pull(&r, &PullOptions::default()).await
        })
    });
    for result in futures::future::join_all(pulls).await {
        assert_eq!(result.unwrap().unwrap().digest, digest);
    }

    let (config, layers) = blobs_of(&test_image().dir, &digest);
    let expected: BTreeSet<String> = [digest.clone(), config].into_iter().chain(layers).collect();
    assert_eq!(stored_blobs(root.path()), expected);
    assert!(ingest_is_empty(root.path()));
    let store = ImageStore::open(root.path()).unwrap();
    for t in ["latest", "second"] {
        assert_eq!(
            store.lookup(&tag(t)).unwrap().unwrap().digest,
            digest,
            "{t}"
        );
    }
}

#[tokio::test]
async fn index_resolves_to_the_host_platform() {
    let registry = Registry::start();
    let layout = tempfile::tempdir().unwrap();
    let (host_digest, other_digest) = write_multi_platform_layout(layout.path());
    registry.push_layout(layout.path(), "multi", "multi", "latest");

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let r = reference(&format!("{}/multi:latest", registry.addr()));
    let image = store.pull(&r, &PullOptions::default()).await.unwrap();

    assert_ne!(host_digest, other_digest);
    assert_eq!(image.digest, host_digest);
    assert_eq!(
        image.config.env,
        [PATH],
        "the other platform's config has a marker env"
    );
    let blobs = stored_blobs(root.path());
    assert!(blobs.contains(&host_digest));
    assert!(!blobs.contains(&other_digest));
}

#[tokio::test]
async fn corrupt_blob_fails_and_stores_nothing_for_it() {
    let registry = Registry::start();
    let digest = registry.push_test_image("busybox", "latest");
    let (_, layers) = blobs_of(&test_image().dir, &digest);
    let layer = &layers[0];

    // Same size, one byte changed: only hashing can notice.
    let data = registry.blob_data(layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let r = reference(&format!("{}/busybox:latest", registry.addr()));
    let err = store.pull(&r, &PullOptions::default()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("digest mismatch for blob {layer}: got {}", sha256(&bytes))
    );

    let blobs = stored_blobs(root.path());
    assert!(!blobs.contains(layer), "the corrupt layer was stored");
    assert!(!blobs.contains(&digest), "the manifest was stored");
    assert!(ingest_is_empty(root.path()));
    assert_eq!(store.lookup(&r).unwrap(), None);
}
