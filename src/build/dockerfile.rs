//! Dockerfile parsing with BuildKit's rules (parser directives, comments, line
//! continuations, heredocs, JSON exec form, `--flags`), so that a Dockerfile
//! means here what it means to `docker build`.
//!
//! Parsing leaves variables unexpanded: their values come from build-time
//! state (build args, earlier `ENV`s), so the builder expands each instruction
//! when it reaches it, with [`Instruction::expanded`].

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::str::Chars;

use serde_json::Value;

pub use crate::runtime::StepMount;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// Set by `# escape=`; expansion needs it too.
    pub escape: char,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    pub kind: Kind,
    /// The instruction as written, continuation lines joined with single
    /// spaces and heredoc bodies left out: what progress output and image
    /// history show.
    pub text: String,
}

/// An instruction's arguments, unexpanded (quotes and `$VAR`s as written).
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `FROM [--platform=P] image [AS name]`; the stage name is lowercased,
    /// as stage names are case-insensitive.
    From {
        image: String,
        name: Option<String>,
        platform: Option<String>,
    },
    Run {
        command: Command,
        /// `--network=default|none|host`.
        network: Option<String>,
        /// `--mount=...`, in order; a relative target is under WORKDIR.
        mounts: Vec<StepMount>,
    },
    Cmd(Command),
    Entrypoint(Command),
    Shell(Vec<String>),
    Copy(Copy),
    Add(Copy),
    Env(Vec<(String, String)>),
    /// Names with their optional defaults.
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    Workdir(String),
    User(String),
    StopSignal(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    /// `None` for `HEALTHCHECK NONE`, which turns off an inherited check.
    Healthcheck(Option<Healthcheck>),
    /// The trigger as Dockerfile text (heredoc bodies included), parsed again
    /// by the build that uses this image as its base.
    Onbuild(String),
    Maintainer(String),
}

/// A command line: JSON array form runs as is, anything else through the shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Exec(Vec<String>),
    /// For `RUN` with heredocs, the script the shell runs: the body alone for
    /// a bare `RUN <<EOF` (a body starting with `#!` is meant to run as a
    /// script file), else the line followed by each body and its delimiter,
    /// so that the shell feeds them.
    Shell(String),
}

/// `COPY`/`ADD` arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    pub sources: Vec<Source>,
    pub dest: String,
    /// `--from` (COPY only): a stage, image or context to copy from.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Path(String),
    /// A heredoc (`COPY <<EOF /dest`): a file named `name` holding `content`.
    /// `expand` is false when the delimiter was quoted, which keeps `$VAR`s
    /// in the content as written.
    Inline {
        name: String,
        content: String,
        expand: bool,
    },
}

/// `HEALTHCHECK [options] CMD command`. The durations are Go duration
/// strings (`30s`, `1m30s`), as Docker takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Healthcheck {
    pub test: Command,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub start_interval: Option<String>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("line {line}: unknown instruction '{name}'")]
    UnknownInstruction { line: usize, name: String },
    /// Valid Dockerfile syntax that this builder does not implement, such as
    /// `RUN --mount`.
    #[error("line {line}: unsupported {what}")]
    Unsupported { line: usize, what: String },
    #[error("line {line}: unterminated heredoc '{name}'")]
    UnterminatedHeredoc { line: usize, name: String },
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("line {line}: {source}")]
    Expand { line: usize, source: ExpandError },
}

impl Error {
    /// The line of the instruction at fault.
    pub fn line(&self) -> usize {
        match self {
            Error::UnknownInstruction { line, .. }
            | Error::Unsupported { line, .. }
            | Error::UnterminatedHeredoc { line, .. }
            | Error::Syntax { line, .. }
            | Error::Expand { line, .. } => *line,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExpandError {
    /// `${VAR?message}` with VAR unset, or `${VAR:?message}` with it unset or empty.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("missing closing {0}")]
    Unterminated(&'static str),
    #[error("bad substitution '{0}'")]
    BadSubstitution(String),
}

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .collect();
    let (escape, mut next) = directives(&lines)?;
    let mut instructions: Vec<Instruction> = Vec::new();
    let mut has_from = false;
    while next < lines.len() {
        let line = next + 1;
        let first = lines[next].trim_start();
        next += 1;
        if first.starts_with('#') {
            continue;
        }
        let (piece, mut continued) = continuation(first, escape);
        // BuildKit joins continuation lines as they are, without a separator.
        let mut logical = piece.to_string();
        let mut shown = vec![piece.trim()];
        while continued && next < lines.len() {
            let raw = lines[next];
            next += 1;
            // Comments and blank lines inside a continued instruction are skipped.
            if raw.trim_start().starts_with('#') || raw.trim().is_empty() {
                continue;
            }
            let (piece, more) = continuation(raw, escape);
            continued = more;
            logical.push_str(piece);
            shown.push(piece.trim());
        }
        if logical.trim().is_empty() {
            continue;
        }
        let mut heredocs = heredocs_opened(&logical, escape);
        for heredoc in &mut heredocs {
            read_heredoc(heredoc, &lines, &mut next, line)?;
        }
        let kind = parse_instruction(line, &logical, &heredocs, escape)?;
        match kind {
            Kind::From { .. } => has_from = true,
            Kind::Arg(_) => {}
            _ if !has_from => {
                let keyword = split_keyword(&logical).0.to_ascii_uppercase();
                return Err(syntax(
                    line,
                    format!("{keyword} comes before any FROM (only ARG may)"),
                ));
            }
            _ => {}
        }
        let text = shown
            .into_iter()
            .filter(|piece| !piece.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        instructions.push(Instruction { line, kind, text });
    }
    if !has_from {
        return Err(syntax(
            text.lines().count().max(1),
            "the Dockerfile has no FROM instruction",
        ));
    }
    Ok(Dockerfile {
        escape,
        instructions,
    })
}

/// Expands `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`,
/// `${VAR+word}`, `${VAR:?msg}`/`${VAR?msg}` (error), removes quotes
/// ('...' literal, "..." expanding) and escape characters, as Docker's shell
/// lexer does for one word. Unset variables expand to nothing.
pub fn expand(
    raw: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    Lexer::new(raw, escape, true, vars)
        .run(None)
        .map(|(text, _)| text)
}

/// The same, splitting into words on unquoted whitespace (used for
/// EXPOSE/VOLUME/COPY-style lists). Whitespace in a variable's value splits
/// too, unless the variable is quoted.
pub fn expand_words(
    raw: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ExpandError> {
    Lexer::new(raw, escape, true, vars)
        .run(None)
        .map(|(_, words)| words)
}

impl Instruction {
    /// This instruction with variables expanded in exactly the fields Docker
    /// expands: FROM image and platform, ENV, ARG and LABEL names and values,
    /// COPY/ADD source paths, heredoc contents (unless the delimiter was
    /// quoted), destination and flags, WORKDIR, USER, STOPSIGNAL, EXPOSE and
    /// VOLUME. RUN, CMD, ENTRYPOINT, SHELL and HEALTHCHECK are left to the
    /// shell at run time, ONBUILD to the build that runs the trigger.
    pub fn expanded(
        &self,
        escape: char,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Kind, Error> {
        let at_line = |source| Error::Expand {
            line: self.line,
            source,
        };
        let word = |raw: &str| expand(raw, escape, vars).map_err(at_line);
        let pairs = |pairs: &[(String, String)]| {
            pairs
                .iter()
                .map(|(name, value)| Ok((word(name)?, word(value)?)))
                .collect::<Result<Vec<_>, Error>>()
        };
        let copy = |copy: &Copy| -> Result<Copy, Error> {
            let sources = copy.sources.iter().map(|source| {
                Ok(match source {
                    Source::Path(path) => Source::Path(word(path)?),
                    Source::Inline {
                        name,
                        content,
                        expand: true,
                    } => Source::Inline {
                        name: name.clone(),
                        // Heredoc contents keep their quotes, and take `\`
                        // as the escape whatever the directive says (BuildKit).
                        content: Lexer::new(content, '\\', false, vars)
                            .run(None)
                            .map_err(at_line)?
                            .0,
                        expand: true,
                    },
                    inline => inline.clone(),
                })
            });
            Ok(Copy {
                sources: sources.collect::<Result<_, Error>>()?,
                dest: word(&copy.dest)?,
                from: copy.from.as_deref().map(word).transpose()?,
                chown: copy.chown.as_deref().map(word).transpose()?,
                chmod: copy.chmod.as_deref().map(word).transpose()?,
                link: copy.link,
            })
        };
        Ok(match &self.kind {
            Kind::From {
                image,
                name,
                platform,
            } => Kind::From {
                image: word(image)?,
                name: name.clone(),
                platform: platform.as_deref().map(word).transpose()?,
            },
            Kind::Env(env) => Kind::Env(pairs(env)?),
            Kind::Label(labels) => Kind::Label(pairs(labels)?),
            Kind::Arg(args) => Kind::Arg(
                args.iter()
                    .map(|(name, default)| {
                        Ok((word(name)?, default.as_deref().map(word).transpose()?))
                    })
                    .collect::<Result<_, Error>>()?,
            ),
            Kind::Copy(c) => Kind::Copy(copy(c)?),
            Kind::Add(c) => Kind::Add(copy(c)?),
            Kind::Workdir(path) => Kind::Workdir(word(path)?),
            Kind::User(user) => Kind::User(word(user)?),
            Kind::StopSignal(signal) => Kind::StopSignal(word(signal)?),
            // One EXPOSE word may name several ports (`EXPOSE $PORTS`).
            Kind::Expose(ports) => {
                let mut expanded = Vec::new();
                for port in ports {
                    expanded.extend(expand_words(port, escape, vars).map_err(at_line)?);
                }
                Kind::Expose(expanded)
            }
            Kind::Volume(paths) => {
                Kind::Volume(paths.iter().map(|p| word(p)).collect::<Result<_, _>>()?)
            }
            other => other.clone(),
        })
    }
}

fn syntax(line: usize, message: impl Into<String>) -> Error {
    Error::Syntax {
        line,
        message: message.into(),
    }
}

/// Reads the parser directives at the top of the file; returns the escape
/// character and the index of the first line after them.
fn directives(lines: &[&str]) -> Result<(char, usize), Error> {
    let mut escape = '\\';
    let mut seen: Vec<String> = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some((name, value)) = directive(line) else {
            return Ok((escape, index));
        };
        if seen.contains(&name) {
            return Err(syntax(
                index + 1,
                format!("the {name} directive may only be given once"),
            ));
        }
        if name == "escape" {
            escape = match value {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(syntax(
                        index + 1,
                        format!("the escape directive takes \\ or `, not '{value}'"),
                    ));
                }
            };
        }
        seen.push(name);
    }
    Ok((escape, lines.len()))
}

/// `# name=value` for a known directive; an unknown one is a comment, and
/// like any comment ends the directives.
fn directive(line: &str) -> Option<(String, &str)> {
    let (name, value) = line
        .trim_start()
        .strip_prefix('#')?
        .trim_start()
        .split_once('=')?;
    let name = name.trim_end();
    let mut chars = name.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric());
    let name = name.to_ascii_lowercase();
    let value = value.trim();
    let known = ["syntax", "escape", "check"].contains(&name.as_str());
    (well_formed && known && !value.is_empty()).then_some((name, value))
}

/// Strips a line-continuing escape character (the last one on the line,
/// before trailing blanks), unless it is itself escaped, as BuildKit does.
fn continuation(line: &str, escape: char) -> (&str, bool) {
    match line.trim_end_matches([' ', '\t']).strip_suffix(escape) {
        Some(rest) if !rest.ends_with(escape) => (rest, true),
        _ => (line, false),
    }
}

fn split_keyword(line: &str) -> (&str, &str) {
    let line = line.trim();
    match line.split_once(char::is_whitespace) {
        Some((keyword, rest)) => (keyword, rest.trim_start()),
        None => (line, ""),
    }
}

/// A heredoc opened on an instruction line.
struct Heredoc {
    /// The word that opened it (`<<-"EOF"`), which COPY's sources name.
    word: String,
    /// The delimiter, unquoted.
    name: String,
    expand: bool,
    /// `<<-`: leading tabs are stripped from the body and the delimiter line.
    chomp: bool,
    content: String,
}

/// The heredocs an instruction line opens, in order. Only RUN, COPY and ADD
/// (also as ONBUILD triggers) take heredocs, and not in their JSON form.
fn heredocs_opened(logical: &str, escape: char) -> Vec<Heredoc> {
    let (mut keyword, mut rest) = split_keyword(logical);
    if keyword.eq_ignore_ascii_case("ONBUILD") {
        (keyword, rest) = split_keyword(extract_flags(rest, escape).1);
    }
    let args = extract_flags(rest, escape).1;
    let takes_heredocs = ["RUN", "COPY", "ADD"]
        .iter()
        .any(|k| keyword.eq_ignore_ascii_case(k));
    if !takes_heredocs || !args.contains("<<") || json_array(args).is_some() {
        return Vec::new();
    }
    heredoc_words(args, escape)
        .iter()
        .filter_map(|word| heredoc_word(word))
        .collect()
}

/// Reads a heredoc's body: the lines up to the one holding only its delimiter.
fn read_heredoc(
    heredoc: &mut Heredoc,
    lines: &[&str],
    next: &mut usize,
    line: usize,
) -> Result<(), Error> {
    while let Some(raw) = lines.get(*next) {
        *next += 1;
        let raw = if heredoc.chomp {
            raw.trim_start_matches('\t')
        } else {
            raw
        };
        if raw == heredoc.name {
            return Ok(());
        }
        heredoc.content.push_str(raw);
        heredoc.content.push('\n');
    }
    Err(Error::UnterminatedHeredoc {
        line,
        name: heredoc.name.clone(),
    })
}

/// Parses `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'` or `3<<EOF` (BuildKit's
/// heredoc words); the body is read later.
fn heredoc_word(word: &str) -> Option<Heredoc> {
    let rest = word
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    if rest.contains('<') {
        return None;
    }
    // Any quoting in the delimiter turns expansion of the body off, as in sh.
    let mut name = String::new();
    let mut quoted = false;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                quoted = true;
                loop {
                    match chars.next()? {
                        close if close == c => break,
                        '\\' if c == '"' => {
                            let escaped = chars.next()?;
                            if !matches!(escaped, '"' | '$' | '\\') {
                                name.push('\\');
                            }
                            name.push(escaped);
                        }
                        other => name.push(other),
                    }
                }
            }
            '\\' => name.extend(chars.next()),
            c => name.push(c),
        }
    }
    (!name.is_empty()).then(|| Heredoc {
        word: word.to_string(),
        name,
        expand: !quoted,
        chomp,
        content: String::new(),
    })
}

