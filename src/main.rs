//! The `zenlayer-gateway` binary: parse the command line, load settings,
//! start telemetry, run the chosen command.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use zenlayer_gateway::settings::{
    DatabaseSettings, Environment, Settings, Source, TelemetrySettings,
};
use zenlayer_gateway::{database, shutdown, startup::Application, telemetry};

/// A call allocates and frees many small buffers across threads (HTTP/2
/// frames, JSON, SQL parameters); glibc's allocator spent about a third of
/// the gateway's CPU on them in the benchmark's profile. With mimalloc the
/// benchmark's best rate rose by a sixth and the CPU per call fell by a
/// quarter. Built without transparent huge pages (`no_thp`): with them its
/// resident memory under load was about 75 MiB, without them about 45 MiB,
/// for no CPU the benchmark could tell apart (README, "Benchmark").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run everything locally: a throwaway PostgreSQL (unless DATABASE_URL is
    /// set), the Zenlayer simulator with sample disks, and the gateway.
    Dev,
    /// Run only the Zenlayer simulator (for staging): it accepts the
    /// credential in ZENLAYER_ACCESS_KEY_ID/ZENLAYER_ACCESS_KEY_PASSWORD or
    /// ZENLAYER_ACCESS_TOKEN and starts with the sample disks.
    Simulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Mint a development token signed with the key `dev` prints, for a
    /// subject and roles of your choosing. Prints the token.
    Token(TokenArgs),
    /// Stop every release on every replica (within a second) until
    /// `unfreeze`; `freeze status` says whether releases are frozen. Runs
    /// with DATABASE_URL, a login that is a member of release_operator.
    Freeze {
        #[command(subcommand)]
        command: Option<FreezeCommand>,
        /// Why (an incident, a change freeze): shown to every refused caller.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume releases after a freeze.
    Unfreeze {
        /// Why releases may resume.
        #[arg(long)]
        reason: String,
    },
    /// The audit trail: export it for SIEMs, check its verifiable log,
    /// prove a call is in it, or make the log's signing key. Runs with
    /// DATABASE_URL (an audit_reader login is enough: see README).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum FreezeCommand {
    /// Whether releases are frozen, since when, by whom and why.
    Status,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the log from the rows and check it against every stored
    /// checkpoint and every one given; exits non-zero naming the first leaf
    /// that differs and the kind of break.
    Verify {
        /// A signed checkpoint kept outside the database (repeatable).
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// A verifier key of the log (`audit keygen` printed it);
        /// repeatable, for checkpoints signed before and after a rotation.
        #[arg(long = "public-key")]
        public_keys: Vec<PathBuf>,
    },
    /// Print, as JSON, the inclusion proofs of one call's events against
    /// the newest checkpoint.
    Prove {
        /// The call's audit id.
        audit_id: String,
        /// A verifier key of the log (repeatable): the proof is against the
        /// newest checkpoint one of them verifies. Without one, against the
        /// newest stored, unverified.
        #[arg(long = "public-key")]
        public_keys: Vec<PathBuf>,
    },
    /// Write a new checkpoint signing key to FILE and print its verifier key.
    Keygen {
        /// The log's name, the checkpoints' origin line (e.g. a host/path).
        #[arg(long)]
        origin: String,
        /// Where to write the private key (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write audit events from DATABASE_URL to standard output as JSON
    /// lines, in commit order, each with its cursor (`log_index`).
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// `ocsf` (OCSF 1.8 API Activity) or `jsonl` (the trail's own rows).
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// Start at the first event recorded at or after this RFC 3339 time
    /// (e.g. 2026-12-01T00:00:00Z).
    #[arg(long, conflicts_with = "after", value_parser = parse_time)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Start after this cursor: the `log_index` (jsonl) or
    /// `metadata.sequence` (ocsf) of the last event already taken.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    after: Option<i64>,
    /// Keep writing new events as they are recorded, until SIGTERM or SIGINT.
    #[arg(long)]
    follow: bool,
    /// With --follow, how long to wait at the end of the log before
    /// looking again.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    poll_interval_ms: u64,
    /// Events read per query.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    page_size: i64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Ocsf,
    Jsonl,
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|e| format!("not an RFC 3339 time such as 2026-12-01T00:00:00Z: {e}"))
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The PEM signing key written by `dev`.
    #[arg(long)]
    signing_key: PathBuf,
    /// `sub`: who the token speaks for.
    #[arg(long)]
    subject: String,
    /// A role to grant (repeat for several).
    #[arg(long = "role")]
    roles: Vec<String>,
    #[arg(long, default_value = zenlayer_gateway::dev::DEV_ISSUER)]
    issuer: String,
    #[arg(long, default_value = "zenlayer-gateway")]
    audience: String,
    /// The claim path roles go under (as JWT_ROLES_CLAIM reads it).
    #[arg(long, default_value = "roles")]
    roles_claim: String,
    /// Lifetime in minutes.
    #[arg(long, default_value_t = 60)]
    minutes: u64,
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
            let telemetry = telemetry::init(&settings.telemetry)?;
            let served = serve(settings).await;
            telemetry.shutdown();
            served
        }
        Command::Migrate => {
            let database = DatabaseSettings::load(&source)?;
            let telemetry = telemetry::init(&TelemetrySettings::load(&source)?)?;
            let migrated = migrate(&database).await;
            telemetry.shutdown();
            migrated
        }
        Command::Dev => zenlayer_gateway::dev::run(&source).await,
        Command::Simulator { listen } => run_simulator(&source, listen).await,
        Command::Token(args) => mint_token(args),
        Command::Audit { command } => audit_command(&source, command).await,
        Command::Freeze { command, reason } => {
            use zenlayer_gateway::freeze::FreezeAction;
            let pool = audit_pool(&source).await?;
            match (command, reason) {
                (Some(FreezeCommand::Status), _) => freeze_status(&pool).await,
                (None, Some(reason)) => flip(&pool, FreezeAction::Freeze, &reason).await,
                (None, None) => {
                    anyhow::bail!("freeze needs --reason \"…\": every refused caller is told it")
                }
            }
        }
        Command::Unfreeze { reason } => {
            let pool = audit_pool(&source).await?;
            flip(
                &pool,
                zenlayer_gateway::freeze::FreezeAction::Unfreeze,
                &reason,
            )
            .await
        }
    }
}

