//! The gateway's benchmark: one command (`cargo bench --bench release`)
//! that starts everything on this machine — a durable throwaway PostgreSQL
//! (`fsync` and `synchronous_commit` on), the Zenlayer simulator holding a
//! releasable disk for every call, and the release-built gateway as its own
//! process — drives `ReleaseDisk` through the whole path (token check,
//! pre-flight `DescribeDisks`, attempt, signed `ReleaseDisk`, outcome), and
//! prints one table. Baselines come from the same run on the same machine:
//! `pgbench` single-row INSERTs into a table shaped like the attempts table
//! at the same concurrency, and the gateway's own two upstream calls made
//! directly. The machines are noisy, so the targets are ratios against
//! those baselines; the CPU PostgreSQL spends on one of pgbench's INSERTs
//! is printed beside the gateway's CPU per call for the same reason.
//!
//! The gateway runs with ten Cedar policies loaded (`benches/policies.cedar`),
//! as a careful deployment would.
//!
//! `BENCH_SECONDS` (default 5) sets how long each level runs; `BENCH_OPEN_RATE`
//! (calls/s) sets the open loop's rate instead of half the best. The run fails
//! if any call did not end as expected or any call lacks its audit outcome.
//! Run by `cargo test` (without `--bench`), it is a one-second smoke run at
//! one level, so that the test command keeps the benchmark working.

use hdrhistogram::Histogram;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use zenlayer_gateway::auth::Principal;
use zenlayer_gateway::auth::dev_keys::{DevSigningKey, TokenClaims};
use zenlayer_gateway::ephemeral_postgres::EphemeralPostgres;
use zenlayer_gateway::pb::ReleaseDiskRequest;
use zenlayer_gateway::pb::disk_service_client::DiskServiceClient;
use zenlayer_gateway::policy::{CallerFacts, LoadedSet, Policies, ReleaseFacts};
use zenlayer_gateway::settings::PolicySettings;
use zenlayer_gateway::simulator::{self, Disk, DiskStatus, DiskType, SimulatorConfig};
use zenlayer_gateway::zenlayer::DiskSnapshot;

const CLOSED_LOOP: [usize; 4] = [1, 16, 64, 256];
const ACCESS_KEY_ID: &str = "AKIDbenchmark";
const ACCESS_KEY_PASSWORD: &str = "benchmark-access-key-password";
const ISSUER: &str = "zenlayer-gateway-bench";
/// How long the open loop runs (outside the smoke run).
const OPEN_LOOP: Duration = Duration::from_secs(60);
/// More releasable disks than any run can use.
const DISKS: u64 = 400_000;

/// The policies the gateway runs with: the default permits and seven forbids.
const POLICY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/policies.cedar");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Stopped by a signal, the run still drops what it started (the
    // throwaway PostgreSQL above all, which would otherwise keep running
    // and weigh on every later run on the machine).
    tokio::select! {
        result = run() => result,
        () = zenlayer_gateway::shutdown::signal_received() => {
            anyhow::bail!("stopped by a signal; everything it started is stopped")
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let smoke = !std::env::args().any(|arg| arg == "--bench");
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke { 1 } else { 5 });
    let level = Duration::from_secs(seconds);
    // BENCH_LEVELS (comma-separated) runs only those closed-loop levels,
    // to look at one closely.
    let chosen: Option<Vec<usize>> = std::env::var("BENCH_LEVELS").ok().map(|levels| {
        levels
            .split(',')
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    });
    let levels: &[usize] = match &chosen {
        Some(chosen) => chosen,
        None if smoke => &[16],
        None => &CLOSED_LOOP,
    };
    let decision = policy_decision_cost(if smoke { 1_000 } else { 50_000 })?;
    let rig = Rig::start().await?;
    let direct_p50 = rig
        .direct_upstream(level.min(Duration::from_secs(3)))
        .await?;
    let mut rows = Vec::new();
    let mut best = (0.0, 0usize);
    for &concurrency in levels {
        let run = rig.closed_loop(concurrency, level).await?;
        let pgbench = rig.pgbench(concurrency, level).await?;
        if run.rate > best.0 {
            best = (run.rate, concurrency);
        }
        rows.push((
            format!("closed, {concurrency} in flight"),
            run,
            Some(pgbench),
        ));
    }
    // Long enough to show whether memory stays flat under a steady load.
    let open_length = match std::env::var("BENCH_OPEN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seconds) => Duration::from_secs(seconds),
        None if smoke => level,
        None => OPEN_LOOP,
    };
    // BENCH_OPEN_RATE sets the open loop's rate instead, to look at one
    // rate closely (calls/s).
    let (open_rate, open_label) = match std::env::var("BENCH_OPEN_RATE")
        .ok()
        .and_then(|r| r.parse::<f64>().ok())
    {
        Some(rate) => (rate, "BENCH_OPEN_RATE"),
        None => (best.0 / 2.0, "half the best"),
    };
    let (open, resident) = rig.open_loop(open_rate, open_length).await?;
    rows.push((format!("open, {open_rate:.0}/s ({open_label})"), open, None));
    let table = Table {
        rows,
        decision,
        direct_p50,
        startup: rig.startup,
        peak_rss_kib: rig.peak_rss_kib()?,
        resident,
        missing_outcomes: rig.calls_without_outcome().await?,
        best_concurrency: best.1,
    };
    table.print();
    let unexpected: u64 = table.rows.iter().map(|(_, r, _)| r.unexpected).sum();
    anyhow::ensure!(
        unexpected == 0,
        "{unexpected} calls did not end as expected"
    );
    anyhow::ensure!(
        table.missing_outcomes == 0,
        "{} calls have no audit outcome",
        table.missing_outcomes
    );
    Ok(())
}