/// [`raw_words`], with a bare `<<` joined to the word after it, because
/// BuildKit takes `<< EOF` as a heredoc too.
fn heredoc_words(args: &str, escape: char) -> Vec<String> {
    let mut words = raw_words(args, escape).into_iter();
    let mut joined = Vec::new();
    while let Some(word) = words.next() {
        if word.trim_start_matches(|c: char| c.is_ascii_digit()) == "<<"
            && let Some(name) = words.next()
        {
            joined.push(word + &name);
        } else {
            joined.push(word);
        }
    }
    joined
}

/// Splits on unquoted whitespace, keeping quotes and escapes as written for
/// expansion to handle later (`ENV a="x y"` stays `a="x y"`).
fn raw_words(s: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    // `""` is a word, even though it is empty once expanded.
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if quoted || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                quoted = false;
                continue;
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                quoted = true;
            }
            Some(q) if c == q => quote = None,
            _ => {}
        }
        // Nothing escapes inside single quotes.
        if c == escape && quote != Some('\'') {
            match chars.next() {
                Some(next) => {
                    word.push(c);
                    word.push(next);
                }
                None => quote = None,
            }
            continue;
        }
        word.push(c);
    }
    if quoted || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Takes the leading `--name[=value]` words off an instruction's arguments,
/// up to the first other word or a `--`; their quotes and escapes are
/// removed, as BuildKit does.
fn extract_flags(args: &str, escape: char) -> (Vec<String>, &str) {
    let mut flags = Vec::new();
    let mut rest = args.trim_start();
    while rest.starts_with("--") {
        let mut word = String::new();
        let mut quote = None;
        let mut end = rest.len();
        let mut chars = rest.char_indices();
        while let Some((at, c)) = chars.next() {
            match quote {
                None if c.is_whitespace() => {
                    end = at;
                    break;
                }
                None if c == '\'' || c == '"' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ if c == escape => match chars.next() {
                    Some((_, next)) => word.push(next),
                    None => quote = None,
                },
                _ => word.push(c),
            }
        }
        rest = rest[end..].trim_start();
        if word == "--" {
            break;
        }
        flags.push(word);
    }
    (flags, rest)
}

/// BuildKit's `--mount` fields (`type=cache,target=/root/.cache,id=pip`);
/// the types that bring in files from elsewhere are refused in one line.
fn run_mount(line: usize, spec: &str) -> Result<StepMount, Error> {
    let mut fields = BTreeMap::new();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = field.split_once('=').unwrap_or((field, "true"));
        let key = match key.to_ascii_lowercase().as_str() {
            "dst" | "destination" => "target".to_string(),
            "ro" => "readonly".to_string(),
            other => other.to_string(),
        };
        if fields.insert(key.clone(), value.to_string()).is_some() {
            return Err(syntax(line, format!("--mount gives {key} twice")));
        }
    }
    let kind = fields.remove("type").unwrap_or_else(|| "bind".into());
    if ["bind", "secret", "ssh"].contains(&kind.as_str()) {
        return Err(Error::Unsupported {
            line,
            what: format!("RUN --mount type {kind} (COPY the files instead)"),
        });
    }
    let target = fields
        .remove("target")
        .ok_or_else(|| syntax(line, "--mount needs a target"))?;
    let number = |fields: &mut BTreeMap<String, String>, key: &str, radix: u32, default: u32| {
        fields.remove(key).map_or(Ok(default), |v| {
            u32::from_str_radix(&v, radix)
                .map_err(|_| syntax(line, format!("--mount {key}={v} is not a number")))
        })
    };
    let mount = match kind.as_str() {
        "cache" => {
            // Sharing and read-only change nothing for a cache that lives
            // only as long as one build, whose steps run one at a time.
            for ignored in ["sharing", "readonly"] {
                fields.remove(ignored);
            }
            StepMount::Cache {
                id: fields.remove("id").unwrap_or_else(|| target.clone()),
                mode: number(&mut fields, "mode", 8, 0o755)?,
                uid: number(&mut fields, "uid", 10, 0)?,
                gid: number(&mut fields, "gid", 10, 0)?,
                target,
            }
        }
        "tmpfs" => StepMount::Tmpfs {
            size: fields
                .remove("size")
                .map(|v| crate::bytes::parse(&v, 1, "--mount size").map_err(|e| syntax(line, e)))
                .transpose()?,
            target,
        },
        other => {
            return Err(syntax(
                line,
                format!("--mount type={other}: use cache or tmpfs"),
            ));
        }
    };
    if let Some(key) = fields.keys().next() {
        return Err(Error::Unsupported {
            line,
            what: format!("RUN --mount field {key}"),
        });
    }
    Ok(mount)
}

/// The flags given to one instruction, checked against those it takes.
struct Flags {
    line: usize,
    given: Vec<(String, Option<String>)>,
}

