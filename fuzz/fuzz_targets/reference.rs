//! Image reference parsing. Input: `REFERENCE`, or `DOMAIN\nREFERENCE` to
//! parse with a `registry.domain`.
//!
//! Image records are keyed by a reference's text and parsed back from it
//! (records.rs, push.rs, archive.rs), so every reference parsed from a name
//! that names its registry must come back the same from its own text; its
//! `name()` and `with_digest` forms must parse too. The same for a
//! reference given its registry by `registry.domain` is the `property`
//! target's to check, since the property's check decides which domains
//! there can be.
#![no_main]

use container::image::Reference;
use libfuzzer_sys::fuzz_target;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (domain, input) = match text.split_once('\n') {
        Some((domain, input)) => (Some(domain), input),
        None => (None, text),
    };
    let Ok(reference) = Reference::parse_with_domain(input, domain) else {
        return;
    };
    if domain.is_some() {
        match Reference::parse_with_domain(input, None) {
            Ok(without) if without == reference => {}
            // The domain was used; see the `property` target.
            _ => return,
        }
    }

    let shown = reference.to_string();
    let back: Reference = shown
        .parse()
        .unwrap_or_else(|e| panic!("{input:?} became {shown:?}, which does not parse: {e}"));
    assert_eq!(back, reference, "{input:?} became {shown:?}");
    assert_eq!(back.to_string(), shown);

    let name = reference.name();
    let named: Reference = name
        .parse()
        .unwrap_or_else(|e| panic!("the name {name:?} of {input:?} does not parse: {e}"));
    assert_eq!(
        (named.registry(), named.repository()),
        (reference.registry(), reference.repository()),
        "the name {name:?} of {input:?}"
    );

    let pinned = reference.with_digest(DIGEST);
    let back: Reference = pinned
        .to_string()
        .parse()
        .unwrap_or_else(|e| panic!("{input:?} pinned, {pinned}, does not parse: {e}"));
    assert_eq!(back, pinned);
    assert_eq!((back.tag(), back.digest()), (None, Some(DIGEST)));
});