/// Everything running, and how to reach it.
struct Rig {
    _postgres: EphemeralPostgres,
    admin_url: String,
    gateway: Child,
    channel: Channel,
    token: String,
    simulator_url: String,
    next_disk: Arc<AtomicU64>,
    startup: Duration,
    db: sqlx::PgPool,
    metrics_url: String,
    http: reqwest::Client,
    _keys: tempfile::TempDir,
}

/// One measured run.
#[derive(Debug, Default)]
struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
    cpu_per_call: Option<Duration>,
    unexpected: u64,
    /// Means of the gateway's own timings of a call's parts, in this run.
    inside: Vec<(&'static str, Duration)>,
}

/// `pgbench`'s single-row INSERTs at one concurrency: their rate, and the
/// CPU PostgreSQL's server processes spent on each (from `/proc`): a
/// yardstick that moves with the machine as the gateway's CPU does.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    tps: f64,
    cpu_per_insert: Duration,
}

impl Rig {
    async fn start() -> anyhow::Result<Self> {
        let postgres = tokio::task::spawn_blocking(EphemeralPostgres::start_durable).await??;
        let admin_url = postgres.url("postgres");
        let db = sqlx::PgPool::connect(&admin_url).await?;
        zenlayer_gateway::database::migrate(&db).await?;
        sqlx::raw_sql(
            "CREATE ROLE bench_gateway LOGIN IN ROLE zenlayer_gateway;
             CREATE TABLE public.bench_attempts (LIKE audit.release_attempts INCLUDING ALL)
                 WITH (autovacuum_enabled = false);",
        )
        .execute(&db)
        .await?;
        let simulator = simulator::spawn(
            SimulatorConfig {
                credentials: vec![simulator::Credential::AccessKey {
                    id: ACCESS_KEY_ID.into(),
                    password: ACCESS_KEY_PASSWORD.into(),
                }],
                disks: (0..DISKS)
                    .map(|n| Disk::new(&disk_id(n), DiskType::Data, DiskStatus::Recycled))
                    .collect(),
                ..Default::default()
            },
            tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        )
        .await?;
        let keys = tempfile::tempdir()?;
        let key = DevSigningKey::generate()?;
        let jwks = keys.path().join("jwks.json");
        std::fs::write(&jwks, key.jwks())?;
        let token = key.mint(&TokenClaims {
            issuer: ISSUER.into(),
            audience: "zenlayer-gateway".into(),
            subject: "bench".into(),
            roles: vec!["disk:release".into()],
            roles_claim: "roles".into(),
            lifetime: Duration::from_secs(3600),
        })?;
        let database_url = format!(
            "postgres://bench_gateway@127.0.0.1:{}/postgres",
            postgres.port()
        );
        // A port free a moment ago, for the admin listener's metrics.
        let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let admin = admin.to_string();
        let started = Instant::now();
        let (gateway, addr) = spawn_gateway(&[
            ("GATEWAY_ADMIN_ADDR", admin.as_str()),
            ("DATABASE_URL", database_url.as_str()),
            ("ZENLAYER_BASE_URL", &simulator.base_url()),
            ("ZENLAYER_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("ZENLAYER_ACCESS_KEY_PASSWORD", ACCESS_KEY_PASSWORD),
            ("JWT_PUBLIC_KEYS_FILE", &jwks.to_string_lossy()),
            ("JWT_ISSUER", ISSUER),
            ("JWT_ALGORITHMS", "EdDSA"),
            // Ten policies, every one evaluated on every call.
            ("GATEWAY_POLICY_FILE", POLICY_FILE),
        ])
        .await?;
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        wait_until_serving(channel.clone()).await?;
        let startup = started.elapsed();
        // The simulator must outlive the run; it lives in this process.
        let simulator_url = simulator.base_url();
        std::mem::forget(simulator);
        Ok(Self {
            _postgres: postgres,
            admin_url,
            gateway,
            channel,
            token,
            simulator_url,
            next_disk: Arc::new(AtomicU64::new(0)),
            startup,
            db,
            metrics_url: format!("http://{admin}/metrics"),
            http: reqwest::Client::new(),
            _keys: keys,
        })
    }

    fn client(&self) -> Caller {
        Caller {
            client: DiskServiceClient::new(self.channel.clone()),
            authorization: format!("Bearer {}", self.token).parse().expect("ASCII"),
            next_disk: self.next_disk.clone(),
        }
    }

    /// The gateway's own timings so far.
    async fn inside(&self) -> anyhow::Result<Inside> {
        let text = self.http.get(&self.metrics_url).send().await?;
        Ok(Inside::parse(&text.error_for_status()?.text().await?))
    }

    async fn closed_loop(&self, concurrency: usize, length: Duration) -> anyhow::Result<Run> {
        let inside_before = self.inside().await?;
        let cpu_before = self.cpu()?;
        let started = Instant::now();
        let until = started + length;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let mut caller = self.client();
            tasks.spawn(async move {
                let mut histogram = new_histogram();
                let mut unexpected = 0;
                while Instant::now() < until {
                    let sent = Instant::now();
                    if !caller.release().await {
                        unexpected += 1;
                    }
                    record(&mut histogram, sent.elapsed());
                }
                (histogram, unexpected)
            });
        }
        let (histogram, unexpected) = gather(tasks).await;
        let elapsed = started.elapsed();
        let calls = histogram.len();
        let cpu = self.cpu()?.saturating_sub(cpu_before);
        let mut run = summary(histogram, calls, elapsed, Some(cpu), unexpected);
        run.inside = self.inside().await?.means_since(&inside_before);
        Ok(run)
    }

