//! Error texts that keep their causes. Crates such as tonic and reqwest put
//! the real cause below a general top-level text ("transport error", "error
//! decoding response body"); the user's one line must name it.

use std::error::Error;

/// `message`, followed by each cause below it that adds to it.
pub fn with_causes(mut message: String, mut cause: Option<&dyn Error>) -> String {
    while let Some(e) = cause {
        let text = e.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = e.source();
    }
    message
}

/// An error's own text and its causes, as one sentence.
pub fn describe(error: &dyn Error) -> String {
    with_causes(error.to_string(), error.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_follow_unless_already_said() {
        let inner = std::io::Error::other("unexpected end of file");
        let outer = std::io::Error::other(Wrapped("error decoding response body", inner));
        assert_eq!(
            describe(&outer),
            "error decoding response body: unexpected end of file"
        );
        let repeated = std::io::Error::other(Wrapped(
            "read failed: unexpected end of file",
            std::io::Error::other("unexpected end of file"),
        ));
        assert_eq!(describe(&repeated), "read failed: unexpected end of file");
    }

    #[derive(Debug)]
    struct Wrapped(&'static str, std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.1)
        }
    }
}
