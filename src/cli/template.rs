//! Go-template `--format`s as Docker users write them:
//! `--format '{{.ID}} {{.Names}} {{.Status}}'`, `--format 'table {{.ID}}\t{{.Image}}'`,
//! `{{json .}}`, `{{.Label "com.example"}}`, `{{.Names | upper}}`.
//!
//! Written by hand: no well-kept crate runs Go's text/template (gtmpl's
//! last release was in 2021), and what scripts use of it is small: field
//! paths, string and number arguments, pipes, and Docker's functions
//! (`json`, `join`, `split`, `upper`, `lower`, `title`, `truncate`, `pad`)
//! plus Go's `index`, `len` and `println`. Control actions (`if`, `range`,
//! ...) are refused in one line rather than half-run. Records are JSON
//! objects, so `inspect` and the lists share one evaluator.

use serde_json::Value;

/// A parsed `--format` template.
#[derive(Clone, Debug)]
pub struct Template {
    /// `table ...`: a header row first, columns aligned at tabs.
    table: bool,
    parts: Vec<Part>,
}

#[derive(Clone, Debug)]
enum Part {
    Text(String),
    Action(Vec<Command>),
}

/// One stage of a pipeline: a function and its arguments, or a lone value.
#[derive(Clone, Debug)]
enum Command {
    Call(Function, Vec<Arg>),
    Value(Arg),
    /// `.Label "key"`: a field called with an argument, as Docker's
    /// container rows answer `.Label`; looked up as `index .Label "key"`.
    Method(Vec<String>, Vec<Arg>),
}

#[derive(Clone, Debug)]
enum Arg {
    /// `.`, `.A`, `.A.B`.
    Field(Vec<String>),
    Str(String),
    Int(i64),
}

#[derive(Clone, Copy, Debug)]
enum Function {
    Json,
    Join,
    Split,
    Upper,
    Lower,
    Title,
    Truncate,
    Pad,
    Index,
    Len,
    Println,
}

impl Function {
    fn named(name: &str) -> Option<Function> {
        Some(match name {
            "json" => Function::Json,
            "join" => Function::Join,
            "split" => Function::Split,
            "upper" => Function::Upper,
            "lower" => Function::Lower,
            "title" => Function::Title,
            "truncate" => Function::Truncate,
            "pad" => Function::Pad,
            "index" => Function::Index,
            "len" => Function::Len,
            "println" => Function::Println,
            _ => return None,
        })
    }
}

impl std::str::FromStr for Template {
    type Err = String;

    fn from_str(format: &str) -> Result<Template, String> {
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim())
            }
            _ => (false, format),
        };
        // Docker turns the two-character `\t` and `\n` a shell leaves into
        // a tab and a newline.
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed action in template {format:?}"))?;
            let action = after[..close]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-');
            parts.push(Part::Action(parse_pipeline(action.trim())?));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { table, parts })
    }
}

fn parse_pipeline(action: &str) -> Result<Vec<Command>, String> {
    if action.is_empty() {
        return Err("empty action {{}} in template".into());
    }
    let words = split_words(action)?;
    let mut commands = Vec::new();
    for stage in words.split(|w| w == "|") {
        let Some((first, args)) = stage.split_first() else {
            return Err(format!("missing command in pipeline {{{{{action}}}}}"));
        };
        let args = args
            .iter()
            .map(|a| parse_arg(a))
            .collect::<Result<Vec<_>, _>>()?;
        let command = if let Some(function) = Function::named(first) {
            Command::Call(function, args)
        } else if first.starts_with('.') {
            match parse_arg(first)? {
                Arg::Field(path) if !args.is_empty() => Command::Method(path, args),
                arg if args.is_empty() => Command::Value(arg),
                _ => unreachable!("a word starting with . is a field"),
            }
        } else if matches!(
            first.as_str(),
            "if" | "range" | "with" | "else" | "end" | "define" | "template" | "block"
        ) {
            return Err(format!(
                "{{{{{first}}}}} is not supported in --format; use fields, pipes and functions"
            ));
        } else if args.is_empty() && !first.chars().next().unwrap_or(' ').is_alphabetic() {
            Command::Value(parse_arg(first)?)
        } else {
            return Err(format!(
                "unknown function {first:?} in template; functions: json, join, split, upper, \
                 lower, title, truncate, pad, index, len, println"
            ));
        };
        commands.push(command);
    }
    Ok(commands)
}