    /// Calls sent at a steady `rate`, each timed from when it was due, so a
    /// stall shows in the latencies rather than slowing the sender.
    /// Calls at a steady `rate` for `length`, each timed from when it was
    /// due; also the gateway's resident memory, sampled every second.
    async fn open_loop(&self, rate: f64, length: Duration) -> anyhow::Result<(Run, Resident)> {
        let cpu_before = self.cpu()?;
        let total = (rate * length.as_secs_f64()) as u64;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut histogram = new_histogram();
        let mut unexpected = 0;
        let mut resident = Resident::default();
        let mut next_sample = Duration::ZERO;
        for i in 0..total {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            if started.elapsed() >= next_sample {
                resident
                    .samples
                    .push((next_sample, self.status_kib("VmRSS:")?));
                next_sample += Duration::from_secs(1);
            }
            let mut caller = self.client();
            // Each call hands back its latency, recorded into the one
            // histogram here: a histogram per call (400 KiB zeroed each) made
            // the load generator, not the gateway, the open loop's limit.
            tasks.spawn(async move {
                let ok = caller.release().await;
                (due.elapsed(), ok)
            });
            while let Some(done) = tasks.try_join_next() {
                tally(&mut histogram, &mut unexpected, done);
            }
        }
        while let Some(done) = tasks.join_next().await {
            tally(&mut histogram, &mut unexpected, done);
        }
        let elapsed = started.elapsed();
        let calls = histogram.len();
        let cpu = self.cpu()?.saturating_sub(cpu_before);
        resident.samples.push((elapsed, self.status_kib("VmRSS:")?));
        Ok((
            summary(histogram, calls, elapsed, Some(cpu), unexpected),
            resident,
        ))
    }

