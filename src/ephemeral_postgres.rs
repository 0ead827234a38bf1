//! A throwaway PostgreSQL server in a temporary directory on a free port:
//! what `dev` runs when no `DATABASE_URL` is given, and what tests use when
//! they must stop and restart a database on purpose.
//!
//! PostgreSQL refuses to run as root, so under root the server runs as the
//! `postgres` user (via `runuser`), in a directory handed over to it.

use anyhow::{Context as _, bail};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running server; stopped and deleted on drop.
#[derive(Debug)]
pub struct EphemeralPostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin_dir: PathBuf,
    run_as: Option<String>,
    /// Commits reach the disk (for measurements); otherwise fsync is off,
    /// which tests do not need and would only slow down.
    durable: bool,
}

const UNPRIVILEGED_USER: &str = "postgres";

impl EphemeralPostgres {
    /// Creates a cluster and starts it. Blocks for a second or two.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// As [`start`](Self::start), but every commit is flushed to disk as in
    /// production (`fsync` and `synchronous_commit` on), for benchmarks.
    pub fn start_durable() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> anyhow::Result<Self> {
        let bin_dir = find_bin_dir()?;
        let run_as = running_as_root().then(|| UNPRIVILEGED_USER.to_owned());
        let dir = tempfile::Builder::new()
            .prefix("zenlayer-gateway-pg-")
            .tempdir()?;
        if let Some(user) = &run_as {
            hand_over(dir.path(), user)?;
        }
        let server = Self {
            port: free_port()?,
            dir,
            bin_dir,
            run_as,
            durable,
        };
        server.run(
            "initdb",
            &[
                "-D",
                &server.data_dir(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        server.start_again()?;
        Ok(server)
    }

    /// A connection URL for `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id (its postmaster), from `postmaster.pid`.
    pub fn pid(&self) -> anyhow::Result<u32> {
        let file = Path::new(&self.data_dir()).join("postmaster.pid");
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        text.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .with_context(|| format!("no process id in {}", file.display()))
    }

    /// The path of one of the server's programs (`pgbench`, `psql`, …):
    /// beside the server's own, else where `initdb` really lives (the
    /// directory found may hold links to a few programs only), else on PATH.
    pub fn program(&self, name: &str) -> PathBuf {
        let beside = self.bin_dir.join(name);
        let real = std::fs::canonicalize(self.bin_dir.join("initdb"))
            .ok()
            .and_then(|initdb| Some(initdb.parent()?.join(name)));
        [Some(beside), real]
            .into_iter()
            .flatten()
            .find(|path| path.exists())
            .unwrap_or_else(|| PathBuf::from(name))
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &["stop", "-D", &self.data_dir(), "-m", "fast", "-w"],
        )
    }

    /// Starts the server again on the same port, after [`stop`](Self::stop).
    pub fn start_again(&self) -> anyhow::Result<()> {
        let durability = if self.durable {
            "-c fsync=on -c synchronous_commit=on"
        } else {
            "-c fsync=off -c full_page_writes=off"
        };
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=300 {durability}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "start",
                "-D",
                &self.data_dir(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
            ],
        )
        .with_context(|| format!("PostgreSQL did not start; its log is {}", log.display()))
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin_dir.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let output = command
            .args(args)
            .output()
            .with_context(|| format!("run {}", path.display()))?;
        if !output.status.success() {
            bail!(
                "{program} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for EphemeralPostgres {
    fn drop(&mut self) {
        // Immediate: nothing here is worth a clean checkpoint.
        let _ = self.run(
            "pg_ctl",
            &["stop", "-D", &self.data_dir(), "-m", "immediate", "-w"],
        );
    }
}

/// `PG_BIN_DIR`, else wherever `initdb` is on the PATH, else the newest
/// version under Debian's `/usr/lib/postgresql`.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file());
    if let Some(dir) = on_path {
        return Ok(dir);
    }
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    versions
        .pop()
        .context("no PostgreSQL binaries found: install postgresql, or set PG_BIN_DIR to the directory holding initdb and pg_ctl")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn hand_over(dir: &Path, user: &str) -> anyhow::Result<()> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, user]).output()?;
        String::from_utf8(out.stdout)?
            .trim()
            .parse()
            .with_context(|| format!("no user {user:?} to run PostgreSQL as"))
    };
    std::os::unix::fs::chown(dir, Some(id("-u")?), Some(id("-g")?))
        .with_context(|| format!("hand {} to {user}", dir.display()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
