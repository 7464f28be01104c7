//! Which `az` command this is, and the flags of `az account get-access-token`
//! in every form the Azure SDKs and the Azure MCP Server use: `--resource R`
//! or `--scope S...`, `--tenant/-t T`, `--subscription S`, `--output/-o
//! json|jsonc|none`, `--opt=value`, in any order. Parsed by hand: a handful of
//! flags, and anything the shim does not answer itself goes to the real CLI.

use std::collections::VecDeque;
use std::ffi::OsString;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A token request the shim answers from the broker.
    Token(TokenArgs),
    /// The real Azure CLI's job; the text names what, for the error when there is none.
    PassThrough(String),
    /// A usage error, reported as the Azure CLI reports it: `ERROR: <text>`, exit code.
    Usage(String, u8),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TokenArgs {
    pub resource: Option<String>,
    /// `--scope` values; a repeated `--scope` replaces the earlier ones, as in the CLI.
    pub scopes: Vec<String>,
    pub tenant: Option<String>,
    pub subscription: Option<String>,
    /// `--output none`: acquire, print nothing.
    pub quiet: bool,
}

pub fn parse(args: &[OsString]) -> Parsed {
    let Some(args) = args
        .iter()
        .map(|a| a.to_str())
        .collect::<Option<Vec<&str>>>()
    else {
        return Parsed::PassThrough("a command with arguments that are not UTF-8".into());
    };
    match args.as_slice() {
        ["account", "get-access-token", rest @ ..] => parse_token(rest),
        [] => Parsed::PassThrough("'az' without a command".into()),
        [group, ..] if group.starts_with('-') => Parsed::PassThrough(format!("'az {group}'")),
        [group, command, ..] if !command.starts_with('-') => {
            Parsed::PassThrough(format!("'az {group} {command}'"))
        }
        [group, ..] => Parsed::PassThrough(format!("'az {group}'")),
    }
}

fn parse_token(rest: &[&str]) -> Parsed {
    let mut queue: VecDeque<String> = rest.iter().map(|s| s.to_string()).collect();
    let mut parsed = TokenArgs::default();
    while let Some(mut arg) = queue.pop_front() {
        if arg.starts_with("--") {
            if let Some((name, value)) = arg.split_once('=') {
                queue.push_front(value.to_string());
                arg = name.to_string();
            }
        }
        match arg.as_str() {
            "--resource" => match value(&mut queue, "--resource") {
                Ok(v) => parsed.resource = Some(v),
                Err(usage) => return usage,
            },
            "--scope" => {
                parsed.scopes.clear();
                while queue.front().is_some_and(|next| !next.starts_with('-')) {
                    parsed.scopes.extend(queue.pop_front());
                }
            }
            "--tenant" | "-t" => match value(&mut queue, "--tenant/-t") {
                Ok(v) => parsed.tenant = Some(v),
                Err(usage) => return usage,
            },
            "--subscription" => match value(&mut queue, "--subscription") {
                Ok(v) => parsed.subscription = Some(v),
                Err(usage) => return usage,
            },
            "--output" | "-o" => match value(&mut queue, "--output/-o") {
                Ok(format) => match format.as_str() {
                    "json" | "jsonc" => parsed.quiet = false,
                    "none" => parsed.quiet = true,
                    "table" | "tsv" | "yaml" | "yamlc" => {
                        return Parsed::PassThrough(format!(
                            "'az account get-access-token --output {format}'"
                        ))
                    }
                    other => {
                        return Parsed::Usage(
                            format!(
                                "argument --output/-o: invalid choice: '{other}' (choose from \
                                 'json', 'jsonc', 'none', 'table', 'tsv', 'yaml', 'yamlc')"
                            ),
                            2,
                        )
                    }
                },
                Err(usage) => return usage,
            },
            // Logging switches of every az command; nothing to log here.
            "--debug" | "--verbose" | "--only-show-errors" => {}
            other => {
                return Parsed::PassThrough(format!("'az account get-access-token' with '{other}'"))
            }
        }
    }
    if parsed.resource.is_some() && !parsed.scopes.is_empty() {
        return Parsed::Usage(
            "resource and scopes can't be provided at the same time.".into(),
            1,
        );
    }
    if parsed.subscription.is_some() && parsed.tenant.is_some() {
        return Parsed::Usage(
            "Please specify only one of subscription and tenant, not both".into(),
            1,
        );
    }
    Parsed::Token(parsed)
}