    /// What the gateway itself sends, made directly at one in flight: a
    /// `DescribeDisks` then a `ReleaseDisk`, signed the same way.
    async fn direct_upstream(&self, length: Duration) -> anyhow::Result<Duration> {
        let settings = zenlayer_gateway::zenlayer::ZenlayerSettings {
            base_url: self.simulator_url.parse()?,
            credential: zenlayer_gateway::zenlayer::Credential::AccessKey {
                id: ACCESS_KEY_ID.into(),
                password: ACCESS_KEY_PASSWORD.to_owned().into(),
            },
            api_version: "2023-03-13".into(),
            timeout: Duration::from_secs(10),
            rate_limit_retries: 0,
            retry_backoff: Duration::from_secs(1),
            preflight: true,
        };
        let client = settings.client()?;
        let caller = bench_principal().authorize("disk:release", "roles")?;
        let mut histogram = new_histogram();
        let until = Instant::now() + length;
        while Instant::now() < until {
            let n = self.next_disk.fetch_add(1, Ordering::Relaxed);
            let disk = zenlayer_gateway::domain::DiskId::parse(&disk_id(n))
                .map_err(|v| anyhow::anyhow!(v.description))?;
            let deadline = zenlayer_gateway::deadline::Deadline::NONE;
            // As the gateway sends them: with the call's trace.
            let trace = Some("4bf92f3577b34da6a3ce929d0e0e4736");
            let sent = Instant::now();
            client.describe_disk(&disk, deadline, trace).await?;
            client.release_disk(&caller, &disk, deadline, trace).await?;
            record(&mut histogram, sent.elapsed());
        }
        Ok(Duration::from_micros(histogram.value_at_quantile(0.5)))
    }

    /// `pgbench`'s single-row INSERTs into a copy of the attempts table
    /// (same columns and indexes), at `clients` connections.
    async fn pgbench(&self, clients: usize, length: Duration) -> anyhow::Result<Baseline> {
        let script = tempfile::NamedTempFile::new()?;
        std::fs::write(
            script.path(),
            "INSERT INTO public.bench_attempts (call_id, received_at, principal, issuer, roles, \
             x_request_id, trace_id, disk_id, reason, idempotency_key, decision) \
             VALUES (gen_random_uuid(), now(), 'bench', 'zenlayer-gateway-bench', '{disk:release}', \
             gen_random_uuid()::text, md5(random()::text), 'bench-disk', 'benchmark', \
             gen_random_uuid()::text, 'allowed');\n",
        )?;
        let pgbench = self._postgres.program("pgbench");
        // The CPU of the server processes that served pgbench: they end
        // with its connections, and the server adds their time to that of
        // its ended children (which the gateway's, long-lived, are not).
        let server = self._postgres.pid()?;
        let ended_before = proc_stat(server)?.reaped;
        let output = Command::new(&pgbench)
            .args([
                "-n",
                "-c",
                &clients.to_string(),
                "-j",
                &clients.min(2).to_string(),
            ])
            .args(["-T", &length.as_secs().max(1).to_string(), "-f"])
            .arg(script.path())
            .arg(&self.admin_url)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| anyhow::anyhow!("run {}: {e}", pgbench.display()))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu = proc_stat(server)?.reaped.saturating_sub(ended_before);
        let text = String::from_utf8_lossy(&output.stdout);
        let number = |prefix: &str| -> Option<f64> {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        };
        let (Some(tps), Some(inserts)) = (
            number("tps = "),
            number("number of transactions actually processed:"),
        ) else {
            anyhow::bail!(
                "pgbench printed no tps: {text} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        };
        Ok(Baseline {
            tps,
            cpu_per_insert: cpu.div_f64(inserts.max(1.0)),
        })
    }

    /// The gateway process's CPU time so far (user and system).
    fn cpu(&self) -> anyhow::Result<Duration> {
        let pid = self
            .gateway
            .id()
            .ok_or_else(|| anyhow::anyhow!("the gateway exited"))?;
        Ok(proc_stat(pid)?.own)
    }

    fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmHWM:")
    }

    /// One of the gateway's `/proc/<pid>/status` sizes, in KiB.
    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        let pid = self
            .gateway
            .id()
            .ok_or_else(|| anyhow::anyhow!("the gateway exited"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no {field}"))
    }

    /// Calls the audit trail shows as still pending or unknown, once the
    /// gateway has had a moment to record the last outcomes.
    async fn calls_without_outcome(&self) -> anyhow::Result<i64> {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM audit.release_disk_calls WHERE outcome IN ('pending', 'unknown')",
        )
        .fetch_one(&self.db)
        .await?)
    }
}

