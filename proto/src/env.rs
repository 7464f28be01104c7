//! Configuration from environment variables, by one set of rules for every
//! program (daemon, CLI, shim, MCP server): an empty variable counts as unset;
//! booleans are `true`/`1` or `false`/`0` in any case; seconds are positive
//! whole numbers; anything else is an error naming the variable, so a typo
//! such as `AZBROKER_NO_AUTOSTART=yes` is reported instead of ignored.
//!
//! Part of the contract because a client's chain spec is computed from its
//! environment by these rules.

/// A variable lookup: the process environment or, in tests and for a chain
/// computed on someone else's behalf, any function from name to value.
pub struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl<'a> Vars<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Vars<'a> {
        Vars(lookup)
    }

    /// The raw lookup, for readers with rules of their own (the tools' specs).
    pub fn lookup(&self) -> &'a dyn Fn(&str) -> Option<String> {
        self.0
    }

    /// A non-empty value, or `None`. An empty (or blank) variable counts as unset.
    pub fn text(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    /// `true`/`1` are true; `false`/`0`/empty/unset are false (any case).
    pub fn boolean(&self, name: &'static str) -> Result<bool, EnvError> {
        let Some(raw) = (self.0)(name) else {
            return Ok(false);
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" | "" => Ok(false),
            _ => Err(EnvError {
                variable: name,
                why: format!("{raw:?} is not a boolean: use true, false, 1 or 0"),
            }),
        }
    }

    /// A positive number of seconds, or `None` when unset or empty.
    pub fn seconds(&self, name: &'static str) -> Result<Option<u32>, EnvError> {
        match self.text(name) {
            None => Ok(None),
            Some(raw) => match raw.trim().parse::<u32>() {
                Ok(secs) if secs > 0 => Ok(Some(secs)),
                _ => Err(EnvError {
                    variable: name,
                    why: format!("{raw:?} is not a positive number of seconds"),
                }),
            },
        }
    }
}

/// The process environment as a lookup (non-UTF-8 values count as unset).
pub fn process(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A boolean switch of this process's environment.
pub fn boolean(name: &'static str) -> Result<bool, EnvError> {
    Vars::new(&process).boolean(name)
}

/// Seconds from this process's environment, `None` when unset.
pub fn seconds(name: &'static str) -> Result<Option<u32>, EnvError> {
    Vars::new(&process).seconds(name)
}

/// A variable holds a value that cannot be used; says which and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    pub variable: &'static str,
    pub why: String,
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.variable, self.why)
    }
}

impl std::error::Error for EnvError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: PartialEq + std::fmt::Debug>(
        value: Option<&str>,
        read: impl Fn(&Vars) -> T,
        expected: T,
    ) {
        let lookup = move |_: &str| value.map(str::to_string);
        assert_eq!(read(&Vars::new(&lookup)), expected, "{value:?}");
    }

    #[test]
    fn booleans_follow_one_rule_and_junk_names_the_variable() {
        for (value, expected) in [
            (None, Ok(false)),
            (Some(""), Ok(false)),
            (Some("0"), Ok(false)),
            (Some("FALSE"), Ok(false)),
            (Some("1"), Ok(true)),
            (Some(" True "), Ok(true)),
        ] {
            check(value, |vars| vars.boolean("X"), expected);
        }
        let error = Vars::new(&|_| Some("yes".into()))
            .boolean("AZBROKER_NO_AUTOSTART")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "AZBROKER_NO_AUTOSTART=\"yes\" is not a boolean: use true, false, 1 or 0"
        );
    }

    #[test]
    fn seconds_are_positive_whole_numbers() {
        check(None, |vars| vars.seconds("S"), Ok(None));
        check(Some(" "), |vars| vars.seconds("S"), Ok(None));
        check(Some("30"), |vars| vars.seconds("S"), Ok(Some(30)));
        for junk in ["0", "-1", "1.5", "soon"] {
            let lookup = move |_: &str| Some(junk.to_string());
            let error = Vars::new(&lookup).seconds("S").unwrap_err();
            assert_eq!(error.variable, "S");
            assert!(error.why.contains("positive number of seconds"), "{error}");
        }
    }
}
