//! `spawn_app()`: a gateway on a free port with its own fresh database and
//! its own Zenlayer simulator, and typed gRPC clients to talk to it.

use crate::tokens::{self, KeyServer};
use sqlx::{Connection as _, Executor as _, PgConnection, PgPool};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;
use zenlayer_gateway::ephemeral_postgres::EphemeralPostgres;
use zenlayer_gateway::pb::disk_service_client::DiskServiceClient;
use zenlayer_gateway::pb::{ReleaseDiskRequest, ReleaseDiskResponse};
use zenlayer_gateway::settings::Settings;
use zenlayer_gateway::simulator::{self, SimulatorConfig, SimulatorHandle};
use zenlayer_gateway::startup::Application;

pub const ACCESS_KEY_ID: &str = "AKIDtestgateway";
pub const ACCESS_KEY_PASSWORD: &str = "test-access-key-password-9f8e7d";

/// The server every test creates its database on: `TEST_DATABASE_URL`, or
/// the machine's usual local server.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Everything every gateway in this test binary logged, so tests can check
/// that no secret ever reaches a log line. Printed only if `TEST_LOG` is set.
static CAPTURED_LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

#[derive(Clone, Copy)]
struct CaptureWriter;

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED_LOGS.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_test_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let logs = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(|| CaptureWriter)
            .with_filter(zenlayer_gateway::telemetry::log_spans());
        // As in production without an exporter: no OpenTelemetry layer; the
        // trace id is the caller's or a new one, and `traceparent` is still
        // propagated to the simulator. (Exported spans: the process test in
        // `observability`.)
        let settings = zenlayer_gateway::settings::TelemetrySettings {
            log_format: zenlayer_gateway::settings::LogFormat::Json,
            otlp_endpoint: None,
        };
        let provider =
            zenlayer_gateway::telemetry::tracer_provider(&settings).expect("a tracer provider");
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new(
                "info,zenlayer_gateway=debug",
            ))
            .with(logs)
            .init();
        // The provider (and its propagator) must outlive every test here.
        std::mem::forget(provider);
    });
}

/// The log output captured so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&CAPTURED_LOGS.lock().unwrap()).into_owned()
}

/// A fresh, migrated database on the server at `admin_url`.
pub async fn fresh_database(admin_url: &str) -> String {
    let name = format!("gateway_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(admin_url).await.unwrap_or_else(|e| {
        panic!("cannot reach the test PostgreSQL at {admin_url} ({e}); run the README's test command, which starts one")
    });
    // The name is generated here, never caller input.
    let create = sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#));
    admin
        .execute(create)
        .await
        .expect("create the test database");
    let url = replace_database(admin_url, &name);
    let pool = PgPool::connect(&url)
        .await
        .expect("connect to the test database");
    zenlayer_gateway::database::migrate(&pool)
        .await
        .expect("migrate the test database");
    ensure_gateway_login(&pool).await;
    pool.close().await;
    url
}

/// The login the gateway uses in tests: a member of the `zenlayer_gateway`
/// group role and nothing more, as in production.
pub const GATEWAY_LOGIN: &str = "zenlayer_gateway_test";

async fn ensure_gateway_login(pool: &PgPool) {
    // Roles are cluster-wide and tests run in parallel: creating one that a
    // neighbour just created is fine.
    sqlx::raw_sql(
        "DO $$ BEGIN
            CREATE ROLE zenlayer_gateway_test LOGIN IN ROLE zenlayer_gateway;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$",
    )
    .execute(pool)
    .await
    .expect("create the gateway's test login");
}

fn replace_database(url: &str, name: &str) -> String {
    let mut url = reqwest::Url::parse(url).expect("a database URL");
    url.set_path(name);
    url.to_string()
}

/// A running gateway and everything around it.
#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub simulator: SimulatorHandle,
    pub key_server: KeyServer,
    pub database_url: String,
    pub db: PgPool,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Options for [`spawn_app_with`].
