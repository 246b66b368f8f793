//! `.dockerignore` matching, with Docker's rules rather than git's.
//!
//! Written by hand on purpose: the `ignore` and `globset` crates implement
//! `.gitignore` semantics, which differ from Docker's in ways that change
//! what ends up in a build context. In git `*.go` matches at any depth, a
//! trailing `/` means "directories only" and a file under an excluded
//! directory cannot be re-included; in Docker `*.go` matches only at the
//! context root, `a/` is just `a`, and `!` works at any depth.
//!
//! The rules follow Docker's documentation and moby's `patternmatcher`:
//!
//! - One pattern per line. A line whose first character is `#` is a
//!   comment (Docker checks this *before* trimming, so `  #x` is a pattern).
//!   Surrounding whitespace is trimmed and blank lines are skipped.
//! - A leading `!` makes an exception; the last pattern that matches a path
//!   decides whether it is excluded.
//! - Patterns are cleaned like Go's `filepath.Clean` and a leading `/` is
//!   dropped, so `/a`, `./a`, `a/` and `a//b` mean `a` and `a/b`. A pattern
//!   that cleans to `.` or `/` matches nothing and is dropped.
//! - Globs follow Go's `filepath.Match`: `*` and `?` never match `/`,
//!   `[...]` is a class with ranges, negated by a leading `^` only (`!` is an
//!   ordinary member, as in Go), `\` makes the next character literal.
//!   `**/` matches any number of directories, including none, and a trailing
//!   `**` matches anything.
//! - A pattern matches a path if it matches the path or any of its parent
//!   directories, so `build` excludes `build/x/y`.
//!
//! Where moby's shortcuts disagree with its own regular expressions this
//! module follows the regular expressions: moby matches `**/foo` by string
//! suffix (so it also hits `barfoo`), here it needs a directory boundary.

use std::fmt;

/// A malformed `.dockerignore`; Docker refuses the build in these cases too.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pattern Go's `filepath.Match` would reject.
    #[error(".dockerignore line {line} has a malformed pattern `{pattern}`: {reason}")]
    Pattern {
        /// 1-based line number, counting comments and blank lines.
        line: usize,
        /// The line as written, trimmed.
        pattern: String,
        /// What is wrong with it.
        reason: Reason,
    },
}

/// Why a pattern was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `!` with nothing after it.
    BareExclamation,
    /// A `[` without its closing `]`.
    UnterminatedClass,
    /// `-` or `]` where a class member was expected (e.g. `[]`, `[-a]`, `[a-]`).
    MisplacedInClass,
    /// A range such as `[z-a]`.
    BackwardRange,
    /// A `\` at the very end, escaping nothing.
    TrailingBackslash,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::BareExclamation => "`!` must be followed by a pattern",
            Reason::UnterminatedClass => "a `[` character class is not closed",
            Reason::MisplacedInClass => "a character class has a misplaced `-` or `]`",
            Reason::BackwardRange => "a character class range runs backwards",
            Reason::TrailingBackslash => "it ends with a `\\` that escapes nothing",
        })
    }
}

/// The parsed patterns of a `.dockerignore` file.
#[derive(Debug, Clone)]
pub struct Ignore {
    rules: Vec<Rule>,
}

/// One non-comment line.
#[derive(Debug, Clone)]
struct Rule {
    exception: bool,
    glob: Glob,
}

/// A compiled pattern; a plain literal skips the glob matcher entirely,
/// since most real patterns (`.git`, `node_modules`) are literals.
#[derive(Debug, Clone)]
enum Glob {
    Literal(String),
    Tokens(Vec<Tok>),
}