struct Caller {
    client: DiskServiceClient<Channel>,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    next_disk: Arc<AtomicU64>,
}

impl Caller {
    /// Releases the next disk; `true` if it was released.
    async fn release(&mut self) -> bool {
        let n = self.next_disk.fetch_add(1, Ordering::Relaxed);
        let mut request = tonic::Request::new(ReleaseDiskRequest {
            disk_id: disk_id(n),
            idempotency_key: format!("bench-{n}"),
            reason: "benchmark".into(),
        });
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request.set_timeout(Duration::from_secs(30));
        self.client.release_disk(request).await.is_ok()
    }
}

/// What deciding one release by the ten policies costs, timed here with the
/// gateway's own code (building the Cedar request from the call's facts,
/// then evaluating it), for a disk as the simulator describes the
/// benchmark's disks. Timed before anything else runs, on one thread. Like
/// the benchmark's calls (one caller, one address, one reason), each
/// decision after the first finds its caller entity and, within a second,
/// its context kept from the one before.
fn policy_decision_cost(decisions: u32) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(POLICY_FILE)?;
    let set = LoadedSet::from_text(&text, POLICY_FILE)?;
    let policies = Policies::from_sets(set, None, PolicySettings::default());
    let principal = bench_principal();
    let id = disk_id(0);
    let disk = DiskSnapshot::from_entry(serde_json::json!({
        "diskId": id, "diskName": id, "zoneId": "asia-east-1a",
        "diskType": "DATA", "diskSize": 20, "diskStatus": "RECYCLED",
        "diskCategory": "Standard NVMe SSD", "tags": {"tags": []}
    }));
    let decide = || {
        let facts = ReleaseFacts {
            caller: CallerFacts {
                principal: &principal,
                peer_identity: None,
                ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
                at: chrono::Utc::now(),
            },
            disk_id: &id,
            disk: Some(&disk),
            reason: "benchmark",
            has_idempotency_key: true,
        };
        policies.decide_release(&facts).enforced.permits()
    };
    anyhow::ensure!(decide(), "the benchmark's policies refuse its calls");
    let started = Instant::now();
    let permitted = (0..decisions).filter(|_| decide()).count();
    let elapsed = started.elapsed();
    anyhow::ensure!(permitted == decisions as usize, "a decision changed");
    Ok(elapsed / decisions)
}

/// The caller the benchmark's token names.
fn bench_principal() -> Principal {
    Principal {
        subject: "bench".into(),
        issuer: ISSUER.into(),
        client_id: None,
        token_id: None,
        roles: vec!["disk:release".into()],
        groups: Vec::new(),
    }
}

fn disk_id(n: u64) -> String {
    format!("bench-{n:07}")
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

async fn gather(mut tasks: tokio::task::JoinSet<(Histogram<u64>, u64)>) -> (Histogram<u64>, u64) {
    let mut all = new_histogram();
    let mut unexpected = 0;
    while let Some(result) = tasks.join_next().await {
        let (histogram, bad) = result.expect("a load task");
        all.add(histogram).expect("same bounds");
        unexpected += bad;
    }
    (all, unexpected)
}

/// Records one open-loop call.
fn tally(
    histogram: &mut Histogram<u64>,
    unexpected: &mut u64,
    done: Result<(Duration, bool), tokio::task::JoinError>,
) {
    let (latency, ok) = done.expect("a load task");
    record(histogram, latency);
    *unexpected += u64::from(!ok);
}

fn summary(
    histogram: Histogram<u64>,
    calls: u64,
    elapsed: Duration,
    cpu: Option<Duration>,
    unexpected: u64,
) -> Run {
    Run {
        rate: calls as f64 / elapsed.as_secs_f64(),
        p50: Duration::from_micros(histogram.value_at_quantile(0.5)),
        p99: Duration::from_micros(histogram.value_at_quantile(0.99)),
        cpu_per_call: cpu.filter(|_| calls > 0).map(|cpu| cpu / calls as u32),
        unexpected,
        inside: Vec::new(),
    }
}

/// From `/proc/<pid>/stat`: a process's CPU time (user and system) and
/// that of its children that have ended.
struct ProcStat {
    own: Duration,
    reaped: Duration,
}

fn proc_stat(pid: u32) -> anyhow::Result<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap_or(0) + 2..]
        .split(' ')
        .collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat has no field {i}"))
    };
    let ticks = |t: u64| Duration::from_secs_f64(t as f64 / clock_ticks_per_second());
    Ok(ProcStat {
        own: ticks(field(11)? + field(12)?),
        reaped: ticks(field(13)? + field(14)?),
    })
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Starts the release-built gateway with `env` and returns it with the
/// address it bound, read from its "serving" log line.
async fn spawn_gateway(env: &[(&str, &str)]) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zenlayer-gateway"))
        .arg("serve")
        .env_clear()
        .envs(env.iter().copied())
        .env("GATEWAY_LISTEN_ADDR", "127.0.0.1:0")
        .env("GATEWAY_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if entry["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("serving zenlayer.vm.v1.DiskService"))
            {
                return Ok(entry["fields"]["addr"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned());
            }
        }
        anyhow::bail!("the gateway exited before serving")
    })
    .await??;
    // Its one log line per call must not fill the pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

