//! Asking the person at the terminal before a change: the answer read from stdin, and a
//! refusal that says how to go on when there is no terminal to ask.

use std::io::{BufRead, IsTerminal};

use super::common::CliError;

/// Prints `prompt` on stderr and goes on only when the line typed is `answer`. Without a
/// terminal, refuses with `without_terminal`; with another answer, with `declined`.
pub(crate) fn confirm(
    prompt: &str,
    answer: &str,
    without_terminal: String,
    declined: &str,
) -> Result<(), CliError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::Refused(without_terminal));
    }
    eprint!("{prompt}");
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    if line.trim() == answer {
        Ok(())
    } else {
        Err(CliError::Refused(declined.to_owned()))
    }
}
