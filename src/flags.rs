//! The one command-line tokenizer, for the server's settings, the shell client
//! and the bench: `--name value`, `--name=value`, switches, short names
//! (`-h`), positional arguments in any order, and `--` to end the flags. What
//! a flag means is the caller's business; the tokenizer only knows which names
//! exist and what each takes, and its errors name the flag.

use std::fmt;

/// What an option takes after its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takes {
    /// A value: `--name value` or `--name=value`.
    Value,
    /// Nothing: `--name`.
    Nothing,
    /// A value only when written inline: `--name` or `--name=value`.
    InlineValue,
}

/// One option a command accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opt {
    /// The long name, without `--`.
    pub name: &'static str,
    pub short: Option<char>,
    pub takes: Takes,
}

impl Opt {
    pub const fn value(name: &'static str) -> Opt {
        Opt {
            name,
            short: None,
            takes: Takes::Value,
        }
    }

    pub const fn switch(name: &'static str) -> Opt {
        Opt {
            name,
            short: None,
            takes: Takes::Nothing,
        }
    }

    pub const fn inline_value(name: &'static str) -> Opt {
        Opt {
            name,
            short: None,
            takes: Takes::InlineValue,
        }
    }

    pub const fn short(self, short: char) -> Opt {
        Opt {
            short: Some(short),
            ..self
        }
    }
}

/// `-h`, `--help`.
pub const HELP: Opt = Opt::switch("help").short('h');
/// `-V`, `--version`.
pub const VERSION: Opt = Opt::switch("version").short('V');

/// One piece of a command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Token {
    /// A known option by its long name, with its value if it has one.
    Flag(&'static str, Option<String>),
    Positional(String),
}

/// A command line that cannot be split into known options.
#[derive(Debug, PartialEq, Eq)]
pub enum FlagError {
    /// An option nobody declared, as written (`--bogus`, `-x`).
    Unknown(String),
    NeedsValue(&'static str),
    TakesNoValue(&'static str),
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagError::Unknown(arg) => write!(f, "unknown option '{arg}'"),
            FlagError::NeedsValue(name) => write!(f, "--{name} needs a value"),
            FlagError::TakesNoValue(name) => write!(f, "--{name} takes no value"),
        }
    }
}

impl std::error::Error for FlagError {}

/// The tokens of a command line, in order.
pub struct Tokens<'a> {
    args: std::vec::IntoIter<String>,
    /// The options known, in groups (e.g. common ones and a command's own).
    options: &'a [&'a [Opt]],
    /// After `--`, everything is positional.
    flags_ended: bool,
}

impl<'a> Tokens<'a> {
    pub fn new(args: impl IntoIterator<Item = String>, options: &'a [&'a [Opt]]) -> Self {
        Tokens {
            args: args.into_iter().collect::<Vec<_>>().into_iter(),
            options,
            flags_ended: false,
        }
    }

    fn option(&self, matches: impl Fn(&Opt) -> bool) -> Option<Opt> {
        self.options
            .iter()
            .flat_map(|group| group.iter())
            .find(|opt| matches(opt))
            .copied()
    }

    fn flag(&mut self, opt: Opt, inline: Option<String>) -> Result<Token, FlagError> {
        let value = match (opt.takes, inline) {
            (Takes::Nothing, Some(_)) => return Err(FlagError::TakesNoValue(opt.name)),
            (Takes::Value, None) => Some(self.args.next().ok_or(FlagError::NeedsValue(opt.name))?),
            (_, inline) => inline,
        };
        Ok(Token::Flag(opt.name, value))
    }
}

impl Iterator for Tokens<'_> {
    type Item = Result<Token, FlagError>;

    fn next(&mut self) -> Option<Self::Item> {
        let arg = self.args.next()?;
        if self.flags_ended {
            return Some(Ok(Token::Positional(arg)));
        }
        if arg == "--" {
            self.flags_ended = true;
            return self.next();
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (long, None),
            };
            return Some(match self.option(|opt| opt.name == name) {
                Some(opt) => self.flag(opt, inline),
                None => Err(FlagError::Unknown(format!("--{name}"))),
            });
        }
        let mut chars = arg.chars();
        // `-` alone and negative numbers (`-5`, a JSON payload) are arguments.
        match (chars.next(), chars.next(), chars.next()) {
            (Some('-'), Some(c), None) if !c.is_ascii_digit() => {
                Some(match self.option(|opt| opt.short == Some(c)) {
                    Some(opt) => self.flag(opt, None),
                    None => Err(FlagError::Unknown(arg)),
                })
            }
            (Some('-'), Some(c), Some(_)) if !c.is_ascii_digit() => {
                Some(Err(FlagError::Unknown(arg)))
            }
            _ => Some(Ok(Token::Positional(arg))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMON: &[Opt] = &[Opt::value("url"), HELP];
    const OWN: &[Opt] = &[
        Opt::switch("json"),
        Opt::inline_value("auto"),
        Opt::value("last-n"),
    ];

    fn tokens(line: &str) -> Result<Vec<Token>, FlagError> {
        Tokens::new(line.split_whitespace().map(String::from), &[COMMON, OWN]).collect()
    }

    fn flag(name: &'static str, value: Option<&str>) -> Token {
        Token::Flag(name, value.map(String::from))
    }

    fn arg(a: &str) -> Token {
        Token::Positional(a.to_string())
    }

    #[test]
    fn every_form_in_any_order() {
        assert_eq!(
            tokens("t --url u --last-n=3 -h --json --auto --auto=no -5 - x").unwrap(),
            [
                arg("t"),
                flag("url", Some("u")),
                flag("last-n", Some("3")),
                flag("help", None),
                flag("json", None),
                flag("auto", None),
                flag("auto", Some("no")),
                arg("-5"),
                arg("-"),
                arg("x"),
            ]
        );
        // A value may look like a flag; `--` ends the flags.
        assert_eq!(
            tokens("--last-n -1 -- --json -h").unwrap(),
            [flag("last-n", Some("-1")), arg("--json"), arg("-h")]
        );
        // `--auto value`: the value is not taken, it is an argument.
        assert_eq!(
            tokens("--auto yes").unwrap(),
            [flag("auto", None), arg("yes")]
        );
    }

    #[test]
    fn errors_name_the_flag() {
        for (line, error, text) in [
            (
                "t --nope=1",
                FlagError::Unknown("--nope".into()),
                "unknown option '--nope'",
            ),
            ("-x", FlagError::Unknown("-x".into()), "unknown option '-x'"),
            (
                "-hx",
                FlagError::Unknown("-hx".into()),
                "unknown option '-hx'",
            ),
            (
                "t --url",
                FlagError::NeedsValue("url"),
                "--url needs a value",
            ),
            (
                "--json=yes",
                FlagError::TakesNoValue("json"),
                "--json takes no value",
            ),
        ] {
            let got = tokens(line).unwrap_err();
            assert_eq!(got, error, "{line}");
            assert_eq!(got.to_string(), text);
        }
    }
}