#[derive(Debug, Default)]
pub struct AppOptions {
    /// Settings that override the test defaults.
    pub settings: HashMap<String, String>,
    /// The database server; a fresh database is made on it. Default: shared.
    pub admin_database_url: Option<String>,
    /// Use this (already migrated) database instead of a fresh one, e.g. to
    /// restart a gateway on the data an earlier one left.
    pub database_url: Option<String>,
    /// How long the simulator takes to finish a release (`DELETING` until
    /// then); zero releases at once.
    pub release_takes: Duration,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    init_test_logging();
    let admin_url = options
        .admin_database_url
        .unwrap_or_else(admin_database_url);
    let database_url = match options.database_url {
        Some(url) => url,
        None => fresh_database(&admin_url).await,
    };
    let simulator = spawn_simulator(options.release_takes).await;
    let key_server = KeyServer::start(&[tokens::RSA, tokens::EC, tokens::ED]).await;
    let gateway_url = as_gateway(&database_url);
    let mut values = test_settings(&gateway_url, &simulator, &key_server);
    values.extend(options.settings);
    let settings = Settings::load(&values).expect("valid test settings");
    let app = Application::build(settings)
        .await
        .expect("build the gateway");
    let addr = app.local_addr();
    let admin_addr = app.admin_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let db = PgPool::connect(&database_url)
        .await
        .expect("connect to the test database");
    let app = TestApp {
        addr,
        admin_addr,
        simulator,
        key_server,
        database_url,
        db,
        stop: Some(stop),
        server: Some(server),
    };
    app.start_up_sweep_done().await;
    app
}