async fn audit_command(source: &dyn Source, command: AuditCommand) -> anyhow::Result<()> {
    use zenlayer_gateway::trail::commands;
    match command {
        AuditCommand::Keygen { origin, out } => commands::generate_key(&origin, &out),
        AuditCommand::Export(args) => export(source, args).await,
        AuditCommand::Verify {
            checkpoints,
            public_keys,
        } => {
            let pool = audit_pool(source).await?;
            commands::verify_log(&pool, &checkpoints, &public_keys).await
        }
        AuditCommand::Prove {
            audit_id,
            public_keys,
        } => {
            let pool = audit_pool(source).await?;
            commands::prove_call(&pool, &audit_id, &public_keys).await
        }
    }
}

async fn flip(
    pool: &sqlx::PgPool,
    action: zenlayer_gateway::freeze::FreezeAction,
    reason: &str,
) -> anyhow::Result<()> {
    // As the table's check says, before asking it: a blank or overlong
    // reason is the operator's to mend, not a missing role.
    let length = reason.chars().count();
    if reason.trim().is_empty() || length > 1024 {
        anyhow::bail!(
            "--reason must say why, in 1 to 1024 characters (it is recorded, and every refused caller sees it); this one has {length}"
        );
    }
    let mut db = pool.acquire().await?;
    let record = zenlayer_gateway::freeze::record_freeze(&mut db, action, reason)
        .await
        .context(
            "record it in audit.release_freezes (is this login a member of release_operator?)",
        )?;
    println!(
        "{} by {} at {}: {}",
        match action {
            zenlayer_gateway::freeze::FreezeAction::Freeze => "releases frozen",
            zenlayer_gateway::freeze::FreezeAction::Unfreeze => "releases resumed",
        },
        record.operator,
        record.recorded_at.to_rfc3339(),
        record.reason
    );
    Ok(())
}