/// The words of an action: quoted strings kept whole, `|` on its own.
fn split_words(action: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '|' {
            chars.next();
            words.push("|".to_string());
        } else if c == '"' || c == '`' {
            chars.next();
            let mut word = String::from('"');
            loop {
                match chars.next() {
                    Some(q) if q == c => break,
                    Some('\\') if c == '"' => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('t') => word.push('\t'),
                        Some(other) => word.push(other),
                        None => return Err(format!("unterminated string in {{{{{action}}}}}")),
                    },
                    Some(other) => word.push(other),
                    None => return Err(format!("unterminated string in {{{{{action}}}}}")),
                }
            }
            words.push(word);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '|' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            words.push(word);
        }
    }
    Ok(words)
}

fn parse_arg(word: &str) -> Result<Arg, String> {
    if let Some(text) = word.strip_prefix('"') {
        return Ok(Arg::Str(text.to_string()));
    }
    if word == "." {
        return Ok(Arg::Field(Vec::new()));
    }
    if let Some(path) = word.strip_prefix('.') {
        let path: Vec<String> = path.split('.').map(String::from).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(format!("bad field {word:?} in template"));
        }
        return Ok(Arg::Field(path));
    }
    word.parse()
        .map(Arg::Int)
        .map_err(|_| format!("bad argument {word:?} in template"))
}

impl Template {
    /// Refuses a template naming a field records do not have, before
    /// anything is printed (and even when there are no records).
    pub fn check(&self, fields: &[&str]) -> Result<(), String> {
        for part in &self.parts {
            let Part::Action(commands) = part else {
                continue;
            };
            for command in commands {
                let args: Vec<&Arg> = match command {
                    Command::Value(arg) => vec![arg],
                    Command::Call(_, args) => args.iter().collect(),
                    Command::Method(path, args) => {
                        check_arg(&Arg::Field(path.clone()), fields)?;
                        args.iter().collect()
                    }
                };
                args.into_iter().try_for_each(|a| check_arg(a, fields))?;
            }
        }
        Ok(())
    }

    /// Every record through the template: for `table`, a header from
    /// `headers` (field -> column title) first and the columns aligned.
    pub fn render(&self, records: &[Value], headers: &[(&str, &str)]) -> Result<String, String> {
        let mut lines = Vec::new();
        if self.table {
            lines.push(self.header(headers));
        }
        for record in records {
            let mut line = String::new();
            for part in &self.parts {
                match part {
                    Part::Text(text) => line.push_str(text),
                    Part::Action(commands) => line.push_str(&text(&pipeline(commands, record)?)),
                }
            }
            lines.push(line);
        }
        let mut out = if self.table {
            align(&lines)
        } else {
            lines.join("\n")
        };
        if !lines.is_empty() {
            out.push('\n');
        }
        Ok(out)
    }

    /// The header row: each action shows the title of the field it names.
    fn header(&self, headers: &[(&str, &str)]) -> String {
        let mut line = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => line.push_str(text),
                Part::Action(commands) => {
                    let field = commands.iter().find_map(|c| match c {
                        Command::Value(Arg::Field(path)) | Command::Method(path, _) => path.first(),
                        Command::Call(_, args) => args.iter().find_map(|a| match a {
                            Arg::Field(path) => path.first(),
                            _ => None,
                        }),
                        Command::Value(_) => None,
                    });
                    let title = field.map_or(String::new(), |f| {
                        headers
                            .iter()
                            .find(|(name, _)| name == f)
                            .map_or_else(|| f.to_uppercase(), |(_, title)| title.to_string())
                    });
                    line.push_str(&title);
                }
            }
        }
        line
    }
}

