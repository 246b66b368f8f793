//! `container registry`: log in to and out of registries.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use clap::{Args, Subcommand};
use nix::sys::termios::{self, LocalFlags, SetArg};

use super::output::{ListArgs, ListFormat, print_json, print_table, print_template};
use super::parse_scheme;
use crate::image::{Credentials, Scheme, check_login};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Check a user name and password with a registry and store them.
    Login(LoginArgs),
    /// Forget the credentials for a registry (erasing them from the
    /// credential helper a login stored them through).
    Logout { server: String },
    /// List the registries we hold credentials for.
    #[command(alias = "ls")]
    List(ListArgs),
}

#[derive(Args)]
pub struct LoginArgs {
    #[arg(short, long)]
    username: Option<String>,
    /// Read the password from stdin (keeps it out of shell history and `ps`).
    #[arg(long)]
    password_stdin: bool,
    /// Store the login through `docker-credential-NAME` (a keychain, pass,
    /// ...) instead of in our auth.json, which then names only the helper.
    // Docker has no such flag: `docker login` stores through whatever
    // helper its config.json names. We take the name explicitly so that a
    // login never lands in Docker's store unasked, and record it in our
    // auth.json's `credHelpers`, the key podman's auth.json
    // (containers-auth.json) also names per-registry helpers by. Apple's `container` has only the macOS keychain, so
    // nothing to follow there; the name echoes Docker's `credHelpers`.
    #[arg(long, value_name = "NAME")]
    credential_helper: Option<String>,
    /// Registry scheme: https, http, or auto (http for loopback and private addresses).
    #[arg(long, default_value = "auto", value_parser = parse_scheme)]
    scheme: Scheme,
    /// The registry, `HOST[:PORT]`.
    server: String,
}

pub async fn run(app_root: &Path, command: RegistryCommand) -> Result<i32> {
    let credentials = Credentials::open(app_root);
    match command {
        RegistryCommand::Login(args) => {
            let server = crate::image::normalize_registry(&args.server)?;
            let username = match args.username {
                Some(user) => user,
                None if args.password_stdin => {
                    return Err("--password-stdin needs --username".into());
                }
                None => prompt("Username: ", true)?,
            };
            let password = if args.password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                line.trim_end_matches(['\n', '\r']).to_string()
            } else {
                prompt("Password: ", false)?
            };
            check_login(&server, args.scheme, &username, &password).await?;
            match &args.credential_helper {
                Some(helper) => {
                    credentials
                        .store_in_helper(helper, &server, &username, &password)
                        .await?
                }
                None => credentials.store(&server, &username, &password)?,
            }
            println!("Login succeeded");
        }
        RegistryCommand::Logout { server } => {
            let server = crate::image::normalize_registry(&server)?;
            if !credentials.remove(&server).await? {
                return Err(crate::image::Error::NotLoggedIn(server).into());
            }
        }
        RegistryCommand::List(args) => {
            let logins = credentials.list().await?;
            let records = || -> Vec<_> {
                logins
                    .iter()
                    .map(|(registry, username)| {
                        serde_json::json!({ "registry": registry, "username": username })
                    })
                    .collect()
            };
            if args.quiet {
                for (registry, _) in &logins {
                    println!("{registry}");
                }
            } else if let ListFormat::Json = args.format {
                print_json(&records())?;
            } else if let ListFormat::Template(template) = &args.format {
                print_template(template, &records(), None, &[])?;
            } else {
                let header = ["REGISTRY", "USERNAME"].map(String::from);
                let rows = logins.iter().map(|(r, u)| [r.clone(), u.clone()]);
                print_table(std::iter::once(header).chain(rows));
            }
        }
    }
    Ok(0)
}

/// Asks on the terminal; the password without echo.
fn prompt(question: &str, echo: bool) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(
            "no terminal to ask for credentials on; use --username and --password-stdin".into(),
        );
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let saved = termios::tcgetattr(&stdin)?;
    if !echo {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if !echo {
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &saved)?;
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
