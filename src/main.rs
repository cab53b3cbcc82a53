//! Parse, run, turn the error into an exit code.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use serde_json::json;

use slipway::audit::Actor;
use std::io::Write;

use slipway::cli::{Cli, Command, DbCommand, RecipesCommand, RolloutCommand};
use slipway::config::Config;
use slipway::error::{Error, ExitClass};
use slipway::interrupt::Interrupt;
use slipway::layout::ReleaseId;
use slipway::report::{Format, Reporter};
use slipway::rollout::command::{self as rollout, Action};
use slipway::run::{Context, Outcome};
use slipway::{commands, db, deploy, docs, drill, init, rollback};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(ExitClass::Usage.code() as u8),
            };
        }
    };
    let reporter = Arc::new(Reporter::new(
        if cli.json {
            Format::Json
        } else {
            Format::Human
        },
        cli.verbose,
        cli.quiet,
    ));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slipway: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli, reporter.clone())) {
        Ok(outcome) => {
            reporter.result(&outcome.human, "ok", outcome.data);
            ExitCode::SUCCESS
        }
        Err(error) => {
            let class = error.class();
            // What a host or a framework printed may carry credentials.
            let text = slipway::redact::scrub(&error.to_string());
            if reporter.format() == Format::Json {
                let mut data = json!({ "error": text });
                if let Some(report) = error.report() {
                    data["report"] = report.clone();
                }
                reporter.result(&text, class.name(), data);
            }
            reporter.finish();
            eprintln!("slipway: error: {}", slipway::report::printable(&text));
            ExitCode::from(class.code() as u8)
        }
    }
}