#[derive(Debug, Clone)]
enum Tok {
    Char(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `[...]`: one character (which may be `/`, as in Go) in or out of the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**` followed by more pattern: nothing, or anything that ends in `/`.
    Dirs,
    /// `**` at the end: anything at all.
    Rest,
}

impl Ignore {
    /// Parses .dockerignore text. Errors: a malformed pattern (e.g. unterminated `[`), one sentence naming the line number and the pattern.
    pub fn parse(text: &str) -> Result<Ignore, Error> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            if raw.starts_with('#') {
                continue;
            }
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let fail = |reason| Error::Pattern {
                line: index + 1,
                pattern: line.to_string(),
                reason,
            };
            let (exception, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if exception && body.is_empty() {
                return Err(fail(Reason::BareExclamation));
            }
            let cleaned = clean(body);
            let cleaned = match cleaned.strip_prefix('/') {
                Some(rest) if !rest.is_empty() => rest.to_string(),
                _ => cleaned,
            };
            // Validate even the patterns that are dropped below, as Docker does.
            let glob = compile(&cleaned).map_err(fail)?;
            if cleaned == "." || cleaned == "/" {
                continue;
            }
            rules.push(Rule { exception, glob });
        }
        Ok(Ignore { rules })
    }

    /// Ignores nothing (no .dockerignore).
    pub fn none() -> Ignore {
        Ignore { rules: Vec::new() }
    }

    /// Whether the context-relative path (forward slashes, no leading ./ or /, e.g. "src/main.rs") is excluded.
    ///
    /// The context root itself is never excluded, as in Docker.
    pub fn excluded(&self, path: &str) -> bool {
        let Some(path) = normalize(path) else {
            return false;
        };
        let mut excluded = false;
        for rule in &self.rules {
            // A rule can only flip the verdict, so skip those that agree with it.
            if rule.exception != excluded {
                continue;
            }
            if rule.glob.matches_or_parent(&path) {
                excluded = !rule.exception;
            }
        }
        excluded
    }

    /// Whether an excluded directory may still contain included files (some `!` exception could match below it), so a walker must descend into it rather than skip it.
    ///
    /// Conservative: it may say yes when nothing below is included, never
    /// the reverse. Exceptions that precede the last exclusion matching
    /// `dir` (or a parent) are ignored, since that exclusion also matches
    /// everything below `dir` and so overrides them.
    pub fn may_include_below(&self, dir: &str) -> bool {
        let Some(dir) = normalize(dir) else {
            return self.rules.iter().any(|r| r.exception);
        };
        let start = self
            .rules
            .iter()
            .rposition(|r| !r.exception && r.glob.matches_or_parent(&dir))
            .map_or(0, |i| i + 1);
        let mut below = dir.clone();
        below.push('/');
        self.rules[start..]
            .iter()
            .filter(|r| r.exception)
            .any(|r| r.glob.matches_or_parent(&dir) || r.glob.could_extend(&below))
    }
}

/// Go's `path.Match`: whether all of `name` matches `pattern` (`*` and `?`
/// stop at `/`). Docker's `image ls --filter reference=` matches this way.
pub fn path_match(pattern: &str, name: &str) -> Result<bool, String> {
    let glob = compile(pattern).map_err(|reason| format!("bad pattern {pattern:?}: {reason}"))?;
    Ok(glob.matches(&name.chars().collect::<Vec<_>>()))
}

/// Turns a caller's path into the `a/b/c` form patterns are matched
/// against; `None` for the context root.
fn normalize(path: &str) -> Option<Vec<char>> {
    let cleaned = clean(path);
    let cleaned = cleaned.trim_start_matches('/');
    if cleaned.is_empty() || cleaned == "." {
        return None;
    }
    Some(cleaned.chars().collect())
}

/// Go's `filepath.Clean` for `/`-separated paths: Docker cleans every
/// pattern with it, which is what makes `./a`, `a/` and `a//b` work.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let body = parts.join("/");
    if rooted {
        format!("/{body}")
    } else if body.is_empty() {
        ".".to_string()
    } else {
        body
    }
}

/// Parses a cleaned pattern, rejecting what Go's `filepath.Match` rejects
/// (plus backwards ranges, which moby's regular expression rejects).
fn compile(pattern: &str) -> Result<Glob, Reason> {
    let mut toks = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                chars.next_if_eq(&'/');
                toks.push(if chars.peek().is_none() {
                    Tok::Rest
                } else {
                    Tok::Dirs
                });
            }
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::One),
            '\\' => toks.push(Tok::Char(chars.next().ok_or(Reason::TrailingBackslash)?)),
            '[' => {
                let negated = chars.next_if_eq(&'^').is_some();
                let mut ranges = Vec::new();
                loop {
                    if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
                        break;
                    }
                    let lo = class_member(&mut chars)?;
                    let hi = if chars.next_if_eq(&'-').is_some() {
                        class_member(&mut chars)?
                    } else {
                        lo
                    };
                    if lo > hi {
                        return Err(Reason::BackwardRange);
                    }
                    ranges.push((lo, hi));
                }
                toks.push(Tok::Class { negated, ranges });
            }
            _ => toks.push(Tok::Char(c)),
        }
    }
    if toks.iter().all(|t| matches!(t, Tok::Char(_))) {
        let literal = toks
            .iter()
            .map(|t| match t {
                Tok::Char(c) => *c,
                _ => unreachable!("checked above"),
            })
            .collect();
        return Ok(Glob::Literal(literal));
    }
    Ok(Glob::Tokens(toks))
}