/// The value after an option, which argparse refuses when missing or when it
/// looks like another option.
fn value(queue: &mut VecDeque<String>, option: &str) -> Result<String, Parsed> {
    match queue.front() {
        Some(next) if !next.starts_with('-') => Ok(queue.pop_front().expect("front exists")),
        _ => Err(Parsed::Usage(
            format!("argument {option}: expected one argument"),
            2,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Parsed {
        let args: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        parse(&args)
    }

    fn token(line: &str) -> TokenArgs {
        match parse_str(line) {
            Parsed::Token(args) => args,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn every_sdk_form_is_a_token_request() {
        // Azure MCP Server (.NET), Python, JS, Go, Java.
        let mcp = token(
            "account get-access-token --output json --resource https://management.azure.com/",
        );
        assert_eq!(
            mcp.resource.as_deref(),
            Some("https://management.azure.com/")
        );
        let python = token(
            "account get-access-token --output json --resource https://vault.azure.net --tenant t1",
        );
        assert_eq!(python.tenant.as_deref(), Some("t1"));
        // The Rust crate: scopes, -o, a quoted subscription (the shell removed the quotes).
        let rust =
            token("account get-access-token -o json --scope https://a/.default --subscription sub");
        assert_eq!(rust.scopes, ["https://a/.default"]);
        assert_eq!(rust.subscription.as_deref(), Some("sub"));
        // --opt=value, flags in any order, several scopes, a repeated --scope replaces.
        let mixed =
            token("account get-access-token -t t2 --scope x y --output=json --scope=a b --debug");
        assert_eq!(mixed.scopes, ["a", "b"]);
        assert_eq!(mixed.tenant.as_deref(), Some("t2"));
        assert!(token("account get-access-token -o none").quiet);
        assert_eq!(token("account get-access-token"), TokenArgs::default());
    }

    #[test]
    fn other_commands_and_forms_go_to_the_real_cli() {
        for line in [
            "",
            "login",
            "account show",
            "--version",
            "account get-access-token --query accessToken",
            "account get-access-token -o tsv",
            "account get-access-token --help",
        ] {
            assert!(
                matches!(parse_str(line), Parsed::PassThrough(_)),
                "{line:?}"
            );
        }
        use std::os::unix::ffi::OsStringExt;
        let not_utf8 = vec![OsString::from("account"), OsString::from_vec(vec![0xff])];
        assert!(matches!(parse(&not_utf8), Parsed::PassThrough(_)));
    }

    #[test]
    fn usage_errors_read_like_the_cli() {
        let cases = [
            ("account get-access-token --tenant", "argument --tenant/-t: expected one argument", 2),
            ("account get-access-token --resource --tenant t", "argument --resource: expected one argument", 2),
            (
                "account get-access-token -o xml",
                "argument --output/-o: invalid choice: 'xml' (choose from 'json', 'jsonc', 'none', 'table', 'tsv', 'yaml', 'yamlc')",
                2,
            ),
            ("account get-access-token --resource r --scope s", "resource and scopes can't be provided at the same time.", 1),
            ("account get-access-token --tenant t --subscription s", "Please specify only one of subscription and tenant, not both", 1),
        ];
        for (line, message, code) in cases {
            assert_eq!(
                parse_str(line),
                Parsed::Usage(message.into(), code),
                "{line}"
            );
        }
    }
}
