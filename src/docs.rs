//! Shell completions and the man page, generated from the clap definitions in
//! [`crate::cli`], so that they never disagree with `--help`.

use clap::CommandFactory;

use crate::cli::Cli;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "slipway", &mut out);
    out
}

/// The man page, in roff: the synopsis, every global option, and every subcommand.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let command = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(command).render(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let text = String::from_utf8(completions(shell)).unwrap();
            assert!(text.contains("rollback"), "{shell}");
            assert!(text.contains("completions"), "{shell}");
        }
    }
}
