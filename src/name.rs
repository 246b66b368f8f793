//! Names users give containers and networks: Docker's rule, so that a name
//! that works there works here.

/// A letter or digit, then letters, digits, `_`, `.` and `-`.
pub fn valid(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn docker_names() {
        assert!(super::valid("web-1.a_b"));
        assert!(!super::valid("-web"));
        assert!(!super::valid(""));
        assert!(!super::valid("a/b"));
    }
}