impl Flags {
    fn parse(
        line: usize,
        keyword: &str,
        words: Vec<String>,
        known: &[&str],
    ) -> Result<Flags, Error> {
        let mut given: Vec<(String, Option<String>)> = Vec::new();
        for word in words {
            let word = &word[2..];
            let (name, value) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (word, None),
            };
            if !known.contains(&name) {
                return Err(Error::Unsupported {
                    line,
                    what: format!("{keyword} flag --{name}"),
                });
            }
            // Only --mount may come more than once.
            if name != "mount" && given.iter().any(|(seen, _)| seen == name) {
                return Err(syntax(
                    line,
                    format!("{keyword} flag --{name} is given twice"),
                ));
            }
            given.push((name.to_string(), value));
        }
        Ok(Flags { line, given })
    }

    /// Every value of a flag that may repeat.
    fn strings(&self, name: &str) -> Result<Vec<String>, Error> {
        self.given
            .iter()
            .filter(|(given, _)| given == name)
            .map(|(_, value)| {
                value.clone().ok_or_else(|| {
                    syntax(self.line, format!("--{name} needs a value (--{name}=...)"))
                })
            })
            .collect()
    }

    fn get(&self, name: &str) -> Option<&Option<String>> {
        self.given
            .iter()
            .find(|(given, _)| given == name)
            .map(|(_, value)| value)
    }

    fn string(&self, name: &str) -> Result<Option<String>, Error> {
        match self.get(name) {
            None => Ok(None),
            Some(Some(value)) => Ok(Some(value.clone())),
            Some(None) => Err(syntax(
                self.line,
                format!("--{name} needs a value (--{name}=...)"),
            )),
        }
    }

    fn bool(&self, name: &str) -> Result<bool, Error> {
        match self.get(name) {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(value)) if value.eq_ignore_ascii_case("true") => Ok(true),
            Some(Some(value)) if value.eq_ignore_ascii_case("false") => Ok(false),
            Some(Some(value)) => Err(syntax(
                self.line,
                format!("--{name} takes true or false, not '{value}'"),
            )),
        }
    }

    /// A HEALTHCHECK duration: Docker takes zero or at least a millisecond.
    fn duration(&self, name: &str) -> Result<Option<String>, Error> {
        let value = self.string(name)?;
        if let Some(value) = &value
            && !healthcheck_duration(value)
        {
            return Err(syntax(
                self.line,
                format!(
                    "HEALTHCHECK --{name} takes a duration such as 30s or 1m30s (0 or at least 1ms), not '{value}'"
                ),
            ));
        }
        Ok(value)
    }
}

/// Whether `s` is a Go duration (`1m30s`, `500ms`, `0`) of zero or at least
/// a millisecond.
fn healthcheck_duration(s: &str) -> bool {
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return true;
    }
    if rest.is_empty() {
        return false;
    }
    let mut nanos = 0.0;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let Ok(number) = rest[..end].parse::<f64>() else {
            return false;
        };
        rest = &rest[end..];
        let end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 6e10,
            "h" => 3.6e12,
            _ => return false,
        };
        nanos += number * unit;
        rest = &rest[end..];
    }
    nanos == 0.0 || (!negative && nanos >= 1e6)
}

/// The array, when `args` is JSON array syntax; anything else is `None`, and
/// Docker then reads the arguments as shell form or a whitespace list.
fn json_array(args: &str) -> Option<Vec<Value>> {
    if !args.trim_start().starts_with('[') {
        return None;
    }
    serde_json::from_str(args).ok()
}

fn json_strings(line: usize, keyword: &str, args: &str) -> Result<Option<Vec<String>>, Error> {
    json_array(args)
        .map(|values| {
            values
                .into_iter()
                .map(|value| match value {
                    Value::String(s) => Ok(s),
                    _ => Err(syntax(
                        line,
                        format!("{keyword} JSON arrays may only hold strings"),
                    )),
                })
                .collect()
        })
        .transpose()
}

fn command(line: usize, keyword: &str, args: &str) -> Result<Command, Error> {
    if args.is_empty() {
        return Err(syntax(line, format!("{keyword} needs a command")));
    }
    Ok(match json_strings(line, keyword, args)? {
        Some(words) => Command::Exec(words),
        None => Command::Shell(args.to_string()),
    })
}

fn parse_instruction(
    line: usize,
    logical: &str,
    heredocs: &[Heredoc],
    escape: char,
) -> Result<Kind, Error> {
    let (keyword, rest) = split_keyword(logical);
    let name = keyword.to_ascii_uppercase();
    let (flag_words, args) = extract_flags(rest, escape);
    let args = args.trim_end();
    let flags = |known: &[&str]| Flags::parse(line, &name, flag_words, known);
    let one = || match args {
        "" => Err(syntax(line, format!("{name} needs an argument"))),
        _ => Ok(args.to_string()),
    };
    Ok(match name.as_str() {
        "FROM" => {
            let flags = flags(&["platform"])?;
            let words: Vec<&str> = args.split_whitespace().collect();
            let stage = match words[..] {
                [_] => None,
                [_, as_word, stage] if as_word.eq_ignore_ascii_case("AS") => {
                    Some(stage_name(line, stage)?)
                }
                _ => {
                    return Err(syntax(
                        line,
                        "FROM takes an image, optionally followed by AS and a stage name",
                    ));
                }
            };
            Kind::From {
                image: words[0].to_string(),
                name: stage,
                platform: flags.string("platform")?,
            }
        }
        "RUN" => {
            let flags = flags(&["network", "mount"])?;
            let network = flags.string("network")?;
            if let Some(mode) = &network
                && !["default", "none", "host"].contains(&mode.as_str())
            {
                return Err(syntax(
                    line,
                    format!("RUN --network takes default, none or host, not '{mode}'"),
                ));
            }
            let mounts = flags
                .strings("mount")?
                .iter()
                .map(|spec| run_mount(line, spec))
                .collect::<Result<_, _>>()?;
            Kind::Run {
                command: run_command(line, args, heredocs, escape)?,
                network,
                mounts,
            }
        }
        "CMD" => {
            flags(&[])?;
            Kind::Cmd(command(line, "CMD", args)?)
        }
        "ENTRYPOINT" => {
            flags(&[])?;
            Kind::Entrypoint(command(line, "ENTRYPOINT", args)?)
        }
        "SHELL" => {
            flags(&[])?;
            match json_strings(line, "SHELL", args)? {
                Some(shell) if !shell.is_empty() => Kind::Shell(shell),
                Some(_) => return Err(syntax(line, "SHELL needs at least the shell's path")),
                None => {
                    return Err(syntax(
                        line,
                        "SHELL must be a JSON array, like SHELL [\"/bin/sh\", \"-c\"]",
                    ));
                }
            }
        }
        "COPY" | "ADD" => {
            let known: &[&str] = if name == "COPY" {
                &["from", "chown", "chmod", "link"]
            } else {
                &["chown", "chmod", "link"]
            };
            let flags = flags(known)?;
            let words =
                json_strings(line, &name, args)?.unwrap_or_else(|| heredoc_words(args, escape));
            let Some((dest, sources)) = words.split_last().filter(|(_, s)| !s.is_empty()) else {
                return Err(syntax(
                    line,
                    format!("{name} needs at least a source and a destination"),
                ));
            };
            if heredoc_word(dest).is_some() {
                return Err(syntax(
                    line,
                    format!("{name} cannot take a heredoc as its destination"),
                ));
            }
            let sources = sources
                .iter()
                .map(|word| match heredocs.iter().find(|doc| &doc.word == word) {
                    Some(doc) => Source::Inline {
                        name: doc.name.clone(),
                        content: doc.content.clone(),
                        expand: doc.expand,
                    },
                    None => Source::Path(word.clone()),
                })
                .collect();
            let copy = Copy {
                sources,
                dest: dest.clone(),
                from: flags.string("from")?,
                chown: flags.string("chown")?,
                chmod: flags.string("chmod")?,
                link: flags.bool("link")?,
            };
            if name == "COPY" {
                Kind::Copy(copy)
            } else {
                Kind::Add(copy)
            }
        }
        "ENV" => {
            flags(&[])?;
            Kind::Env(key_values(line, "ENV", args, escape)?)
        }
        "LABEL" => {
            flags(&[])?;
            Kind::Label(key_values(line, "LABEL", args, escape)?)
        }
        "ARG" => {
            flags(&[])?;
            let words = raw_words(args, escape);
            if words.is_empty() {
                return Err(syntax(line, "ARG needs at least one name"));
            }
            Kind::Arg(
                words
                    .into_iter()
                    .map(|word| match word.split_once('=') {
                        Some(("", _)) => Err(syntax(line, "ARG names cannot be blank")),
                        Some((name, default)) => Ok((name.to_string(), Some(default.to_string()))),
                        None => Ok((word, None)),
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        "WORKDIR" => {
            flags(&[])?;
            Kind::Workdir(one()?)
        }
        "USER" => {
            flags(&[])?;
            Kind::User(one()?)
        }
        "STOPSIGNAL" => {
            flags(&[])?;
            Kind::StopSignal(one()?)
        }
        "MAINTAINER" => {
            flags(&[])?;
            Kind::Maintainer(one()?)
        }
        "EXPOSE" | "VOLUME" => {
            flags(&[])?;
            let words = json_strings(line, &name, args)?.unwrap_or_else(|| raw_words(args, escape));
            if words.is_empty() {
                return Err(syntax(line, format!("{name} needs at least one argument")));
            }
            if name == "EXPOSE" {
                Kind::Expose(words)
            } else if words.iter().any(|path| path.trim().is_empty()) {
                return Err(syntax(line, "VOLUME paths cannot be empty"));
            } else {
                Kind::Volume(words.iter().map(|path| path.trim().to_string()).collect())
            }
        }
        "HEALTHCHECK" => {
            let flags = flags(&[
                "interval",
                "timeout",
                "start-period",
                "start-interval",
                "retries",
            ])?;
            let (test_kind, test) = split_keyword(args);
            match test_kind.to_ascii_uppercase().as_str() {
                "NONE" if test.is_empty() && flags.given.is_empty() => Kind::Healthcheck(None),
                "NONE" => {
                    return Err(syntax(
                        line,
                        "HEALTHCHECK NONE takes no options or arguments",
                    ));
                }
                "CMD" => {
                    let test = command(line, "HEALTHCHECK CMD", test)?;
                    if test == Command::Exec(Vec::new()) {
                        return Err(syntax(line, "HEALTHCHECK CMD needs a command"));
                    }
                    let retries = flags.string("retries")?.map(|retries| {
                        retries.parse().map_err(|_| {
                            syntax(
                                line,
                                format!("HEALTHCHECK --retries takes a count, not '{retries}'"),
                            )
                        })
                    });
                    Kind::Healthcheck(Some(Healthcheck {
                        test,
                        interval: flags.duration("interval")?,
                        timeout: flags.duration("timeout")?,
                        start_period: flags.duration("start-period")?,
                        start_interval: flags.duration("start-interval")?,
                        retries: retries.transpose()?,
                    }))
                }
                _ => {
                    return Err(syntax(
                        line,
                        "HEALTHCHECK takes CMD followed by a command, or NONE",
                    ));
                }
            }
        }
        "ONBUILD" => {
            flags(&[])?;
            let trigger = split_keyword(args).0.to_ascii_uppercase();
            match trigger.as_str() {
                "" => return Err(syntax(line, "ONBUILD needs an instruction")),
                "ONBUILD" => return Err(syntax(line, "ONBUILD cannot trigger another ONBUILD")),
                "FROM" | "MAINTAINER" => {
                    return Err(syntax(
                        line,
                        format!("{trigger} cannot be an ONBUILD trigger"),
                    ));
                }
                _ => {}
            }
            // Checked now: a mistake would otherwise only show in another build.
            parse_instruction(line, args, heredocs, escape)?;
            let mut trigger = args.to_string();
            for doc in heredocs {
                trigger.push('\n');
                trigger.push_str(&doc.content);
                trigger.push_str(&doc.name);
            }
            Kind::Onbuild(trigger)
        }
        _ => {
            return Err(Error::UnknownInstruction {
                line,
                name: keyword.to_string(),
            });
        }
    })
}

/// RUN's command; with heredocs, see [`Command::Shell`].
fn run_command(
    line: usize,
    args: &str,
    heredocs: &[Heredoc],
    escape: char,
) -> Result<Command, Error> {
    if heredocs.is_empty() {
        let command = command(line, "RUN", args)?;
        if command == Command::Exec(Vec::new()) {
            return Err(syntax(line, "RUN needs a command"));
        }
        return Ok(command);
    }
    if heredocs.len() == 1 && heredoc_words(args, escape).len() == 1 {
        return Ok(Command::Shell(heredocs[0].content.clone()));
    }
    let mut script = args.to_string();
    for doc in heredocs {
        script.push('\n');
        script.push_str(&doc.content);
        script.push_str(&doc.name);
    }
    script.push('\n');
    Ok(Command::Shell(script))
}

/// ENV and LABEL: `name=value ...`, or the legacy `name value` whose value is
/// the rest of the line.
fn key_values(
    line: usize,
    keyword: &str,
    args: &str,
    escape: char,
) -> Result<Vec<(String, String)>, Error> {
    let words = raw_words(args, escape);
    let Some(first) = words.first() else {
        return Err(syntax(
            line,
            format!("{keyword} needs at least one name=value"),
        ));
    };
    if !first.contains('=') {
        return match args.split_once(char::is_whitespace) {
            Some((name, value)) => Ok(vec![(name.to_string(), value.trim_start().to_string())]),
            None => Err(syntax(line, format!("{keyword} {args} needs a value"))),
        };
    }
    words
        .iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(syntax(line, format!("{keyword} names cannot be blank"))),
            Some((name, value)) => Ok((name.to_string(), value.to_string())),
            None => Err(syntax(
                line,
                format!("{keyword} takes name=value pairs, but '{word}' has no '='"),
            )),
        })
        .collect()
}

/// Stage names are case-insensitive, so they are kept lowercased.
fn stage_name(line: usize, name: &str) -> Result<String, Error> {
    let lower = name.to_ascii_lowercase();
    let mut chars = lower.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if valid {
        Ok(lower)
    } else {
        Err(syntax(
            line,
            format!(
                "stage name '{name}' must start with a letter and hold only letters, digits, '-', '_' and '.'"
            ),
        ))
    }
}

/// BuildKit's shell-word lexer for one word: variables, quotes and escapes.
struct Lexer<'a> {
    chars: Peekable<Chars<'a>>,
    escape: char,
    /// False for heredoc contents, where quotes are ordinary characters.
    quotes: bool,
    vars: &'a dyn Fn(&str) -> Option<String>,
}

/// The words of an expansion: unquoted whitespace, also from a variable's
/// value, splits words; quoted or escaped whitespace does not.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    current: String,
}

