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

/// The man page, in roff: the synopsis, every global option, and every subcommand
/// with its arguments, on one page (there are no per-subcommand pages to refer to).
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut command = Cli::command();
    command.build();
    let man = clap_mangen::Man::new(command.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        render_command(&mut out, &["slipway"], sub);
    }
    man.render_extra_section(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// One subcommand (and its own subcommands): usage, what it does, its arguments.
fn render_command(out: &mut Vec<u8>, parents: &[&str], command: &clap::Command) {
    let mut path = parents.to_vec();
    path.push(command.get_name());
    let mut usage = path.join(" ");
    for arg in command.get_positionals() {
        let name = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
        usage.push(' ');
        usage.push_str(&name);
    }
    if command
        .get_arguments()
        .any(|a| !a.is_positional() && !a.is_global_set() && !is_builtin(a))
    {
        usage.push_str(" [OPTIONS]");
    }
    if command.has_subcommands() {
        usage.push_str(" COMMAND");
    }
    out.extend_from_slice(format!(".SS \"{}\"\n", roff(&usage)).as_bytes());
    if let Some(about) = command.get_long_about().or(command.get_about()) {
        out.extend_from_slice(format!("{}\n", roff(&about.to_string())).as_bytes());
    }
    for arg in command.get_arguments() {
        if arg.is_global_set() || is_builtin(arg) {
            continue;
        }
        let name = match (arg.get_long(), arg.get_short()) {
            (Some(long), Some(short)) => {
                format!("\\fB\\-{short}\\fR, \\fB\\-\\-{}\\fR", roff(long))
            }
            (Some(long), None) => format!("\\fB\\-\\-{}\\fR", roff(long)),
            _ => format!(
                "\\fI{}\\fR",
                arg.get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| arg.get_id().to_string().to_uppercase())
            ),
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        if arg.is_positional() && help.is_empty() {
            continue;
        }
        let value = match arg.get_value_names().and_then(|v| v.first()) {
            Some(v) if !arg.is_positional() && arg.get_action().takes_values() => {
                format!(" \\fI{v}\\fR")
            }
            _ => String::new(),
        };
        let name = format!("{name}{value}");
        out.extend_from_slice(format!(".TP\n{name}\n{}\n", roff(&help)).as_bytes());
    }
    for sub in command.get_subcommands() {
        if sub.get_name() != "help" {
            render_command(out, &path, sub);
        }
    }
}

fn is_builtin(arg: &clap::Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

/// Text for roff: backslashes and dashes escaped, no line starting with a control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    escaped
        .lines()
        .map(|l| {
            if l.starts_with(['.', '\'']) {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
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

    #[test]
    fn roff_escapes_dashes_and_leading_dots() {
        assert_eq!(roff("--to ID"), "\\-\\-to ID");
        assert_eq!(roff(".hidden"), "\\&.hidden");
    }
}