async fn wait_until_serving(channel: Channel) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let request = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        if let Ok(response) = health.check(request).await
            && response.into_inner().status == ServingStatus::Serving as i32
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("the gateway never reported SERVING")
}

/// The gateway's resident memory during the open loop: (since its start,
/// KiB), a sample a second and one at its end.
#[derive(Debug, Default)]
struct Resident {
    samples: Vec<(Duration, u64)>,
}

impl Resident {
    /// After the first tenth of the run (once the load is steady), and at
    /// its end.
    fn steady_and_end(&self) -> Option<(u64, u64)> {
        let end = self.samples.last()?;
        let settle = end.0 / 10;
        let steady = self.samples.iter().find(|(at, _)| *at >= settle)?;
        Some((steady.1, end.1))
    }
}

/// The printed result.
#[derive(Debug, Default)]
struct Table {
    rows: Vec<(String, Run, Option<Baseline>)>,
    decision: Duration,
    direct_p50: Duration,
    startup: Duration,
    peak_rss_kib: u64,
    resident: Resident,
    missing_outcomes: i64,
    best_concurrency: usize,
}

impl Table {
    fn print(&self) {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        println!();
        println!(
            "| load | calls/s | p50 | p99 | gateway CPU per call | pgbench INSERT/s, same concurrency | calls/s ÷ pgbench |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for (name, run, pgbench) in &self.rows {
            let cpu = run
                .cpu_per_call
                .map_or("—".to_owned(), |c| format!("{} µs", c.as_micros()));
            let (pg, ratio) = match pgbench {
                Some(baseline) => (
                    format!("{:.0}", baseline.tps),
                    format!("{:.2}", run.rate / baseline.tps),
                ),
                None => ("—".to_owned(), "—".to_owned()),
            };
            println!(
                "| {name} | {:.0} | {} | {} | {cpu} | {pg} | {ratio} |",
                run.rate,
                ms(run.p50),
                ms(run.p99)
            );
        }
        println!();
        println!(
            "- direct upstream calls (DescribeDisks then ReleaseDisk), 1 in flight: p50 {}",
            ms(self.direct_p50)
        );
        let single = self
            .rows
            .iter()
            .find(|(name, _, _)| name == "closed, 1 in flight");
        if let Some((_, run, _)) = single {
            println!(
                "- added p50 at 1 in flight: {} (target ≤ 0.50 ms)",
                ms(run.p50.saturating_sub(self.direct_p50))
            );
            let parts: Vec<String> = run
                .inside
                .iter()
                .map(|(part, mean)| format!("{part} {}", ms(*mean)))
                .collect();
            println!(
                "- at 1 in flight, the gateway's own means: {}",
                parts.join(", ")
            );
            // A lone call makes two durable commits one after the other
            // (its attempt, then its outcome); pgbench's one-client rate
            // says what one costs on this machine today.
            if let Some(&(_, _, Some(baseline))) = single {
                println!(
                    "- two single-row commits one after the other at pgbench's 1-client rate: {} (the floor of a lone call's two writes)",
                    ms(Duration::from_secs_f64(2.0 / baseline.tps))
                );
            }
        }
        println!("- best closed-loop concurrency: {}", self.best_concurrency);
        let best_row = self
            .rows
            .iter()
            .find(|(name, _, _)| *name == format!("closed, {} in flight", self.best_concurrency));
        let best = best_row.and_then(|(_, run, _)| run.cpu_per_call);
        // The CPU target is in µs, and a µs of CPU is not the same on every
        // machine; PostgreSQL's CPU for one INSERT in the same run is. At one
        // client, so that neither contention nor starting hundreds of
        // server processes is in it.
        if let Some((_, run, _)) = best_row
            && let Some(cpu) = run.cpu_per_call
            && let Some((_, _, Some(lone))) = single
        {
            println!(
                "- PostgreSQL's CPU per pgbench INSERT at 1 client: {} µs; the gateway's CPU per call at the best concurrency is {:.2} × that",
                lone.cpu_per_insert.as_micros(),
                cpu.as_secs_f64() / lone.cpu_per_insert.as_secs_f64()
            );
        }
        let share = best.map_or(String::new(), |cpu| {
            format!(
                ", {:.0} % of the gateway's CPU per call there",
                self.decision.as_secs_f64() / cpu.as_secs_f64() * 100.0
            )
        });
        println!(
            "- one policy decision (the ten policies; the caller and context kept, as for the calls; the disk and request built, then evaluated): {:.1} µs{share}",
            self.decision.as_secs_f64() * 1e6
        );
        println!(
            "- peak RSS: {:.1} MiB (target ≤ 64 MiB)",
            self.peak_rss_kib as f64 / 1024.0
        );
        if let Some((steady, end)) = self.resident.steady_and_end() {
            let length = self
                .resident
                .samples
                .last()
                .map_or(0, |(at, _)| at.as_secs());
            println!(
                "- resident memory over the {length}-second open loop: {:.1} MiB once steady, {:.1} MiB at its end ({:+.1} %; target: flat)",
                steady as f64 / 1024.0,
                end as f64 / 1024.0,
                (end as f64 / steady as f64 - 1.0) * 100.0
            );
        }
        println!("- start-up to SERVING: {} (target ≤ 1 s)", ms(self.startup));
        let unexpected: u64 = self.rows.iter().map(|(_, r, _)| r.unexpected).sum();
        println!(
            "- calls that did not end as expected: {unexpected}; calls without an audit outcome: {}",
            self.missing_outcomes
        );
    }
}