impl Words {
    fn push(&mut self, c: char) {
        if !c.is_whitespace() {
            self.current.push(c);
        } else if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

impl<'a> Lexer<'a> {
    fn new(
        text: &'a str,
        escape: char,
        quotes: bool,
        vars: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Lexer {
            chars: text.chars().peekable(),
            escape,
            quotes,
            vars,
        }
    }

    /// Lexes up to `stop` (consumed) or the end; returns the text and its words.
    fn run(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), ExpandError> {
        let mut text = String::new();
        let mut words = Words::default();
        while let Some(&c) = self.chars.peek() {
            if Some(c) == stop {
                self.chars.next();
                return Ok((text, words.finish()));
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    value.chars().for_each(|c| words.push(c));
                    text.push_str(&value);
                }
                '\'' | '"' if self.quotes => {
                    let value = if c == '\'' {
                        self.single_quoted()?
                    } else {
                        self.double_quoted()?
                    };
                    words.current.push_str(&value);
                    text.push_str(&value);
                }
                _ => {
                    self.chars.next();
                    let c = if c == self.escape {
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.chars.next() else {
                            break;
                        };
                        words.current.push(escaped);
                        escaped
                    } else {
                        words.push(c);
                        c
                    };
                    text.push(c);
                }
            }
        }
        match stop {
            Some(_) => Err(ExpandError::Unterminated("'}'")),
            None => Ok((text, words.finish())),
        }
    }

    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        self.chars.next();
        let mut text = String::new();
        loop {
            match self.chars.next() {
                None => return Err(ExpandError::Unterminated("single quote")),
                Some('\'') => return Ok(text),
                Some(c) => text.push(c),
            }
        }
    }

    /// Inside double quotes the escape only escapes `"`, `$` and itself.
    fn double_quoted(&mut self) -> Result<String, ExpandError> {
        self.chars.next();
        let escape = self.escape;
        let mut text = String::new();
        loop {
            match self.chars.peek() {
                None => return Err(ExpandError::Unterminated("double quote")),
                Some('"') => {
                    self.chars.next();
                    return Ok(text);
                }
                Some('$') => text.push_str(&self.dollar()?),
                Some(&c) => {
                    self.chars.next();
                    let escapes = |next: &char| {
                        c == escape && (matches!(*next, '"' | '$') || *next == escape)
                    };
                    text.push(self.chars.next_if(escapes).unwrap_or(c));
                }
            }
        }
    }

    fn dollar(&mut self) -> Result<String, ExpandError> {
        self.chars.next();
        if self.chars.peek() != Some(&'{') {
            let name = self.name();
            return Ok(match name.as_str() {
                "" => "$".to_string(),
                _ => (self.vars)(&name).unwrap_or_default(),
            });
        }
        self.chars.next();
        match self.chars.peek() {
            None => return Err(ExpandError::Unterminated("'}'")),
            Some(&c @ ('{' | '}' | ':')) => {
                return Err(ExpandError::BadSubstitution(format!("${{{c}")));
            }
            Some(_) => {}
        }
        let name = self.name();
        let value = (self.vars)(&name);
        // With `:`, an empty value counts as unset.
        let (colon, op) = match self.chars.next() {
            Some('}') => return Ok(value.unwrap_or_default()),
            Some(':') => (":", self.chars.next()),
            op => ("", op),
        };
        let op = match op {
            Some(op @ ('-' | '+' | '?')) => op,
            Some(other) => {
                return Err(ExpandError::BadSubstitution(format!(
                    "${{{name}{colon}{other}"
                )));
            }
            None => return Err(ExpandError::Unterminated("'}'")),
        };
        let (word, _) = self.run(Some('}'))?;
        let set = value.is_some();
        let usable = value.filter(|value| colon.is_empty() || !value.is_empty());
        match op {
            '-' => Ok(usable.unwrap_or(word)),
            '+' => Ok(usable.map(|_| word).unwrap_or_default()),
            _ => usable.ok_or_else(|| ExpandError::Required {
                name,
                message: match (word.is_empty(), set) {
                    (false, _) => word,
                    (true, true) => "is not allowed to be empty".to_string(),
                    (true, false) => "is not allowed to be unset".to_string(),
                },
            }),
        }
    }