/// One end of a class range, as Go's `getEsc` reads it.
fn class_member(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, Reason> {
    let c = match chars.next() {
        None => return Err(Reason::UnterminatedClass),
        Some('-' | ']') => return Err(Reason::MisplacedInClass),
        Some('\\') => chars.next().ok_or(Reason::UnterminatedClass)?,
        Some(c) => c,
    };
    if chars.peek().is_none() {
        return Err(Reason::UnterminatedClass);
    }
    Ok(c)
}

impl Glob {
    /// Docker's parent rule: a pattern matching `a` or `a/b` also matches `a/b/c`.
    fn matches_or_parent(&self, path: &[char]) -> bool {
        self.matches(path)
            || path
                .iter()
                .enumerate()
                .any(|(i, &c)| c == '/' && self.matches(&path[..i]))
    }

    fn matches(&self, path: &[char]) -> bool {
        match self {
            Glob::Literal(lit) => lit.chars().eq(path.iter().copied()),
            Glob::Tokens(toks) => Matcher::new(toks, path, false).run(0, 0),
        }
    }

    /// Whether some path starting with `prefix` could match.
    fn could_extend(&self, prefix: &[char]) -> bool {
        match self {
            Glob::Literal(lit) => {
                let n = prefix.len();
                lit.chars().count() > n && lit.chars().take(n).eq(prefix.iter().copied())
            }
            Glob::Tokens(toks) => Matcher::new(toks, prefix, true).run(0, 0),
        }
    }
}

/// Backtracking glob matcher, memoized on (token, char) positions so that
/// patterns with many stars stay linear in `toks.len() * text.len()`.
struct Matcher<'a> {
    toks: &'a [Tok],
    text: &'a [char],
    /// Accept when the text runs out with pattern left over (prefix query).
    partial: bool,
    /// 0 = unknown, 1 = no, 2 = yes.
    memo: Vec<u8>,
}

impl<'a> Matcher<'a> {
    fn new(toks: &'a [Tok], text: &'a [char], partial: bool) -> Self {
        let memo = vec![0; (toks.len() + 1) * (text.len() + 1)];
        Matcher {
            toks,
            text,
            partial,
            memo,
        }
    }

    fn run(&mut self, ti: usize, si: usize) -> bool {
        let key = ti * (self.text.len() + 1) + si;
        if self.memo[key] != 0 {
            return self.memo[key] == 2;
        }
        let result = self.step(ti, si);
        self.memo[key] = if result { 2 } else { 1 };
        result
    }