/// Sums and counts of the gateway's own latency histograms, read from its
/// admin listener: where a call's time goes, seen from the inside.
#[derive(Debug)]
struct Inside {
    /// (seconds in all, observations) per part of a call.
    parts: std::collections::BTreeMap<&'static str, (f64, f64)>,
}

impl Inside {
    /// The histograms a call's path passes through: the name printed, the
    /// metric, and the label its series must carry (any, when empty).
    const PARTS: [(&'static str, &'static str, &'static str); 4] = [
        ("call", "zenlayer_gateway_release_call_duration_seconds", ""),
        (
            "attempt written",
            "zenlayer_gateway_audit_write_duration_seconds",
            "record=\"attempt\"",
        ),
        (
            "ReleaseDisk",
            "zenlayer_gateway_upstream_request_duration_seconds",
            "",
        ),
        (
            "outcome written",
            "zenlayer_gateway_audit_write_duration_seconds",
            "record=\"outcome\"",
        ),
    ];

    /// Reads Prometheus' text format: a histogram's `_sum` and `_count`
    /// lines, summed over the series that carry the part's label.
    fn parse(text: &str) -> Self {
        let mut parts = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            for (part, metric, label) in Self::PARTS {
                let Some(rest) = series.strip_prefix(metric) else {
                    continue;
                };
                let (is_sum, labels) =
                    match (rest.strip_prefix("_sum"), rest.strip_prefix("_count")) {
                        (Some(labels), _) => (true, labels),
                        (_, Some(labels)) => (false, labels),
                        _ => continue,
                    };
                if labels.contains(label) {
                    let entry = parts.entry(part).or_insert((0.0, 0.0));
                    if is_sum {
                        entry.0 += value;
                    } else {
                        entry.1 += value;
                    }
                }
            }
        }
        Self { parts }
    }

    /// The mean of each part over what happened since `before`.
    fn means_since(&self, before: &Self) -> Vec<(&'static str, Duration)> {
        Self::PARTS
            .iter()
            .filter_map(|(part, _, _)| {
                let (sum, count) = self.parts.get(part)?;
                let (sum_before, count_before) = before.parts.get(part).unwrap_or(&(0.0, 0.0));
                let calls = count - count_before;
                (calls > 0.0).then(|| (*part, Duration::from_secs_f64((sum - sum_before) / calls)))
            })
            .collect()
    }
}