    /// A variable name: letters, digits and `_`, or digits alone (`$1`), or
    /// one of the shell's special parameters (`$@`, `$#`, ...).
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.chars.peek() {
            Some(c) if c.is_ascii_digit() => {
                while let Some(c) = self.chars.next_if(char::is_ascii_digit) {
                    name.push(c);
                }
            }
            Some(&c @ ('@' | '*' | '#' | '?' | '-' | '$' | '!')) => {
                self.chars.next();
                name.push(c);
            }
            _ => {
                while let Some(c) = self.chars.next_if(|c| c.is_alphanumeric() || *c == '_') {
                    name.push(c);
                }
            }
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn kinds(text: &str) -> Vec<Kind> {
        parse(text)
            .unwrap()
            .instructions
            .into_iter()
            .map(|instruction| instruction.kind)
            .collect()
    }

    /// The kinds of the instructions after a leading `FROM scratch`.
    fn after_from(text: &str) -> Vec<Kind> {
        let mut kinds = kinds(&format!("FROM scratch\n{text}"));
        kinds.remove(0);
        kinds
    }

    fn one(text: &str) -> Kind {
        let mut kinds = after_from(text);
        assert_eq!(kinds.len(), 1, "{kinds:?}");
        kinds.remove(0)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn ex(raw: &str, pairs: &[(&str, &str)]) -> Result<String, ExpandError> {
        expand(raw, '\\', &vars(pairs))
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn shell(script: &str) -> Command {
        Command::Shell(script.to_string())
    }

    fn run(script: &str) -> Kind {
        Kind::Run {
            command: shell(script),
            network: None,
            mounts: vec![],
        }
    }

    fn path(p: &str) -> Source {
        Source::Path(p.to_string())
    }

    fn inline(name: &str, content: &str, expand: bool) -> Source {
        Source::Inline {
            name: name.to_string(),
            content: content.to_string(),
            expand,
        }
    }

    fn copy(sources: Vec<Source>, dest: &str) -> Copy {
        Copy {
            sources,
            dest: dest.to_string(),
            from: None,
            chown: None,
            chmod: None,
            link: false,
        }
    }

    /// The instruction after `FROM scratch`, expanded with `pairs`.
    fn expanded(text: &str, pairs: &[(&str, &str)]) -> Result<Kind, Error> {
        let dockerfile = parse(&format!("FROM scratch\n{text}")).unwrap();
        dockerfile.instructions[1].expanded(dockerfile.escape, &vars(pairs))
    }

    #[test]
    fn parses_a_simple_dockerfile() {
        let dockerfile =
            parse("FROM alpine:3.20\nRUN apk add curl\n\nCMD [\"curl\", \"--version\"]\n").unwrap();
        assert_eq!(
            dockerfile,
            Dockerfile {
                escape: '\\',
                instructions: vec![
                    Instruction {
                        line: 1,
                        kind: Kind::From {
                            image: "alpine:3.20".into(),
                            name: None,
                            platform: None
                        },
                        text: "FROM alpine:3.20".into(),
                    },
                    Instruction {
                        line: 2,
                        kind: run("apk add curl"),
                        text: "RUN apk add curl".into(),
                    },
                    Instruction {
                        line: 4,
                        kind: Kind::Cmd(Command::Exec(strings(&["curl", "--version"]))),
                        text: "CMD [\"curl\", \"--version\"]".into(),
                    },
                ],
            }
        );
    }

    #[test]
    fn escape_directive_makes_windows_paths_natural() {
        let text =
            "# escape=`\n\nFROM microsoft/nanoserver\nCOPY testfile.txt c:\\\nRUN dir c:\\\n";
        let dockerfile = parse(text).unwrap();
        assert_eq!(dockerfile.escape, '`');
        let lines: Vec<usize> = dockerfile.instructions.iter().map(|i| i.line).collect();
        assert_eq!(lines, [3, 4, 5]);
        assert_eq!(
            dockerfile.instructions[1].kind,
            Kind::Copy(copy(vec![path("testfile.txt")], "c:\\"))
        );
        assert_eq!(dockerfile.instructions[2].kind, run("dir c:\\"));
        assert_eq!(
            dockerfile.instructions[1]
                .expanded('`', &vars(&[]))
                .unwrap(),
            Kind::Copy(copy(vec![path("testfile.txt")], "c:\\"))
        );
    }

    #[test]
    fn backslash_continues_windows_paths_without_the_directive() {
        // BuildKit no longer continues a line ending in an escaped escape
        // (`c:\\`); the reference's output shows the legacy builder's.
        let text = "FROM microsoft/nanoserver\nCOPY testfile.txt c:\\\\\nRUN dir c:\\\n";
        let dockerfile = parse(text).unwrap();
        assert_eq!(
            dockerfile.instructions[1].kind,
            Kind::Copy(copy(vec![path("testfile.txt")], "c:\\\\"))
        );
        assert_eq!(
            dockerfile.instructions[1]
                .expanded('\\', &vars(&[]))
                .unwrap(),
            Kind::Copy(copy(vec![path("testfile.txt")], "c:\\"))
        );
        // The last line continues into the end of the file.
        assert_eq!(dockerfile.instructions[2].kind, run("dir c:"));
        assert_eq!(dockerfile.instructions.len(), 3);
    }

    #[test]
    fn directives_are_only_read_at_the_top() {
        let text = "# syntax=docker/dockerfile:1\n#\tEscape = `\nFROM a\nRUN echo a`\n b\n";
        let dockerfile = parse(text).unwrap();
        assert_eq!(dockerfile.escape, '`');
        assert_eq!(dockerfile.instructions[1].kind, run("echo a b"));
        for text in [
            "# About my dockerfile\n# escape=`\nFROM a\n",
            "# unknowndirective=value\n# escape=`\nFROM a\n",
            "\n# escape=`\nFROM a\n",
            "FROM a\n# escape=`\n",
            "# direc \\\n# escape=`\nFROM a\n",
        ] {
            assert_eq!(parse(text).unwrap().escape, '\\', "{text}");
        }
        assert_eq!(
            error("# escape=`\n# escape=\\\nFROM a\n"),
            "line 2: the escape directive may only be given once"
        );
        assert_eq!(
            error("# escape=x\nFROM a\n"),
            "line 1: the escape directive takes \\ or `, not 'x'"
        );
    }

    #[test]
    fn comments_and_blank_lines_inside_a_continuation_are_skipped() {
        let dockerfile = parse("FROM a\nRUN echo hello \\\n# comment\n\n   \nworld\nRUN echo 'we are running some # of cool things'\n").unwrap();
        assert_eq!(dockerfile.instructions[1].kind, run("echo hello world"));
        assert_eq!(dockerfile.instructions[1].text, "RUN echo hello world");
        assert_eq!(dockerfile.instructions[2].line, 7);
        assert_eq!(
            dockerfile.instructions[2].kind,
            run("echo 'we are running some # of cool things'")
        );
    }

    #[test]
    fn leading_whitespace_is_ignored_but_argument_whitespace_is_kept() {
        let text = "FROM a\n        # this is a comment-line\n    RUN echo hello\nRUN echo world\nRUN echo \"\\\n     hello\\\n     world\"\n";
        let dockerfile = parse(text).unwrap();
        let kinds: Vec<Kind> = dockerfile
            .instructions
            .iter()
            .map(|i| i.kind.clone())
            .collect();
        assert_eq!(
            kinds[1..],
            [
                run("echo hello"),
                run("echo world"),
                run("echo \"     hello     world\"")
            ]
        );
        assert_eq!(dockerfile.instructions[1].line, 3);
        assert_eq!(dockerfile.instructions[3].text, "RUN echo \" hello world\"");
    }

    #[test]
    fn continued_text_is_joined_with_single_spaces() {
        let dockerfile =
            parse("FROM a\nRUN apt-get update && \\\n    apt-get install -y \\\n\t  curl\n")
                .unwrap();
        assert_eq!(
            dockerfile.instructions[1].text,
            "RUN apt-get update && apt-get install -y curl"
        );
        assert_eq!(
            dockerfile.instructions[1].kind,
            run("apt-get update &&     apt-get install -y \t  curl")
        );
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(
            kinds("from alpine as Builder\nrun echo hi\nWorkDir /app\n"),
            [
                Kind::From {
                    image: "alpine".into(),
                    name: Some("builder".into()),
                    platform: None
                },
                run("echo hi"),
                Kind::Workdir("/app".into()),
            ]
        );
    }

    #[test]
    fn unknown_instruction_is_named_with_its_line() {
        let err = parse("FROM a\n\nFORM b\n").unwrap_err();
        assert_eq!(err.to_string(), "line 3: unknown instruction 'FORM'");
        assert_eq!(err.line(), 3);
        assert_eq!(
            err,
            Error::UnknownInstruction {
                line: 3,
                name: "FORM".into()
            }
        );
    }

    #[test]
    fn env_takes_both_forms_and_keeps_values_raw() {
        let text = "ENV MY_NAME=\"John Doe\"\nENV MY_DOG=Rex\\ The\\ Dog\nENV MY_CAT=fluffy\nENV MY_NAME=\"John Doe\" MY_DOG=Rex\\ The\\ Dog \\\n    MY_CAT=fluffy\nENV MY_VAR my-value\nENV ONE TWO= THREE=world\n";
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            after_from(text),
            [
                Kind::Env(vec![pair("MY_NAME", "\"John Doe\"")]),
                Kind::Env(vec![pair("MY_DOG", "Rex\\ The\\ Dog")]),
                Kind::Env(vec![pair("MY_CAT", "fluffy")]),
                Kind::Env(vec![
                    pair("MY_NAME", "\"John Doe\""),
                    pair("MY_DOG", "Rex\\ The\\ Dog"),
                    pair("MY_CAT", "fluffy"),
                ]),
                Kind::Env(vec![pair("MY_VAR", "my-value")]),
                Kind::Env(vec![pair("ONE", "TWO= THREE=world")]),
            ]
        );
        assert_eq!(
            expanded("ENV MY_NAME=\"John Doe\" MY_DOG=Rex\\ The\\ Dog", &[]).unwrap(),
            Kind::Env(vec![
                pair("MY_NAME", "John Doe"),
                pair("MY_DOG", "Rex The Dog")
            ])
        );
        assert_eq!(
            expanded("ENV A x  'y z'", &[]).unwrap(),
            Kind::Env(vec![pair("A", "x  y z")])
        );
    }

    #[test]
    fn env_uses_the_values_from_before_the_instruction() {
        let dockerfile =
            parse("FROM a\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n").unwrap();
        let mut env: HashMap<String, String> = HashMap::new();
        for instruction in &dockerfile.instructions[1..] {
            let before = env.clone();
            let Kind::Env(pairs) = instruction
                .expanded(dockerfile.escape, &|name| before.get(name).cloned())
                .unwrap()
            else {
                panic!("not ENV: {instruction:?}");
            };
            env.extend(pairs);
        }
        assert_eq!(env["abc"], "bye");
        assert_eq!(env["def"], "hello");
        assert_eq!(env["ghi"], "bye");
    }

    #[test]
    fn env_and_label_errors() {
        assert_eq!(error("FROM a\nENV A\n"), "line 2: ENV A needs a value");
        assert_eq!(
            error("FROM a\nENV a=b c\n"),
            "line 2: ENV takes name=value pairs, but 'c' has no '='"
        );
        assert_eq!(
            error("FROM a\nLABEL =x\n"),
            "line 2: LABEL names cannot be blank"
        );
        assert_eq!(
            error("FROM a\nENV\n"),
            "line 2: ENV needs at least one name=value"
        );
    }

    #[test]
    fn labels_follow_the_reference_examples() {
        let text = "LABEL \"com.example.vendor\"=\"ACME Incorporated\"\nLABEL description=\"This text illustrates \\\nthat label-values can span multiple lines.\"\nLABEL multi.label1=\"value1\" \\\n      other=\"value3\"\n";
        let parsed = after_from(text);
        assert_eq!(
            parsed[0],
            Kind::Label(vec![(
                "\"com.example.vendor\"".into(),
                "\"ACME Incorporated\"".into()
            )])
        );
        let dockerfile = parse(&format!("FROM a\n{text}")).unwrap();
        let expanded: Vec<Kind> = dockerfile.instructions[1..]
            .iter()
            .map(|i| i.expanded('\\', &vars(&[])).unwrap())
            .collect();
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            expanded,
            [
                Kind::Label(vec![pair("com.example.vendor", "ACME Incorporated")]),
                Kind::Label(vec![pair(
                    "description",
                    "This text illustrates that label-values can span multiple lines."
                )]),
                Kind::Label(vec![
                    pair("multi.label1", "value1"),
                    pair("other", "value3")
                ]),
            ]
        );
    }

    #[test]
    fn default_value_modifiers() {
        assert_eq!(ex("${foo:-bar}", &[]).unwrap(), "bar");
        assert_eq!(ex("${foo:-bar}", &[("foo", "")]).unwrap(), "bar");
        assert_eq!(ex("${foo:-bar}", &[("foo", "x")]).unwrap(), "x");
        assert_eq!(ex("${foo-bar}", &[]).unwrap(), "bar");
        assert_eq!(ex("${foo-bar}", &[("foo", "")]).unwrap(), "");
        assert_eq!(ex("${foo:-$bar-x}", &[("bar", "y")]).unwrap(), "y-x");
        assert_eq!(ex("${foo:-\"a b\"}", &[]).unwrap(), "a b");
    }

    #[test]
    fn alternative_value_modifiers() {
        assert_eq!(ex("${foo:+bar}", &[("foo", "x")]).unwrap(), "bar");
        assert_eq!(ex("${foo:+bar}", &[("foo", "")]).unwrap(), "");
        assert_eq!(ex("${foo:+bar}", &[]).unwrap(), "");
        assert_eq!(ex("${foo+bar}", &[("foo", "")]).unwrap(), "bar");
        assert_eq!(ex("${foo+bar}", &[]).unwrap(), "");
    }

    #[test]
    fn required_variables() {
        let err = ex("${foo:?}", &[]).unwrap_err();
        assert_eq!(
            err,
            ExpandError::Required {
                name: "foo".into(),
                message: "is not allowed to be unset".into()
            }
        );
        assert_eq!(err.to_string(), "foo: is not allowed to be unset");
        assert_eq!(
            ex("${foo:?}", &[("foo", "")]).unwrap_err().to_string(),
            "foo: is not allowed to be empty"
        );
        assert_eq!(ex("${foo?}", &[("foo", "")]).unwrap(), "");
        assert_eq!(
            ex("${foo?set foo first}", &[]).unwrap_err().to_string(),
            "foo: set foo first"
        );
        assert_eq!(ex("a${foo:?}b", &[("foo", "x")]).unwrap(), "axb");
    }

    #[test]
    fn plain_variables() {
        let v = [("foo", "x"), ("1", "one")];
        assert_eq!(ex("$foo ${foo}_bar $foo_bar", &v).unwrap(), "x x_bar ");
        assert_eq!(ex("$1 $ a$ $-", &v).unwrap(), "one $ a$ ");
    }

    #[test]
    fn quotes() {
        let v = [("foo", "x")];
        assert_eq!(ex("'$foo'", &v).unwrap(), "$foo");
        assert_eq!(ex("\"$foo bar\"", &v).unwrap(), "x bar");
        assert_eq!(ex("\"a\\\"b\\$foo\\\\\"", &v).unwrap(), "a\"b$foo\\");
        assert_eq!(ex("\"a\\nb\"", &v).unwrap(), "a\\nb");
        assert_eq!(ex("a'b c'\"d\"", &v).unwrap(), "ab cd");
        assert_eq!(ex("'a\\'", &v).unwrap(), "a\\");
        assert_eq!(
            ex("it's", &v).unwrap_err(),
            ExpandError::Unterminated("single quote")
        );
        assert_eq!(
            ex("\"abc", &v).unwrap_err().to_string(),
            "missing closing double quote"
        );
    }

    #[test]
    fn escapes() {
        let v = [("foo", "x")];
        assert_eq!(ex("\\$foo", &v).unwrap(), "$foo");
        assert_eq!(ex("\\${foo}", &v).unwrap(), "${foo}");
        assert_eq!(ex("a\\ b\\\\", &v).unwrap(), "a b\\");
        assert_eq!(ex("abc\\", &v).unwrap(), "abc");
        assert_eq!(
            expand("`$foo c:\\dir", '`', &vars(&v)).unwrap(),
            "$foo c:\\dir"
        );
    }

    #[test]
    fn bad_substitutions() {
        assert_eq!(
            ex("${}", &[]).unwrap_err(),
            ExpandError::BadSubstitution("${}".into())
        );
        assert_eq!(
            ex("${foo", &[]).unwrap_err(),
            ExpandError::Unterminated("'}'")
        );
        assert_eq!(
            ex("${foo:-bar", &[]).unwrap_err(),
            ExpandError::Unterminated("'}'")
        );
        assert_eq!(
            ex("${foo:=x}", &[]).unwrap_err().to_string(),
            "bad substitution '${foo:='"
        );
    }

    #[test]
    fn expand_words_splits_on_unquoted_whitespace() {
        let v = vars(&[("V", "x  y")]);
        assert_eq!(
            expand_words("a \"b c\" $V 'd e' f\\ g", '\\', &v).unwrap(),
            strings(&["a", "b c", "x", "y", "d e", "f g"])
        );
        assert_eq!(
            expand_words("\"$V\"", '\\', &v).unwrap(),
            strings(&["x  y"])
        );
        assert_eq!(
            expand_words(" \"\" ", '\\', &v).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn reference_environment_replacement_example() {
        let dockerfile =
            parse("FROM busybox\nENV FOO=/bar\nWORKDIR ${FOO}\nADD . $FOO\nCOPY \\$FOO /quux\n")
                .unwrap();
        let v = vars(&[("FOO", "/bar")]);
        let expanded: Vec<Kind> = dockerfile.instructions[2..]
            .iter()
            .map(|i| i.expanded('\\', &v).unwrap())
            .collect();
        assert_eq!(
            expanded,
            [
                Kind::Workdir("/bar".into()),
                Kind::Add(copy(vec![path(".")], "/bar")),
                Kind::Copy(copy(vec![path("$FOO")], "/quux")),
            ]
        );
    }

    #[test]
    fn expansion_errors_carry_the_line() {
        let err = expanded("WORKDIR ${DIR:?set DIR}", &[]).unwrap_err();
        assert_eq!(err.to_string(), "line 2: DIR: set DIR");
        assert_eq!(err.line(), 2);
    }

    #[test]
    fn commands_are_not_expanded() {
        for text in [
            "RUN echo $HOME",
            "CMD [\"echo\", \"$HOME\"]",
            "ENTRYPOINT echo $HOME",
            "HEALTHCHECK CMD test $HOME",
            "ONBUILD RUN echo $HOME",
            "SHELL [\"$SH\"]",
        ] {
            assert_eq!(
                expanded(text, &[("HOME", "/root"), ("SH", "x")]).unwrap(),
                one(text),
                "{text}"
            );
        }
    }

    #[test]
    fn heredoc_alone_runs_its_body() {
        let dockerfile =
            parse("FROM debian\nRUN <<EOF\napt-get update\napt-get install -y curl\nEOF\nCMD x\n")
                .unwrap();
        assert_eq!(
            dockerfile.instructions[1],
            Instruction {
                line: 2,
                kind: run("apt-get update\napt-get install -y curl\n"),
                text: "RUN <<EOF".into(),
            }
        );
        assert_eq!(dockerfile.instructions[2].line, 6);
        assert_eq!(dockerfile.instructions[2].kind, Kind::Cmd(shell("x")));
        // `# ...` inside a body is part of it, not a comment.
        assert_eq!(
            one("RUN <<EOT\n#!/usr/bin/env python\nprint(\"hello world\")\nEOT"),
            run("#!/usr/bin/env python\nprint(\"hello world\")\n")
        );
    }

    #[test]
    fn heredoc_with_a_command_is_fed_by_the_shell() {
        assert_eq!(
            one("RUN python3 <<EOF\nprint(\"hi\")\nEOF"),
            run("python3 <<EOF\nprint(\"hi\")\nEOF\n")
        );
        assert_eq!(
            one("RUN <<EOT bash\n  set -ex\n  apt-get update\nEOT"),
            run("<<EOT bash\n  set -ex\n  apt-get update\nEOT\n")
        );
        assert_eq!(
            one("RUN cat << EOF > /greeting\nhi\nEOF"),
            run("cat << EOF > /greeting\nhi\nEOF\n")
        );
    }

    #[test]
    fn several_heredocs_on_one_run() {
        let text = "RUN <<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2\n";
        assert_eq!(
            one(text),
            run(
                "<<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2\n"
            )
        );
    }

    #[test]
    fn chomped_heredoc_loses_leading_tabs() {
        assert_eq!(
            one("RUN <<-EOF\n\techo a\n\t\techo b\n  echo c\n\tEOF"),
            run("echo a\necho b\n  echo c\n")
        );
    }

    #[test]
    fn copy_heredoc_creates_an_inline_file() {
        let text = "COPY <<-EOT /script.sh\n  echo \"hello ${FOO}\"\nEOT";
        assert_eq!(
            one(text),
            Kind::Copy(copy(
                vec![inline("EOT", "  echo \"hello ${FOO}\"\n", true)],
                "/script.sh"
            ))
        );
        // Expansion keeps the content's quotes.
        assert_eq!(
            expanded(text, &[("FOO", "bar")]).unwrap(),
            Kind::Copy(copy(
                vec![inline("EOT", "  echo \"hello bar\"\n", true)],
                "/script.sh"
            ))
        );
    }

    #[test]
    fn quoted_heredoc_delimiter_turns_expansion_off() {
        for text in [
            "COPY <<-\"EOT\" /script.sh\n  echo \"hello ${FOO}\"\nEOT",
            "COPY <<'EOT' /script.sh\n  echo \"hello ${FOO}\"\nEOT",
        ] {
            let expected = Kind::Copy(copy(
                vec![inline("EOT", "  echo \"hello ${FOO}\"\n", false)],
                "/script.sh",
            ));
            assert_eq!(one(text), expected);
            assert_eq!(expanded(text, &[("FOO", "bar")]).unwrap(), expected);
        }
    }

    #[test]
    fn heredoc_contents_expand_as_buildkit_does() {
        // BuildKit's own test of special symbols in COPY heredocs.
        let files = [
            ("\"quotes in file\"", "\"quotes in file\"\n"),
            ("\\", "\n"),
            ("\\\\", "\\\n"),
            ("\\$", "$\n"),
        ];
        for (body, want) in files {
            let text = format!("COPY <<EOF f\n{body}\nEOF");
            assert_eq!(
                expanded(&text, &[]).unwrap(),
                Kind::Copy(copy(vec![inline("EOF", want, true)], "f")),
                "{body}"
            );
        }
        for body in ["\\", "\\\\", "\\$"] {
            let text = format!("COPY <<\"EOF\" f\n{body}\nEOF");
            assert_eq!(
                expanded(&text, &[]).unwrap(),
                Kind::Copy(copy(vec![inline("EOF", &format!("{body}\n"), false)], "f"))
            );
        }
    }

    #[test]
    fn several_heredocs_on_one_copy() {
        let text = "COPY <<no-recommends <<no-suggests /etc/apt/apt.conf.d/\nAPT::Install-Recommends \"false\";\nno-recommends\nAPT::Install-Suggests \"false\";\nno-suggests\nRUN true\n";
        let dockerfile = parse(&format!("FROM a\n{text}")).unwrap();
        assert_eq!(
            dockerfile.instructions[1].kind,
            Kind::Copy(copy(
                vec![
                    inline(
                        "no-recommends",
                        "APT::Install-Recommends \"false\";\n",
                        true
                    ),
                    inline("no-suggests", "APT::Install-Suggests \"false\";\n", true),
                ],
                "/etc/apt/apt.conf.d/"
            ))
        );
        assert_eq!(
            dockerfile.instructions[1].text,
            "COPY <<no-recommends <<no-suggests /etc/apt/apt.conf.d/"
        );
        assert_eq!(dockerfile.instructions[2].line, 7);
        assert_eq!(
            one("ADD <<EOF foo.txt /bar\nthis is inline\nEOF"),
            Kind::Add(copy(
                vec![inline("EOF", "this is inline\n", true), path("foo.txt")],
                "/bar"
            ))
        );
    }

    #[test]
    fn heredoc_errors() {
        let err = parse("FROM a\nRUN true\nRUN cat <<EOF\nnever ends\n").unwrap_err();
        assert_eq!(err.to_string(), "line 3: unterminated heredoc 'EOF'");
        assert_eq!(
            err,
            Error::UnterminatedHeredoc {
                line: 3,
                name: "EOF".into()
            }
        );
        assert_eq!(
            error("FROM a\nCOPY a <<EOF\nx\nEOF\n"),
            "line 2: COPY cannot take a heredoc as its destination"
        );
    }

    #[test]
    fn heredocs_only_open_where_buildkit_takes_them() {
        // Quoted, JSON or other instructions' `<<` is no heredoc.
        assert_eq!(
            after_from("RUN echo \"<<EOF\"\nRUN [\"cat\", \"<<EOF\"]\nLABEL a=<<EOF\n"),
            [
                run("echo \"<<EOF\""),
                Kind::Run {
                    command: Command::Exec(strings(&["cat", "<<EOF"])),
                    network: None,
                    mounts: vec![]
                },
                Kind::Label(vec![("a".into(), "<<EOF".into())]),
            ]
        );
    }

    #[test]
    fn exec_and_shell_forms() {
        assert_eq!(
            after_from(
                "ENTRYPOINT [\"/bin/bash\", \"-c\", \"echo hello\"]\nCMD echo hello\nCMD []\n"
            ),
            [
                Kind::Entrypoint(Command::Exec(strings(&["/bin/bash", "-c", "echo hello"]))),
                Kind::Cmd(shell("echo hello")),
                Kind::Cmd(Command::Exec(Vec::new())),
            ]
        );
    }

    #[test]
    fn invalid_json_falls_back_to_shell_form() {
        assert_eq!(
            one("RUN [\"c:\\windows\\system32\\tasklist.exe\"]"),
            run("[\"c:\\windows\\system32\\tasklist.exe\"]")
        );
        assert_eq!(
            one("RUN [\"c:\\\\windows\\\\system32\\\\tasklist.exe\"]"),
            Kind::Run {
                command: Command::Exec(strings(&["c:\\windows\\system32\\tasklist.exe"])),
                network: None,
                mounts: vec![]
            }
        );
        assert_eq!(
            one("CMD ['single', 'quotes']"),
            Kind::Cmd(shell("['single', 'quotes']"))
        );
        assert_eq!(
            error("FROM a\nCMD [\"a\", 1]\n"),
            "line 2: CMD JSON arrays may only hold strings"
        );
    }

    #[test]
    fn shell_needs_json() {
        assert_eq!(
            one("SHELL [\"powershell\", \"-command\"]"),
            Kind::Shell(strings(&["powershell", "-command"]))
        );
        assert_eq!(
            error("FROM a\nSHELL /bin/bash -c\n"),
            "line 2: SHELL must be a JSON array, like SHELL [\"/bin/sh\", \"-c\"]"
        );
        assert_eq!(
            error("FROM a\nSHELL []\n"),
            "line 2: SHELL needs at least the shell's path"
        );
    }

    #[test]
    fn healthcheck_with_options_and_none() {
        let text = "HEALTHCHECK --interval=5m --timeout=3s \\\n  CMD curl -f http://localhost/ || exit 1\nHEALTHCHECK --start-period=1m30s --start-interval=500ms --retries=3 cmd [\"/check\"]\nHEALTHCHECK NONE\n";
        assert_eq!(
            after_from(text),
            [
                Kind::Healthcheck(Some(Healthcheck {
                    test: shell("curl -f http://localhost/ || exit 1"),
                    interval: Some("5m".into()),
                    timeout: Some("3s".into()),
                    start_period: None,
                    start_interval: None,
                    retries: None,
                })),
                Kind::Healthcheck(Some(Healthcheck {
                    test: Command::Exec(strings(&["/check"])),
                    interval: None,
                    timeout: None,
                    start_period: Some("1m30s".into()),
                    start_interval: Some("500ms".into()),
                    retries: Some(3),
                })),
                Kind::Healthcheck(None),
            ]
        );
    }

    #[test]
    fn healthcheck_errors() {
        let cases = [
            (
                "HEALTHCHECK NONE x",
                "line 2: HEALTHCHECK NONE takes no options or arguments",
            ),
            (
                "HEALTHCHECK --retries=3 NONE",
                "line 2: HEALTHCHECK NONE takes no options or arguments",
            ),
            (
                "HEALTHCHECK CURL x",
                "line 2: HEALTHCHECK takes CMD followed by a command, or NONE",
            ),
            ("HEALTHCHECK CMD", "line 2: HEALTHCHECK CMD needs a command"),
            (
                "HEALTHCHECK CMD []",
                "line 2: HEALTHCHECK CMD needs a command",
            ),
            (
                "HEALTHCHECK --retries=-1 CMD x",
                "line 2: HEALTHCHECK --retries takes a count, not '-1'",
            ),
            (
                "HEALTHCHECK --interval=5 CMD x",
                "line 2: HEALTHCHECK --interval takes a duration such as 30s or 1m30s (0 or at least 1ms), not '5'",
            ),
            (
                "HEALTHCHECK --timeout=10us CMD x",
                "line 2: HEALTHCHECK --timeout takes a duration such as 30s or 1m30s (0 or at least 1ms), not '10us'",
            ),
            (
                "HEALTHCHECK --port=80 CMD x",
                "line 2: unsupported HEALTHCHECK flag --port",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(&format!("FROM a\n{text}\n")), want);
        }
        assert!(healthcheck_duration("0"));
        assert!(healthcheck_duration("1.5h"));
        assert!(healthcheck_duration("1ms"));
        assert!(!healthcheck_duration("-1s"));
        assert!(!healthcheck_duration("1s2"));
        assert!(!healthcheck_duration(""));
    }

    #[test]
    fn onbuild_keeps_its_trigger() {
        assert_eq!(
            after_from(
                "ONBUILD ADD . /app/src\nONBUILD RUN /usr/local/bin/python-build --dir /app/src\n"
            ),
            [
                Kind::Onbuild("ADD . /app/src".into()),
                Kind::Onbuild("RUN /usr/local/bin/python-build --dir /app/src".into()),
            ]
        );
        // A heredoc goes with the trigger, which parses again downstream.
        let trigger = match one("onbuild COPY <<EOF /greeting\nhello\nEOF") {
            Kind::Onbuild(trigger) => trigger,
            other => panic!("{other:?}"),
        };
        assert_eq!(trigger, "COPY <<EOF /greeting\nhello\nEOF");
        assert_eq!(
            after_from(&trigger),
            [Kind::Copy(copy(
                vec![inline("EOF", "hello\n", true)],
                "/greeting"
            ))]
        );
    }

    #[test]
    fn onbuild_rejects_some_triggers() {
        let cases = [
            (
                "ONBUILD ONBUILD RUN x",
                "line 2: ONBUILD cannot trigger another ONBUILD",
            ),
            (
                "ONBUILD FROM alpine",
                "line 2: FROM cannot be an ONBUILD trigger",
            ),
            (
                "ONBUILD maintainer me",
                "line 2: MAINTAINER cannot be an ONBUILD trigger",
            ),
            ("ONBUILD", "line 2: ONBUILD needs an instruction"),
            ("ONBUILD FORM x", "line 2: unknown instruction 'FORM'"),
            (
                "ONBUILD COPY x",
                "line 2: COPY needs at least a source and a destination",
            ),
            (
                "ONBUILD RUN --mount=from=config,target=/opt ls",
                "line 2: unsupported RUN --mount type bind (COPY the files instead)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(&format!("FROM a\n{text}\n")), want);
        }
    }

    #[test]
    fn arg_before_from() {
        let dockerfile = parse("ARG  CODE_VERSION=latest\nFROM base:${CODE_VERSION}\nCMD  /code/run-app\n\nFROM extras:${CODE_VERSION}\nARG a b=2 c=\"x y\"\n").unwrap();
        assert_eq!(
            dockerfile.instructions[0].kind,
            Kind::Arg(vec![("CODE_VERSION".into(), Some("latest".into()))])
        );
        let v = vars(&[("CODE_VERSION", "1.2")]);
        let images: Vec<Kind> = [1, 3]
            .iter()
            .map(|&i| dockerfile.instructions[i].expanded('\\', &v).unwrap())
            .collect();
        assert_eq!(
            images,
            [
                Kind::From {
                    image: "base:1.2".into(),
                    name: None,
                    platform: None
                },
                Kind::From {
                    image: "extras:1.2".into(),
                    name: None,
                    platform: None
                },
            ]
        );
        assert_eq!(
            dockerfile.instructions[4].kind,
            Kind::Arg(vec![
                ("a".into(), None),
                ("b".into(), Some("2".into())),
                ("c".into(), Some("\"x y\"".into())),
            ])
        );
        assert_eq!(
            dockerfile.instructions[4].expanded('\\', &v).unwrap(),
            Kind::Arg(vec![
                ("a".into(), None),
                ("b".into(), Some("2".into())),
                ("c".into(), Some("x y".into())),
            ])
        );
        assert_eq!(
            error("FROM a\nARG =1\n"),
            "line 2: ARG names cannot be blank"
        );
    }

    #[test]
    fn only_arg_may_come_before_from() {
        assert_eq!(
            error("# comment\nARG A\nRUN echo\nFROM a\n"),
            "line 3: RUN comes before any FROM (only ARG may)"
        );
        assert_eq!(
            error("ARG A\n\n"),
            "line 2: the Dockerfile has no FROM instruction"
        );
        assert_eq!(error(""), "line 1: the Dockerfile has no FROM instruction");
    }

    #[test]
    fn from_with_stage_name_and_platform() {
        let text = "FROM --platform=$BUILDPLATFORM golang:1.22 AS Build\nFROM build as final\n";
        let dockerfile = parse(text).unwrap();
        assert_eq!(
            dockerfile.instructions[0].kind,
            Kind::From {
                image: "golang:1.22".into(),
                name: Some("build".into()),
                platform: Some("$BUILDPLATFORM".into()),
            }
        );
        assert_eq!(
            dockerfile.instructions[0]
                .expanded('\\', &vars(&[("BUILDPLATFORM", "linux/arm64")]))
                .unwrap(),
            Kind::From {
                image: "golang:1.22".into(),
                name: Some("build".into()),
                platform: Some("linux/arm64".into()),
            }
        );
        assert_eq!(
            dockerfile.instructions[1].kind,
            Kind::From {
                image: "build".into(),
                name: Some("final".into()),
                platform: None,
            }
        );
        let cases = [
            (
                "FROM a AS",
                "line 1: FROM takes an image, optionally followed by AS and a stage name",
            ),
            (
                "FROM a b c",
                "line 1: FROM takes an image, optionally followed by AS and a stage name",
            ),
            (
                "FROM",
                "line 1: FROM takes an image, optionally followed by AS and a stage name",
            ),
            (
                "FROM a AS 1st",
                "line 1: stage name '1st' must start with a letter and hold only letters, digits, '-', '_' and '.'",
            ),
            (
                "FROM --arch=arm64 a",
                "line 1: unsupported FROM flag --arch",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(text), want);
        }
    }

    #[test]
    fn copy_needs_a_source_and_a_destination() {
        let err = parse("FROM a\nRUN x\nRUN y\n\nCOPY /dest\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 5: COPY needs at least a source and a destination"
        );
        assert_eq!(err.line(), 5);
        assert_eq!(
            error("FROM a\nADD\n"),
            "line 2: ADD needs at least a source and a destination"
        );
    }

    #[test]
    fn copy_flags_and_json_form() {
        assert_eq!(
            one("COPY --from=build --chown=\"1000:1000\" --chmod=755 --link a b /app/"),
            Kind::Copy(Copy {
                sources: vec![path("a"), path("b")],
                dest: "/app/".into(),
                from: Some("build".into()),
                chown: Some("1000:1000".into()),
                chmod: Some("755".into()),
                link: true,
            })
        );
        assert_eq!(
            one("COPY --link=false [\"a b\", \"/dest/\"]"),
            Kind::Copy(copy(vec![path("a b")], "/dest/"))
        );
        assert_eq!(
            expanded(
                "ADD --chown=$U:$G $SRC ${DEST:-/opt}",
                &[("U", "app"), ("G", "staff"), ("SRC", "x.tar")]
            )
            .unwrap(),
            Kind::Add(Copy {
                sources: vec![path("x.tar")],
                dest: "/opt".into(),
                from: None,
                chown: Some("app:staff".into()),
                chmod: None,
                link: false,
            })
        );
        assert_eq!(
            expanded("COPY --from=${STAGE} a b", &[("STAGE", "build")]).unwrap(),
            Kind::Copy(Copy {
                from: Some("build".into()),
                ..copy(vec![path("a")], "b")
            })
        );
    }

    #[test]
    fn flag_errors() {
        let cases = [
            (
                "COPY --parents a b",
                "line 2: unsupported COPY flag --parents",
            ),
            (
                "COPY --exclude=*.md a b",
                "line 2: unsupported COPY flag --exclude",
            ),
            (
                "ADD --checksum=sha256:0 a b",
                "line 2: unsupported ADD flag --checksum",
            ),
            (
                "ADD --keep-git-dir a b",
                "line 2: unsupported ADD flag --keep-git-dir",
            ),
            ("ADD --from=x a b", "line 2: unsupported ADD flag --from"),
            (
                "COPY --link=maybe a b",
                "line 2: --link takes true or false, not 'maybe'",
            ),
            (
                "COPY --chown a b",
                "line 2: --chown needs a value (--chown=...)",
            ),
            (
                "COPY --chmod=1 --chmod=2 a b",
                "line 2: COPY flag --chmod is given twice",
            ),
            ("WORKDIR --x /a", "line 2: unsupported WORKDIR flag --x"),
            ("CMD --help", "line 2: unsupported CMD flag --help"),
        ];
        for (text, want) in cases {
            assert_eq!(error(&format!("FROM a\n{text}\n")), want);
        }
    }

    #[test]
    fn run_network_is_recorded_and_other_flags_are_not_supported() {
        assert_eq!(
            one("RUN --network=none pip install --find-links wheels mypackage"),
            Kind::Run {
                command: shell("pip install --find-links wheels mypackage"),
                network: Some("none".into()),
                mounts: vec![]
            }
        );
        assert_eq!(
            one("RUN --network=host -- --version"),
            Kind::Run {
                command: shell("--version"),
                network: Some("host".into()),
                mounts: vec![]
            }
        );
        assert_eq!(
            one(
                "RUN --mount=type=cache,target=/root/.cache,sharing=locked \\\n --mount=type=tmpfs,dst=/t,size=1m --mount=type=cache,id=apt,target=/var/cache/apt,uid=7,gid=8,mode=0700 pip install x"
            ),
            Kind::Run {
                command: shell("pip install x"),
                network: None,
                mounts: vec![
                    StepMount::Cache {
                        id: "/root/.cache".into(),
                        target: "/root/.cache".into(),
                        mode: 0o755,
                        uid: 0,
                        gid: 0
                    },
                    StepMount::Tmpfs {
                        target: "/t".into(),
                        size: Some(1 << 20)
                    },
                    StepMount::Cache {
                        id: "apt".into(),
                        target: "/var/cache/apt".into(),
                        mode: 0o700,
                        uid: 7,
                        gid: 8
                    },
                ]
            }
        );
        for (mount, want) in [
            (
                "target=/src",
                "line 2: unsupported RUN --mount type bind (COPY the files instead)",
            ),
            (
                "type=secret,id=token",
                "line 2: unsupported RUN --mount type secret (COPY the files instead)",
            ),
            ("type=cache", "line 2: --mount needs a target"),
            (
                "type=volume,target=/v",
                "line 2: --mount type=volume: use cache or tmpfs",
            ),
            (
                "type=cache,target=/c,from=stage",
                "line 2: unsupported RUN --mount field from",
            ),
            (
                "type=cache,target=/c,uid=me",
                "line 2: --mount uid=me is not a number",
            ),
            (
                "type=cache,target=/c,target=/d",
                "line 2: --mount gives target twice",
            ),
            (
                "type=tmpfs,target=/t,size=lots",
                "line 2: invalid --mount size \"lots\"",
            ),
        ] {
            assert_eq!(error(&format!("FROM a\nRUN --mount={mount} x\n")), want);
        }
        assert_eq!(
            error("FROM a\nRUN --security=insecure x\n"),
            "line 2: unsupported RUN flag --security"
        );
        assert_eq!(
            error("FROM a\nRUN --network=bridge x\n"),
            "line 2: RUN --network takes default, none or host, not 'bridge'"
        );
        assert_eq!(error("FROM a\nRUN\n"), "line 2: RUN needs a command");
        assert_eq!(error("FROM a\nRUN []\n"), "line 2: RUN needs a command");
    }

    #[test]
    fn expose_and_volume_lists() {
        assert_eq!(
            after_from("EXPOSE 80/tcp 80/udp\nVOLUME [\"/data\"]\nVOLUME /var/log /var/db\n"),
            [
                Kind::Expose(strings(&["80/tcp", "80/udp"])),
                Kind::Volume(strings(&["/data"])),
                Kind::Volume(strings(&["/var/log", "/var/db"])),
            ]
        );
        assert_eq!(
            expanded("EXPOSE $PORTS 9000", &[("PORTS", "80 443/udp")]).unwrap(),
            Kind::Expose(strings(&["80", "443/udp", "9000"]))
        );
        assert_eq!(
            expanded("VOLUME $DATA \"/b c\"", &[("DATA", "/a")]).unwrap(),
            Kind::Volume(strings(&["/a", "/b c"]))
        );
        assert_eq!(
            error("FROM a\nEXPOSE\n"),
            "line 2: EXPOSE needs at least one argument"
        );
        assert_eq!(
            error("FROM a\nVOLUME [\" \"]\n"),
            "line 2: VOLUME paths cannot be empty"
        );
    }

    #[test]
    fn single_value_instructions() {
        assert_eq!(
            after_from(
                "WORKDIR /path/to/workdir\nUSER patrick:staff\nSTOPSIGNAL SIGKILL\nMAINTAINER Sven <sven@example.org>\n"
            ),
            [
                Kind::Workdir("/path/to/workdir".into()),
                Kind::User("patrick:staff".into()),
                Kind::StopSignal("SIGKILL".into()),
                Kind::Maintainer("Sven <sven@example.org>".into()),
            ]
        );
        let v = [("DIRPATH", "/path"), ("U", "1000"), ("SIG", "9")];
        assert_eq!(
            expanded("WORKDIR $DIRPATH/$DIRNAME", &v).unwrap(),
            Kind::Workdir("/path/".into())
        );
        assert_eq!(
            expanded("USER ${U}:${G:-0}", &v).unwrap(),
            Kind::User("1000:0".into())
        );
        assert_eq!(
            expanded("STOPSIGNAL $SIG", &v).unwrap(),
            Kind::StopSignal("9".into())
        );
        assert_eq!(error("FROM a\nUSER\n"), "line 2: USER needs an argument");
    }

    #[test]
    fn crlf_and_byte_order_mark() {
        let dockerfile = parse("\u{feff}# escape=`\r\nFROM a\r\nRUN echo a `\r\n  b\r\n").unwrap();
        assert_eq!(dockerfile.escape, '`');
        assert_eq!(dockerfile.instructions[1].kind, run("echo a   b"));
        assert_eq!(dockerfile.instructions[1].text, "RUN echo a b");
    }
}
