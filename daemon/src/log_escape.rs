//! Text a client chose (its name, tenant, authority, client id) or a tool
//! printed (error reasons), made safe for a log line.
//!
//! The log is line-oriented: a client name holding a newline forged whole log
//! lines, and terminal escapes could rewrite what a reader sees. [`Escaped`]
//! shows control characters, backslashes and invisible format characters the
//! way Rust's `{:?}` does (`\n`, `\u{202e}`), without the quotes, and allocates
//! nothing, so it costs nothing on a line that is filtered out.

use std::fmt::{self, Display, Write};

/// Displays `T` with control and invisible characters escaped. Log
/// client-controlled fields as `field = %Escaped(&value)`.
pub struct Escaped<T>(pub T);

impl<T: Display> Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{}", self.0)
    }
}

/// Writes through to the formatter, escaping character by character.
struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                // Quotes are harmless on one line and common in error text.
                '"' | '\'' => self.0.write_char(c)?,
                c => write!(self.0, "{}", c.escape_debug())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_cannot_start_a_new_log_line() {
        let name = "evil\n2026-01-01T00:00:00Z  INFO forged\r";
        let shown = Escaped(name).to_string();
        assert_eq!(shown, r"evil\n2026-01-01T00:00:00Z  INFO forged\r");
        assert!(!shown.contains('\n'));
    }

    #[test]
    fn escapes_and_invisible_characters_are_shown() {
        assert_eq!(
            Escaped("a\u{1b}[2Jb\u{202e}c\\d\u{0}").to_string(),
            r"a\u{1b}[2Jb\u{202e}c\\d\0"
        );
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        let text = "azbroker-cli tenant 'contoso.onmicrosoft.com' at https://login.microsoftonline.com (ü)";
        assert_eq!(Escaped(text).to_string(), text);
        assert_eq!(Escaped(42).to_string(), "42");
    }
}