fn check_arg(arg: &Arg, fields: &[&str]) -> Result<(), String> {
    match arg {
        Arg::Field(path) => match path.first() {
            Some(name) if !fields.contains(&name.as_str()) => Err(format!(
                "--format names no field .{name}; fields: {}",
                fields.join(", ")
            )),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

fn pipeline(commands: &[Command], record: &Value) -> Result<Value, String> {
    let mut value: Option<Value> = None;
    for command in commands {
        value = Some(match command {
            Command::Value(arg) => {
                if value.is_some() {
                    return Err("a pipeline stage after | must be a function".into());
                }
                resolve(arg, record)?
            }
            Command::Method(path, args) => {
                let mut all = vec![field(record, path)?];
                for arg in args {
                    all.push(resolve(arg, record)?);
                }
                call(Function::Index, all)?
            }
            Command::Call(function, args) => {
                let mut all = args
                    .iter()
                    .map(|a| resolve(a, record))
                    .collect::<Result<Vec<_>, _>>()?;
                all.extend(value.take());
                call(*function, all)?
            }
        });
    }
    Ok(value.unwrap_or(Value::Null))
}

fn resolve(arg: &Arg, record: &Value) -> Result<Value, String> {
    match arg {
        Arg::Field(path) => field(record, path),
        Arg::Str(text) => Ok(Value::String(text.clone())),
        Arg::Int(n) => Ok(Value::from(*n)),
    }
}

fn field(record: &Value, path: &[String]) -> Result<Value, String> {
    let mut value = record;
    for (depth, name) in path.iter().enumerate() {
        value = value.get(name).ok_or_else(|| {
            let at = if depth == 0 {
                String::new()
            } else {
                format!(" in .{}", path[..depth].join("."))
            };
            let known = value
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            format!("--format names no field .{name}{at}; fields: {known}")
        })?;
    }
    Ok(value.clone())
}

fn call(function: Function, args: Vec<Value>) -> Result<Value, String> {
    let wants = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{function:?} takes {n} argument(s), got {}",
                args.len()
            ))
        }
    };
    let string = |v: &Value| text(v);
    Ok(match function {
        Function::Json => {
            wants(1)?;
            Value::String(serde_json::to_string(&args[0]).map_err(|e| e.to_string())?)
        }
        Function::Upper => {
            wants(1)?;
            Value::String(string(&args[0]).to_uppercase())
        }
        Function::Lower => {
            wants(1)?;
            Value::String(string(&args[0]).to_lowercase())
        }
        Function::Title => {
            wants(1)?;
            let mut title = String::new();
            let mut start = true;
            for c in string(&args[0]).chars() {
                title.extend(if start {
                    c.to_uppercase().collect::<Vec<_>>()
                } else {
                    vec![c]
                });
                start = !c.is_alphanumeric();
            }
            Value::String(title)
        }
        // Docker's argument order: `join .List ", "`, `split .Text ","`.
        Function::Join => {
            wants(2)?;
            let items = args[0].as_array().ok_or("join wants a list")?;
            Value::String(
                items
                    .iter()
                    .map(text)
                    .collect::<Vec<_>>()
                    .join(&string(&args[1])),
            )
        }
        Function::Split => {
            wants(2)?;
            let sep = string(&args[1]);
            Value::from(string(&args[0]).split(sep.as_str()).collect::<Vec<_>>())
        }
        Function::Truncate => {
            wants(2)?;
            let n = args[1].as_u64().ok_or("truncate wants a length")? as usize;
            Value::String(string(&args[0]).chars().take(n).collect())
        }
        Function::Pad => {
            wants(3)?;
            let (left, right) = (args[1].as_u64(), args[2].as_u64());
            let (Some(left), Some(right)) = (left, right) else {
                return Err("pad wants two counts".into());
            };
            let pad = |n: u64| " ".repeat(n as usize);
            Value::String(format!("{}{}{}", pad(left), string(&args[0]), pad(right)))
        }
        Function::Index => {
            let (first, keys) = args.split_first().ok_or("index wants a value")?;
            let mut value = first.clone();
            for key in keys {
                value = match (&value, key) {
                    (Value::Object(map), key) => {
                        map.get(&text(key)).cloned().unwrap_or(Value::Null)
                    }
                    (Value::Array(items), Value::Number(n)) => n
                        .as_u64()
                        .and_then(|i| items.get(i as usize).cloned())
                        .ok_or_else(|| format!("index {n} out of range"))?,
                    _ => return Err(format!("cannot index {} with {key}", text(&value))),
                };
            }
            value
        }
        Function::Len => {
            wants(1)?;
            Value::from(match &args[0] {
                Value::Array(items) => items.len(),
                Value::Object(map) => map.len(),
                other => text(other).chars().count(),
            })
        }
        Function::Println => {
            let words: Vec<String> = args.iter().map(text).collect();
            Value::String(words.join(" ") + "\n")
        }
    })
}