    fn step(&mut self, ti: usize, si: usize) -> bool {
        let text = self.text;
        let Some(tok) = self.toks.get(ti) else {
            return si == text.len() && !self.partial;
        };
        if si == text.len() && self.partial {
            return true;
        }
        let next = text.get(si).copied();
        match tok {
            Tok::Char(c) => next == Some(*c) && self.run(ti + 1, si + 1),
            Tok::One => next.is_some_and(|c| c != '/') && self.run(ti + 1, si + 1),
            Tok::Class { negated, ranges } => {
                next.is_some_and(|c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                    && self.run(ti + 1, si + 1)
            }
            Tok::Star => {
                for end in si..=text.len() {
                    if self.run(ti + 1, end) {
                        return true;
                    }
                    if end == text.len() || text[end] == '/' {
                        break;
                    }
                }
                false
            }
            Tok::Dirs => {
                self.run(ti + 1, si)
                    || (si..text.len()).any(|i| text[i] == '/' && self.run(ti + 1, i + 1))
            }
            Tok::Rest => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(text: &str) -> Ignore {
        Ignore::parse(text).expect("valid .dockerignore")
    }

    fn err(text: &str) -> (usize, String, Reason) {
        match Ignore::parse(text) {
            Err(Error::Pattern {
                line,
                pattern,
                reason,
            }) => (line, pattern, reason),
            Ok(i) => panic!("expected an error, got {i:?}"),
        }
    }

    #[test]
    fn none_excludes_nothing() {
        let i = Ignore::none();
        assert!(!i.excluded("a"));
        assert!(!i.excluded("a/b/c"));
        assert!(!i.may_include_below("a"));
        let empty = ig("");
        assert!(!empty.excluded("a"));
    }

    #[test]
    fn docs_star_slash_temp() {
        let i = ig("# comment\n*/temp*\n");
        assert!(i.excluded("somedir/temporary.txt"));
        assert!(i.excluded("somedir/temp"));
        assert!(i.excluded("a/temporary/file"));
        assert!(!i.excluded("temp"));
        assert!(!i.excluded("temporary.txt"));
        assert!(!i.excluded("somedir/subdir/temporary.txt"));
        assert!(!i.excluded("somedir/atemp"));
    }

    #[test]
    fn docs_star_star_slash_temp() {
        let i = ig("*/*/temp*");
        assert!(i.excluded("somedir/subdir/temporary.txt"));
        assert!(!i.excluded("somedir/temporary.txt"));
        assert!(!i.excluded("a/b/c/temp"));
    }

    #[test]
    fn docs_temp_question_mark() {
        let i = ig("temp?");
        assert!(i.excluded("tempa"));
        assert!(i.excluded("tempb"));
        assert!(i.excluded("tempb/inside"));
        assert!(!i.excluded("temp"));
        assert!(!i.excluded("tempab"));
        assert!(!i.excluded("dir/tempa"));
    }

    #[test]
    fn double_star_go_files_at_any_depth() {
        let i = ig("**/*.go");
        assert!(i.excluded("main.go"));
        assert!(i.excluded("cmd/main.go"));
        assert!(i.excluded("a/b/c/x.go"));
        assert!(!i.excluded("main.rs"));
        assert!(!i.excluded("a/main.go.txt"));
    }

    #[test]
    fn double_star_in_the_middle_and_alone() {
        let i = ig("a/**/b");
        assert!(i.excluded("a/b"));
        assert!(i.excluded("a/x/b"));
        assert!(i.excluded("a/x/y/b/c"));
        assert!(!i.excluded("a/xb"));
        assert!(!i.excluded("b"));
        let all = ig("**");
        assert!(all.excluded("x"));
        assert!(all.excluded("x/y/z"));
        let under = ig("a/**");
        assert!(under.excluded("a/x"));
        assert!(under.excluded("a/x/y"));
        assert!(!under.excluded("a"));
        assert!(!under.excluded("ab"));
    }

    #[test]
    fn double_star_needs_a_directory_boundary() {
        let i = ig("**/foo");
        assert!(i.excluded("foo"));
        assert!(i.excluded("x/y/foo"));
        assert!(i.excluded("x/foo/bar"));
        assert!(!i.excluded("barfoo"));
        assert!(!i.excluded("x/barfoo"));
    }

    #[test]
    fn docs_markdown_except_readme() {
        let i = ig("*.md\n!README.md");
        assert!(i.excluded("CHANGELOG.md"));
        assert!(!i.excluded("README.md"));
        assert!(!i.excluded("docs/guide.md"));
        assert!(!i.excluded("main.rs"));
    }

    #[test]
    fn docs_order_of_exceptions_matters() {
        let i = ig("*.md\n!README*.md\nREADME-secret.md");
        assert!(i.excluded("CHANGELOG.md"));
        assert!(!i.excluded("README.md"));
        assert!(!i.excluded("README-public.md"));
        assert!(i.excluded("README-secret.md"));

        let reordered = ig("*.md\nREADME-secret.md\n!README*.md");
        assert!(reordered.excluded("CHANGELOG.md"));
        assert!(!reordered.excluded("README.md"));
        assert!(!reordered.excluded("README-secret.md"));
    }

    #[test]
    fn exception_reincludes_a_file_inside_an_excluded_dir() {
        let i = ig("node_modules\n!node_modules/keep/me.js");
        assert!(i.excluded("node_modules"));
        assert!(i.excluded("node_modules/left-pad/index.js"));
        assert!(i.excluded("node_modules/keep"));
        assert!(!i.excluded("node_modules/keep/me.js"));
        assert!(i.excluded("node_modules/keep/other.js"));
    }

    #[test]
    fn exception_of_a_dir_reincludes_its_contents() {
        let i = ig("*\n!src");
        assert!(i.excluded("Cargo.lock"));
        assert!(i.excluded("target/debug/x"));
        assert!(!i.excluded("src"));
        assert!(!i.excluded("src/main.rs"));
        assert!(!i.excluded("src/build/ignore.rs"));
    }

    #[test]
    fn excluding_git() {
        let i = ig(".git\n");
        assert!(i.excluded(".git"));
        assert!(i.excluded(".git/HEAD"));
        assert!(i.excluded(".git/objects/ab/cdef"));
        assert!(!i.excluded(".gitignore"));
        assert!(!i.excluded("sub/.git"));
    }

    #[test]
    fn parent_dir_rule() {
        let i = ig("build");
        assert!(i.excluded("build"));
        assert!(i.excluded("build/x"));
        assert!(i.excluded("build/x/y"));
        assert!(!i.excluded("builder"));
        assert!(!i.excluded("src/build"));
        let nested = ig("a/b");
        assert!(nested.excluded("a/b/c/d"));
        assert!(!nested.excluded("a"));
        assert!(!nested.excluded("a/c"));
    }

    #[test]
    fn patterns_are_cleaned() {
        for text in [
            "/foo/bar",
            "./foo/bar",
            "foo/bar/",
            "foo//bar",
            "foo/./bar",
            "foo/x/../bar",
        ] {
            let i = ig(text);
            assert!(i.excluded("foo/bar"), "{text}");
            assert!(i.excluded("foo/bar/baz"), "{text}");
            assert!(!i.excluded("foo"), "{text}");
            assert!(!i.excluded("bar"), "{text}");
        }
        let i = ig("!/foo\n*");
        assert!(i.excluded("foo"));
        let i = ig("*\n! ./foo/");
        assert!(!i.excluded("foo"));
        assert!(i.excluded("bar"));
    }

    #[test]
    fn patterns_that_clean_to_nothing_are_dropped() {
        let i = ig(".\n/\n./\na/..\n!.");
        assert_eq!(i.rules.len(), 0);
        assert!(!i.excluded("a"));
        assert!(!i.excluded("x/y"));
    }

    #[test]
    fn character_classes() {
        let i = ig("file[a-c].txt");
        assert!(i.excluded("filea.txt"));
        assert!(i.excluded("fileb.txt"));
        assert!(i.excluded("filec.txt"));
        assert!(!i.excluded("filed.txt"));
        assert!(!i.excluded("file.txt"));

        let negated = ig("file[^a-c].txt");
        assert!(negated.excluded("filed.txt"));
        assert!(!negated.excluded("filea.txt"));

        // As in Go's filepath.Match, `!` is a member, not a negation.
        let bang = ig("x[!a]");
        assert!(bang.excluded("x!"));
        assert!(bang.excluded("xa"));
        assert!(!bang.excluded("xb"));

        let several = ig("[0-9a-fA-F_]x");
        assert!(several.excluded("7x"));
        assert!(several.excluded("Bx"));
        assert!(several.excluded("_x"));
        assert!(!several.excluded("gx"));
    }

    #[test]
    fn escaped_characters() {
        let i = ig(r"a\*b");
        assert!(i.excluded("a*b"));
        assert!(!i.excluded("axb"));
        let q = ig(r"what\?");
        assert!(q.excluded("what?"));
        assert!(!q.excluded("whats"));
        let br = ig(r"\[x\]");
        assert!(br.excluded("[x]"));
        assert!(!br.excluded("x"));
        let in_class = ig(r"[\]\-]z");
        assert!(in_class.excluded("]z"));
        assert!(in_class.excluded("-z"));
        assert!(!in_class.excluded("az"));
        // No regex leaks through: `\d` is a literal `d`, `.` a literal dot.
        let d = ig(r"\d.txt");
        assert!(d.excluded("d.txt"));
        assert!(!d.excluded("1.txt"));
        assert!(!d.excluded("dxtxt"));
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let i = ig("\u{feff}# comment\n\n   \n  target  \r\n\t!target/keep\t\n#*.rs\n");
        assert_eq!(i.rules.len(), 2);
        assert!(i.excluded("target"));
        assert!(i.excluded("target/debug"));
        assert!(!i.excluded("target/keep"));
        assert!(!i.excluded("main.rs"));
        // `#` counts only in column 1, as in Docker.
        let hash = ig("  #notes");
        assert!(hash.excluded("#notes"));
    }

    #[test]
    fn star_does_not_cross_directories() {
        let i = ig("*.log");
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("logs/a.log"));
        let mid = ig("a*z");
        assert!(mid.excluded("abcz"));
        assert!(!mid.excluded("ab/cz"));
    }

    #[test]
    fn caller_paths_are_normalized() {
        let i = ig("a/b");
        assert!(i.excluded("./a/b"));
        assert!(i.excluded("/a/b/"));
        assert!(!i.excluded("."));
        assert!(!i.excluded(""));
        assert!(!ig("**").excluded("."));
    }

    #[test]
    fn may_include_below_cases() {
        let i = ig("node_modules\n!node_modules/keep/me.js");
        assert!(i.may_include_below("node_modules"));
        assert!(i.may_include_below("node_modules/keep"));
        assert!(!i.may_include_below("node_modules/left-pad"));
        assert!(!i.may_include_below("other"));

        let star = ig("*\n!**/*.rs");
        assert!(star.may_include_below("target"));
        assert!(star.may_include_below("a/b/c"));

        let wild = ig("vendor\n!vendor/*/LICENSE");
        assert!(wild.may_include_below("vendor"));
        assert!(wild.may_include_below("vendor/foo"));
        assert!(!wild.may_include_below("vendor/foo/bar"));

        // `!*.go` only re-includes top-level files in Docker.
        let top = ig("src\n!*.go");
        assert!(!top.may_include_below("src"));

        // An exception followed by an exclusion of the whole dir is void.
        let overridden = ig("!src/keep.txt\nsrc");
        assert!(overridden.excluded("src/keep.txt"));
        assert!(!overridden.may_include_below("src"));

        let no_exceptions = ig("target\n*.o");
        assert!(!no_exceptions.may_include_below("target"));
        assert!(!no_exceptions.may_include_below(""));
        assert!(star.may_include_below(""));
    }

    #[test]
    fn malformed_patterns_name_their_line() {
        assert_eq!(
            err("ok\n# fine\n\nsrc/[abc"),
            (4, "src/[abc".to_string(), Reason::UnterminatedClass)
        );
        assert_eq!(err("!"), (1, "!".to_string(), Reason::BareExclamation));
        assert_eq!(
            err("a\n  !  "),
            (2, "!".to_string(), Reason::BareExclamation)
        );
        assert_eq!(err("[]a"), (1, "[]a".to_string(), Reason::MisplacedInClass));
        assert_eq!(err("[^]"), (1, "[^]".to_string(), Reason::MisplacedInClass));
        assert_eq!(
            err("[a-]"),
            (1, "[a-]".to_string(), Reason::MisplacedInClass)
        );
        assert_eq!(
            err("[z-a]"),
            (1, "[z-a]".to_string(), Reason::BackwardRange)
        );
        assert_eq!(
            err("x\\"),
            (1, "x\\".to_string(), Reason::TrailingBackslash)
        );
        assert_eq!(err("[a"), (1, "[a".to_string(), Reason::UnterminatedClass));
        assert_eq!(
            err("[a\\"),
            (1, "[a\\".to_string(), Reason::UnterminatedClass)
        );
        assert_eq!(
            Ignore::parse("a\nb[").unwrap_err().to_string(),
            ".dockerignore line 2 has a malformed pattern `b[`: a `[` character class is not closed"
        );
    }

    #[test]
    fn many_stars_stay_fast() {
        let i = ig("*a*a*a*a*a*a*a*a*a*b");
        let long = "a".repeat(200);
        assert!(!i.excluded(&long));
        assert!(i.excluded(&format!("{long}b")));
    }
}