/// Settings as [`spawn_app_with`] makes them, over a fresh database, for a
/// test that builds the gateway itself (to see the build refuse them).
pub async fn settings_for_build(changed: &[(&str, &str)]) -> Settings {
    init_test_logging();
    let database_url = fresh_database(&admin_database_url()).await;
    let simulator = spawn_simulator(Duration::ZERO).await;
    let key_server = KeyServer::start(&[tokens::RSA]).await;
    let mut values = test_settings(&as_gateway(&database_url), &simulator, &key_server);
    values.extend(
        changed
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Settings::load(&values).expect("valid test settings")
}

/// `database_url` as the gateway's least-privileged login.
pub fn as_gateway(database_url: &str) -> String {
    let mut url = reqwest::Url::parse(database_url).expect("a database URL");
    url.set_username(GATEWAY_LOGIN).expect("a URL with a host");
    url.to_string()
}

pub async fn spawn_simulator(release_takes: Duration) -> SimulatorHandle {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the simulator");
    let config = SimulatorConfig {
        credentials: vec![
            simulator::Credential::AccessKey {
                id: ACCESS_KEY_ID.to_owned(),
                password: ACCESS_KEY_PASSWORD.to_owned(),
            },
            simulator::Credential::Token("test-bearer-token".to_owned()),
        ],
        disks: simulator::sample_disks(),
        release_takes,
    };
    simulator::spawn(config, listener)
        .await
        .expect("start the simulator")
}

pub fn test_settings(
    database_url: &str,
    simulator: &SimulatorHandle,
    key_server: &KeyServer,
) -> HashMap<String, String> {
    [
        ("JWT_JWKS_URL", key_server.url.as_str()),
        ("JWT_ISSUER", tokens::ISSUER),
        ("JWT_AUDIENCE", tokens::AUDIENCE),
        ("GATEWAY_LISTEN_ADDR", "127.0.0.1:0"),
        ("GATEWAY_ADMIN_ADDR", "127.0.0.1:0"),
        ("DATABASE_URL", database_url),
        ("ZENLAYER_BASE_URL", &simulator.base_url()),
        ("ZENLAYER_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("ZENLAYER_ACCESS_KEY_PASSWORD", ACCESS_KEY_PASSWORD),
        ("ZENLAYER_RETRY_BACKOFF_MS", "10"),
        ("ZENLAYER_TIMEOUT_MS", "3000"),
        ("GATEWAY_HEALTH_CHECK_INTERVAL_MS", "50"),
        ("GATEWAY_SHUTDOWN_GRACE_MS", "5000"),
        ("GATEWAY_LOG_FORMAT", "text"),
        // The follow-up sweeps at start-up and then only when a test asks
        // for it (an interval of its own): its confirmations are events of
        // the log and DescribeDisks of the simulator's, which a test that
        // counts either must not find by chance.
        ("GATEWAY_FOLLOW_UP_INTERVAL_MS", "3600000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl TestApp {
    /// Waits until the follow-up's sweep at start-up has ended: one still
    /// running when the test's first calls are logged would follow them up
    /// too, or not, by chance.
    async fn start_up_sweep_done(&self) {
        eventually(
            Duration::from_secs(20),
            "the follow-up's start-up sweep",
            || async {
                let ended = metric(
                    self,
                    "zenlayer_gateway_follow_up_sweeps_total{result=\"ok\"}",
                )
                .await
                    + metric(
                        self,
                        "zenlayer_gateway_follow_up_sweeps_total{result=\"failed\"}",
                    )
                    .await;
                (ended > 0).then_some(())
            },
        )
        .await;
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .expect("a valid endpoint")
            .connect()
            .await
            .expect("connect to the gateway")
    }

    pub async fn disks(&self) -> DiskServiceClient<Channel> {
        DiskServiceClient::new(self.channel().await)
    }

    /// One ReleaseDisk call on a fresh connection.
    pub async fn release(
        &self,
        call: tonic::Request<ReleaseDiskRequest>,
    ) -> Result<tonic::Response<ReleaseDiskResponse>, tonic::Status> {
        self.disks().await.release_disk(call).await
    }

    pub async fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel().await)
    }

    /// Asks the gateway to stop, as SIGTERM would.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the gateway and waits for it to exit.
    pub async fn shut_down(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        let server = self.server.take().expect("the server is running");
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("the gateway stops within its grace period")
            .expect("the server task did not panic")
    }
}

/// A throwaway PostgreSQL for tests that stop their database on purpose;
/// its blocking start and stop run off the async runtime.
#[derive(Debug)]
pub struct OwnPostgres(Option<EphemeralPostgres>);

impl OwnPostgres {
    pub async fn start() -> Self {
        let server = tokio::task::spawn_blocking(EphemeralPostgres::start)
            .await
            .unwrap();
        Self(Some(server.expect("start a throwaway PostgreSQL")))
    }

    pub fn admin_url(&self) -> String {
        self.0.as_ref().expect("a server").url("postgres")
    }

    pub async fn stop(&mut self) {
        self.blocking(EphemeralPostgres::stop).await;
    }

    pub async fn start_again(&mut self) {
        self.blocking(EphemeralPostgres::start_again).await;
    }

    async fn blocking(&mut self, action: fn(&EphemeralPostgres) -> anyhow::Result<()>) {
        let server = self.0.take().expect("a server");
        let server = tokio::task::spawn_blocking(move || action(&server).map(|()| server))
            .await
            .unwrap();
        self.0 = Some(server.expect("the throwaway PostgreSQL obeys"));
    }
}

/// A release request from an authorized caller.
pub fn request(disk_id: &str) -> Request<ReleaseDiskRequest> {
    let mut request = unauthenticated_request(disk_id);
    request
        .metadata_mut()
        .insert("authorization", tokens::bearer(&tokens::good_token()));
    request
}

pub fn unauthenticated_request(disk_id: &str) -> Request<ReleaseDiskRequest> {
    Request::new(ReleaseDiskRequest {
        disk_id: disk_id.to_owned(),
        idempotency_key: String::new(),
        reason: "CHG-1234 remove leftover volume".to_owned(),
    })
}

/// Asserts code and `ErrorInfo.reason`, and returns the ErrorInfo metadata.
pub fn assert_error(status: &Status, code: Code, reason: &str) -> HashMap<String, String> {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status
        .get_details_error_info()
        .expect("an ErrorInfo detail");
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "zenlayer-gateway");
    info.metadata
}

/// Waits until `probe` yields a value, probing every 10 ms, and returns it;
/// fails the test, naming `what`, if none comes within `timeout`. Every wait
/// in the tests goes through here, so none can hang instead of failing.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until a `ReleaseDisk` has reached the simulator (by then its
/// attempt is recorded and its idempotency key claimed).
pub async fn until_the_release_is_sent(app: &TestApp) {
    eventually(
        Duration::from_secs(10),
        "a ReleaseDisk to reach Zenlayer",
        || async { (app.simulator.release_disk_requests() > 0).then_some(()) },
    )
    .await;
}

/// A gateway whose settings differ from the test defaults by `changed`.
pub async fn spawn_app_with_settings(changed: &[(&str, &str)]) -> TestApp {
    spawn_app_with(AppOptions {
        settings: changed
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    })
    .await
}

/// The owner locks the attempts table, as a long migration or a stuck
/// transaction would: queries still answer, writes there wait. The lock is
/// held until the returned connection is closed.
pub async fn stall_attempts(app: &TestApp) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    let mut owner = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE audit.release_attempts IN ACCESS EXCLUSIVE MODE")
        .execute(&mut owner)
        .await
        .unwrap();
    owner
}

