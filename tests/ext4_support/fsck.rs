//! e2fsck as the oracle for images we write, shared by the ext4 unit tests
//! and the integration tests that check snapshots.

use std::path::Path;
use std::process::Command;

/// Asserts that `e2fsck -fn` finds nothing at all to say about the image.
pub fn fsck(path: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "e2fsck failed ({}):\n{text}",
        out.status
    );
    // e2fsck also judges the host's clock: our machines' clock can step back
    // between writing an image and checking it, and then the image's write
    // time looks "in the future". That says nothing about the image.
    let noise = text.lines().filter(|l| {
        !(l.starts_with("Pass ")
            || l.starts_with("e2fsck ")
            || l.contains("files (")
            || l.contains("time is in the future")
            || l.contains("hardware clock being incorrectly set")
            || l.is_empty())
    });
    let unexpected: Vec<&str> = noise.collect();
    assert!(unexpected.is_empty(), "e2fsck complained:\n{text}");
}
