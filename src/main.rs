//! The `zenlayer-gateway` binary: parse the command line, load settings,
//! start telemetry, run the chosen command.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use zenlayer_gateway::settings::{DatabaseSettings, Environment, Settings, TelemetrySettings};
use zenlayer_gateway::{database, shutdown, startup::Application, telemetry};

/// The one audited door through which internal services may release
/// Zenlayer cloud disks: gRPC in, JWT-authorized, recorded in PostgreSQL,
/// forwarded to Zenlayer's API signed with ZC2-HMAC-SHA256.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A file of KEY=value settings; environment variables override it.
    #[arg(long, env = "GATEWAY_CONFIG_FILE", global = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC in production. Settings come from the environment (see README).
    Serve,
    /// Apply the embedded database migrations to DATABASE_URL and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("start the async runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Before telemetry is up, the only place left to say it is stderr.
            eprintln!("zenlayer-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let source = match &cli.config {
        Some(path) => Environment::with_file(path)?,
        None => Environment::process(),
    };
    match cli.command {
        Command::Serve => {
            let settings = Settings::load(&source)?;
            telemetry::init(&settings.telemetry);
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown::signal_received()).await
        }
        Command::Migrate => {
            let database = DatabaseSettings::load(&source)?;
            telemetry::init(&TelemetrySettings::load(&source)?);
            let pool = database.pool()?;
            database::migrate(&pool).await.context("apply migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}
