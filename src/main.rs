//! Parse, run, turn the error into an exit code.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use serde_json::json;

use slipway::audit::Actor;
use slipway::cli::{Cli, Command, DbCommand};
use slipway::config::Config;
use slipway::error::{Error, ExitClass};
use slipway::interrupt::Interrupt;
use slipway::layout::ReleaseId;
use slipway::report::{Format, Reporter};
use slipway::run::{Context, Outcome};
use slipway::{commands, db, deploy, drill, rollback};

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
            if reporter.format() == Format::Json {
                reporter.result(
                    &error.to_string(),
                    class.name(),
                    json!({ "error": error.to_string() }),
                );
            }
            eprintln!("slipway: error: {error}");
            ExitCode::from(class.code() as u8)
        }
    }
}

async fn run(cli: Cli, reporter: Arc<Reporter>) -> Result<Outcome, Error> {
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
                        "{}: configuration of stage {} is valid ({} host(s))",
                        config.file.display(),
                        stage.name,
                        stage.hosts.len()
                    ),
                    data: json!({ "valid": true }),
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
        Command::Drill { stage } => drill::drill(config.stage(stage)?, &ctx).await,
        Command::Unlock { stage } => commands::unlock(config.stage(stage)?, &ctx).await,
        Command::Log { stage, since } => {
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