async fn run(cli: Cli, reporter: Arc<Reporter>) -> Result<Outcome, Error> {
    if let Some(result) = without_config(&cli) {
        return result;
    }
    let config = Config::load(&cli.config)?;
    let command_line = std::env::args()
        .map(|a| a.escape_debug().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let ctx = Context {
        actor: Actor::current(),
        command: command_line,
        dry_run: cli.dry_run,
        lock_wait: cli.lock_wait,
        interrupt: Interrupt::listen(),
        reporter,
    };
    match &cli.command {
        Command::Deploy { stage } => deploy::deploy(config.stage(stage)?, &ctx).await,
        Command::Rollback {
            stage,
            to,
            reason,
            force_schema,
            skip_schema,
        } => {
            let stage = config.stage(stage)?;
            let to = match to {
                Some(t) => {
                    Some(ReleaseId::parse(t).map_err(|m| Error::Usage(format!("--to: {m}")))?)
                }
                None => None,
            };
            if let Some(r) = reason
                && (r.len() > 1000 || r.chars().any(|c| c.is_control()))
            {
                return Err(Error::Usage(
                    "--reason: write one line of at most 1000 characters".into(),
                ));
            }
            rollback::rollback(
                stage,
                &ctx,
                &rollback::Request {
                    to,
                    reason: reason.clone(),
                    schema: db::undo::Options {
                        force_schema: *force_schema,
                        skip_schema: *skip_schema,
                    },
                    rehearsal: false,
                },
            )
            .await
        }
        Command::Releases { stage } => commands::releases(config.stage(stage)?, &ctx).await,
        Command::Status { stage } => commands::status(config.stage(stage)?, &ctx).await,
        Command::Check { stage, config_only } => {
            let stage = config.stage(stage)?;
            if *config_only {
                Ok(Outcome {
                    human: format!(
                        "{}: configuration of stage {} is valid ({} host(s){})",
                        config.file.display(),
                        stage.name,
                        stage.hosts.len(),
                        match &stage.recipe {
                            Some(r) => format!(", recipe {r}"),
                            None => String::new(),
                        }
                    ),
                    data: json!({ "valid": true, "recipe": stage.recipe }),
                })
            } else {
                commands::check(stage, &ctx).await
            }
        }
        Command::Db(DbCommand::Status { stage }) => {
            db::status::status(config.stage(stage)?, &ctx).await
        }
        Command::Db(DbCommand::Restore {
            stage,
            snapshot,
            yes,
        }) => db::status::restore(config.stage(stage)?, &ctx, snapshot, *yes).await,
        Command::Rollout(RolloutCommand::Plan { stage }) => {
            Ok(rollout::show_plan(config.stage(stage)?))
        }
        Command::Rollout(RolloutCommand::Status { stage, key }) => {
            rollout::status(config.stage(stage)?, &ctx, key.as_deref()).await
        }
        Command::Rollout(RolloutCommand::Pause { stage }) => {
            rollout::pause(config.stage(stage)?, &ctx).await
        }
        Command::Rollout(RolloutCommand::Resume { stage }) => {
            rollout::steer(config.stage(stage)?, &ctx, Action::Resume).await
        }
        Command::Rollout(RolloutCommand::Promote { stage, full }) => {
            rollout::steer(config.stage(stage)?, &ctx, Action::Promote { full: *full }).await
        }
        Command::Rollout(RolloutCommand::Abort { stage }) => {
            rollout::steer(config.stage(stage)?, &ctx, Action::Abort).await
        }
        Command::Rollout(RolloutCommand::Retry { stage }) => {
            rollout::steer(config.stage(stage)?, &ctx, Action::Retry).await
        }
        Command::Drill { stage } => drill::drill(config.stage(stage)?, &ctx).await,
        Command::Unlock { stage } => commands::unlock(config.stage(stage)?, &ctx).await,
        Command::Config { stage } => {
            let table = config.show(stage)?;
            let text = toml::to_string_pretty(&table)
                .map_err(|e| Error::Usage(format!("cannot print the configuration: {e}")))?;
            Ok(Outcome {
                human: format!(
                    "# stage {stage} of {}{}: merged, ${{VAR}}s filled in, secrets masked\n{text}",
                    config.file.display(),
                    match &config.stage(stage)?.recipe {
                        Some(r) => format!(" over recipe {r}"),
                        None => String::new(),
                    }
                ),
                data: serde_json::to_value(&table).unwrap_or_default(),
            })
        }
        Command::Init { .. }
        | Command::Recipes { .. }
        | Command::Completions { .. }
        | Command::Man => Err(Error::Usage("this command reads no configuration".into())),
        Command::Log {
            stage,
            verify: true,
            against,
            ..
        } => {
            let saved = match against {
                Some(file) => {
                    let text = std::fs::read_to_string(file)
                        .map_err(|e| Error::Usage(format!("--against {}: {e}", file.display())))?;
                    Some(
                        commands::saved_heads(&text).map_err(|e| {
                            Error::Usage(format!("--against {}: {e}", file.display()))
                        })?,
                    )
                }
                None => None,
            };
            commands::verify_log(config.stage(stage)?, &ctx, saved.as_ref()).await
        }
        Command::Log { stage, since, .. } => {
            let since = match since {
                Some(text) => {
                    Some(commands::parse_since(text, chrono::Utc::now()).map_err(Error::Usage)?)
                }
                None => None,
            };
            commands::log(config.stage(stage)?, &ctx, since).await
        }
    }
}

/// The commands that need no deploy.toml: they run before it is read.
fn without_config(cli: &Cli) -> Option<Result<Outcome, Error>> {
    // A script or a page goes to stdout as it is; with --json, inside the result event.
    let printed = |bytes: std::io::Result<Vec<u8>>| {
        let bytes = bytes.map_err(Error::Io)?;
        if cli.json {
            return Ok(Outcome {
                human: String::new(),
                data: json!({ "text": String::from_utf8_lossy(&bytes) }),
            });
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(&bytes).and_then(|()| out.flush()) {
            // `slipway man | head`: the reader had enough.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(Error::Io(e)),
            _ => {}
        }
        Ok(Outcome {
            human: String::new(),
            data: json!({}),
        })
    };
    Some(match &cli.command {
        Command::Init { force, recipe } => std::env::current_dir()
            .map_err(Error::Io)
            .and_then(|dir| init::run(&cli.config, &dir, *force, recipe.as_deref(), cli.dry_run)),
        Command::Recipes { command: None } => Ok(commands::recipes::list()),
        Command::Recipes {
            command: Some(RecipesCommand::Show { name }),
        } => commands::recipes::show(name),
        Command::Completions { shell } => printed(Ok(docs::completions(*shell))),
        Command::Man => printed(docs::man_page()),
        _ => return None,
    })
}