/// A value as Go's template prints it: strings bare, nothing as empty,
/// lists as `[a b]`, maps as `map[k:v]`.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(text).collect::<Vec<_>>().join(" "))
        }
        Value::Object(map) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

/// Columns aligned at tabs as Docker's tabwriter sets them (cells at least
/// 10 wide, 3 spaces apart); the last cell of a line is not padded.
fn align(lines: &[String]) -> String {
    const MIN_WIDTH: usize = 10;
    const PADDING: usize = 3;
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let width = (cell.chars().count() + PADDING).max(MIN_WIDTH);
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<0$}", widths[i]));
                }
            }
            line.trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(format: &str, records: &[Value]) -> Result<String, String> {
        format
            .parse::<Template>()?
            .render(records, &[("ID", "CONTAINER ID")])
    }

    #[test]
    fn fields_functions_and_pipes() {
        let row = json!({"ID": "abc", "Names": "web", "Label": {"tier": "front"},
                         "Ports": ["80/tcp", "443/tcp"], "State": {"Status": "running"}});
        let rows = [row];
        assert_eq!(render("{{.ID}} {{.Names}}", &rows).unwrap(), "abc web\n");
        assert_eq!(render("{{.State.Status}}", &rows).unwrap(), "running\n");
        assert_eq!(render("{{.Label \"tier\"}}", &rows).unwrap(), "front\n");
        assert_eq!(
            render("{{index .Label \"tier\"}}", &rows).unwrap(),
            "front\n"
        );
        assert_eq!(render("{{.Label \"none\"}}", &rows).unwrap(), "\n");
        assert_eq!(render("{{.Names | upper}}", &rows).unwrap(), "WEB\n");
        assert_eq!(
            render("{{join .Ports \", \"}}", &rows).unwrap(),
            "80/tcp, 443/tcp\n"
        );
        assert_eq!(
            render("{{json .State}}", &rows).unwrap(),
            "{\"Status\":\"running\"}\n"
        );
        assert_eq!(render("{{len .Ports}}", &rows).unwrap(), "2\n");
        assert_eq!(render("{{truncate .Names 2}}", &rows).unwrap(), "we\n");
        assert_eq!(render("{{.Ports}}", &rows).unwrap(), "[80/tcp 443/tcp]\n");
        assert_eq!(
            render("{{title \"hello world\"}}", &rows).unwrap(),
            "Hello World\n"
        );
        assert_eq!(render("{{.ID}}\\t{{.Names}}", &rows).unwrap(), "abc\tweb\n");
        assert_eq!(render("{{.ID}}", &[]).unwrap(), "");
    }

    #[test]
    fn table_has_a_header_and_aligned_columns() {
        let rows = [
            json!({"ID": "abc", "Names": "web"}),
            json!({"ID": "abcdefghijkl", "Names": "db"}),
        ];
        let out = render("table {{.ID}}\\t{{.Names}}", &rows).unwrap();
        assert_eq!(
            out,
            "CONTAINER ID   NAMES\nabc            web\nabcdefghijkl   db\n"
        );
    }

    #[test]
    fn bad_templates_are_refused_in_one_line() {
        let fields = ["ID", "Names"];
        let check = |f: &str| f.parse::<Template>().and_then(|t| t.check(&fields));
        assert_eq!(
            check("{{.Nope}}").unwrap_err(),
            "--format names no field .Nope; fields: ID, Names"
        );
        assert_eq!(
            check("{{json .Nope}}").unwrap_err(),
            check("{{.Nope}}").unwrap_err()
        );
        assert!(check("{{.ID").unwrap_err().contains("unclosed action"));
        assert!(
            check("{{range .Names}}x{{end}}")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            check("{{frobnicate .ID}}")
                .unwrap_err()
                .contains("unknown function")
        );
        assert!(check("{{.ID}} {{json .}}").is_ok());
        let nested = render("{{.State.Nope}}", &[json!({"State": {"Status": "x"}})]);
        assert_eq!(
            nested.unwrap_err(),
            "--format names no field .Nope in .State; fields: Status"
        );
    }
}
