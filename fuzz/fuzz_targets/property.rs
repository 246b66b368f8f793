//! `system property set KEY VALUE`. The first byte picks the key (one of
//! the known ones, or the first line of the rest for any other), the rest
//! is the value. A value is either refused and not stored, or stored and
//! read back as it was given; and as properties are "checked when set so
//! that readers can trust them", a `registry.domain` that is accepted
//! must give references that survive the round trip through their text
//! that image records take (see the `reference` target).
#![no_main]

use std::sync::OnceLock;

use container::image::Reference;
use container::properties::{NETWORK_DEFAULT, NETWORK_SUBNET, Properties, REGISTRY_DOMAIN};
use libfuzzer_sys::fuzz_target;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn app_root() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        tempfile::Builder::new()
            .prefix("fuzz-property-")
            .tempdir_in(base)
            .expect("a scratch directory")
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let (key, value) = match which % 4 {
        0 => (REGISTRY_DOMAIN, rest),
        1 => (NETWORK_DEFAULT, rest),
        2 => (NETWORK_SUBNET, rest),
        _ => rest.split_once('\n').unwrap_or((rest, "")),
    };
    let properties = Properties::open(app_root());
    if properties.set(key, Some(value)).is_err() {
        if let Ok(stored) = properties.get(key) {
            assert_eq!(stored, None, "a refused {key} was stored");
        }
        return;
    }
    assert_eq!(properties.get(key).unwrap().as_deref(), Some(value));
    properties.set(key, None).unwrap();

    if key == REGISTRY_DOMAIN {
        for name in ["alpine", "ns/app:1", &format!("a/b/c@{DIGEST}")] {
            let reference = Reference::parse_with_domain(name, Some(value)).unwrap_or_else(|e| {
                panic!("registry.domain {value:?} makes {name:?} invalid: {e}")
            });
            let shown = reference.to_string();
            let back = shown.parse::<Reference>().unwrap_or_else(|e| {
                panic!("with registry.domain {value:?}, {name:?} became {shown:?}, which does not parse: {e}")
            });
            assert_eq!(
                back, reference,
                "with registry.domain {value:?}, {name:?} became {shown:?}, which names another image"
            );
        }
    }
});
