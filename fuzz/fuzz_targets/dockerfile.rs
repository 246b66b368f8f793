//! The Dockerfile parser and the expansion of variables the builder does
//! for each instruction. Nothing may panic; and since ONBUILD triggers are
//! "checked now: a mistake would otherwise only show in another build", a
//! trigger accepted here must parse as the build of a child image parses
//! it (mod.rs: `FROM scratch` followed by the triggers).
#![no_main]

use container::build::dockerfile::{Kind, expand, expand_words, parse};
use libfuzzer_sys::fuzz_target;

fn vars(name: &str) -> Option<String> {
    match name {
        "A" => Some("a".into()),
        "EMPTY" => Some(String::new()),
        "WORDS" => Some(" x  y\tz ".into()),
        "QUOTES" => Some("'\"$A\\`".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for escape in ['\\', '`'] {
        let _ = expand(text, escape, &vars);
        let _ = expand_words(text, escape, &vars);
    }
    let Ok(dockerfile) = parse(text) else {
        return;
    };
    for instruction in &dockerfile.instructions {
        let _ = instruction.expanded(dockerfile.escape, &vars);
        if let Kind::Onbuild(trigger) = &instruction.kind
            // A trigger is kept as text; one written under `# escape=``
            // means what it says under the child's escape, as in Docker.
            && dockerfile.escape == '\\'
        {
            let child = format!("FROM scratch\n{trigger}\n");
            if let Err(e) = parse(&child) {
                panic!("the accepted trigger {trigger:?} does not parse in a child build: {e}");
            }
        }
    }
});
