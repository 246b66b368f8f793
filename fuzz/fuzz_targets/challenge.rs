//! A registry's `WWW-Authenticate` header, as the token dance reads it
//! (image/token.rs): any value is either no Bearer challenge or one whose
//! realm, written back as a quoted string, reads the same again.
#![no_main]

use container::fuzzing::bearer_challenge;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let Some(challenge) = bearer_challenge(value) else {
        return;
    };
    let quoted = challenge.realm.replace('\\', "\\\\").replace('"', "\\\"");
    let again = bearer_challenge(&format!("Bearer realm=\"{quoted}\""))
        .unwrap_or_else(|| panic!("realm {:?} from {value:?} does not read back", challenge.realm));
    assert_eq!(again.realm, challenge.realm, "from {value:?}");
});