/// The value of one series on the gateway's `/metrics`, 0 when absent.
pub async fn metric(app: &TestApp, series: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", app.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// A second gateway process on `app`'s database and simulator, with
/// `settings` over the test defaults.
pub async fn another_gateway(
    app: &TestApp,
    settings: &[(&str, &str)],
) -> crate::processes::GatewayProcess {
    let mut env = test_settings(
        &as_gateway(&app.database_url),
        &app.simulator,
        &app.key_server,
    );
    env.insert("GATEWAY_LOG_FORMAT".into(), "json".into());
    for (k, v) in settings {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    crate::processes::GatewayProcess::spawn(&env).await
}

/// An advisory lock held from a connection of the test's own, as another
/// replica in the middle of its work holds it. `key` is the SQL expression
/// of the lock's key, as the gateways compute it.
pub struct ReplicaLock {
    db: sqlx::PgConnection,
    key: String,
}

impl ReplicaLock {
    pub async fn hold(database_url: &str, key: String) -> Self {
        use sqlx::Connection as _;
        let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SELECT pg_advisory_lock({key})"
        )))
        .execute(&mut db)
        .await
        .unwrap();
        Self { db, key }
    }

    pub async fn release(mut self) {
        let key = &self.key;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SELECT pg_advisory_unlock({key})"
        )))
        .execute(&mut self.db)
        .await
        .unwrap();
    }
}

/// `database_url` as a login that is only a member of `release_operator`.
pub async fn operator_login(app: &TestApp) -> String {
    login_in(
        &app.db,
        &app.database_url,
        "release_operator_test",
        "release_operator",
    )
    .await
}

/// `database_url` as `login`, a login that is only a member of `group`
/// (made if it does not exist: roles are cluster-wide and tests run in
/// parallel), as README tells teams to make one.
pub async fn login_in(db: &PgPool, database_url: &str, login: &str, group: &str) -> String {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DO $$ BEGIN
            CREATE ROLE {login} LOGIN IN ROLE {group};
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$"
    )))
    .execute(db)
    .await
    .unwrap();
    let mut url = reqwest::Url::parse(database_url).unwrap();
    url.set_username(login).unwrap();
    url.to_string()
}

/// Runs the binary with `args` as `database_url`; its standard output.
pub async fn command(database_url: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_zenlayer-gateway"))
            .args(args)
            .env_clear()
            .env("DATABASE_URL", database_url)
            .output(),
    )
    .await
    .expect("the command finishes")
    .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