async fn freeze_status(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    use zenlayer_gateway::freeze::{FreezeState, current};
    let mut db = pool.acquire().await?;
    match FreezeState::of(current(&mut db).await?) {
        FreezeState::Frozen(f) => println!(
            "frozen since {} by {}: {}",
            f.since.to_rfc3339(),
            f.operator,
            f.reason
        ),
        FreezeState::Open | FreezeState::Unknown => println!("not frozen: releases go ahead"),
    }
    Ok(())
}

/// DATABASE_URL, for the commands that read the audit trail.
async fn audit_pool(source: &dyn Source) -> anyhow::Result<sqlx::PgPool> {
    let database = DatabaseSettings::load(source)?;
    sqlx::PgPool::connect_with(database.connect_options()?)
        .await
        .context("connect to DATABASE_URL")
}

async fn export(source: &dyn Source, args: ExportArgs) -> anyhow::Result<()> {
    use zenlayer_gateway::export::{ExportOptions, Format, Start};
    let database = DatabaseSettings::load(source)?;
    // Standard output carries the events: logs go to standard error.
    telemetry::init_on_stderr(&TelemetrySettings::load(source)?)?;
    let options = ExportOptions {
        format: match args.format {
            ExportFormat::Ocsf => Format::Ocsf,
            ExportFormat::Jsonl => Format::Jsonl,
        },
        start: match (args.since, args.after) {
            (Some(since), _) => Start::Since(since),
            (None, Some(after)) => Start::After(after),
            (None, None) => Start::Beginning,
        },
        follow: args.follow,
        page_size: args.page_size,
        poll_interval: std::time::Duration::from_millis(args.poll_interval_ms),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let last = zenlayer_gateway::export::export(
        &database,
        &options,
        &mut out,
        shutdown::signal_received(),
    )
    .await?;
    tracing::info!(last_cursor = last, "audit export stopped");
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown::signal_received()).await
}

async fn migrate(database: &DatabaseSettings) -> anyhow::Result<()> {
    // Migrations may run long: no statement timeout here.
    let pool = sqlx::PgPool::connect_with(database.connect_options()?)
        .await
        .context("connect to DATABASE_URL")?;
    database::migrate(&pool).await.context("apply migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}

fn mint_token(args: TokenArgs) -> anyhow::Result<()> {
    use zenlayer_gateway::auth::dev_keys::{DevSigningKey, TokenClaims};
    let pem = std::fs::read(&args.signing_key)
        .with_context(|| format!("read {}", args.signing_key.display()))?;
    let key = DevSigningKey::from_pem(&pem)?;
    let token = key.mint(&TokenClaims {
        issuer: args.issuer,
        audience: args.audience,
        subject: args.subject,
        roles: args.roles,
        roles_claim: args.roles_claim,
        lifetime: std::time::Duration::from_secs(args.minutes * 60),
    })?;
    println!("{token}");
    Ok(())
}

async fn run_simulator(source: &dyn Source, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    use zenlayer_gateway::simulator::{self, Credential, SimulatorConfig};
    let telemetry = telemetry::init(&TelemetrySettings::load(source)?)?;
    let mut credentials = Vec::new();
    if let (Some(id), Some(password)) = (
        source.get("ZENLAYER_ACCESS_KEY_ID"),
        source.get("ZENLAYER_ACCESS_KEY_PASSWORD"),
    ) {
        credentials.push(Credential::AccessKey { id, password });
    }
    if let Some(token) = source.get("ZENLAYER_ACCESS_TOKEN") {
        credentials.push(Credential::Token(token));
    }
    anyhow::ensure!(
        !credentials.is_empty(),
        "set ZENLAYER_ACCESS_KEY_ID and ZENLAYER_ACCESS_KEY_PASSWORD, or ZENLAYER_ACCESS_TOKEN, for the simulator to accept"
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let handle = simulator::spawn(
        SimulatorConfig {
            credentials,
            disks: simulator::sample_disks(),
            release_takes: simulator::STAND_IN_RELEASE_TAKES,
        },
        listener,
    )
    .await?;
    tracing::info!(url = %handle.base_url(), "Zenlayer simulator listening");
    shutdown::signal_received().await;
    handle.shutdown();
    telemetry.shutdown();
    Ok(())
}
