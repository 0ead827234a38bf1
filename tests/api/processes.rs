//! Gateways as separate operating-system processes (the real binary), for
//! what only several replicas can show.

use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug)]
pub struct GatewayProcess {
    pub addr: SocketAddr,
    child: Child,
    /// The `message` of every log line it has written so far.
    messages: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    /// Starts `zenlayer-gateway serve` with exactly `env` (listening on a
    /// port of its choosing) and waits for its "serving" log line, which
    /// carries the bound address.
    pub async fn spawn(env: &HashMap<String, String>) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zenlayer-gateway"))
            .arg("serve")
            .env_clear()
            .envs(env)
            .env("GATEWAY_LISTEN_ADDR", "127.0.0.1:0")
            .env("GATEWAY_ADMIN_ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the gateway binary");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wait = async {
            while let Some(line) = lines.next_line().await.expect("read the gateway's log") {
                let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let message = entry["fields"]["message"].as_str().unwrap_or_default();
                if message.starts_with("serving zenlayer.vm.v1.DiskService") {
                    return entry["fields"]["addr"]
                        .as_str()
                        .expect("the bound address")
                        .parse()
                        .unwrap();
                }
            }
            panic!("the gateway exited before serving");
        };
        let addr = tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("the gateway starts");
        // Keep draining its log so it never blocks on a full pipe, and keep
        // each line's message for the tests that count them.
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let entry = serde_json::from_str::<Value>(&line).unwrap_or_default();
                if let Some(message) = entry["fields"]["message"].as_str() {
                    kept.lock().unwrap().push(message.to_owned());
                }
            }
        });
        Self {
            addr,
            child,
            messages,
        }
    }

    /// Its resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("the gateway is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// How many log lines it has written whose message starts with `prefix`.
    pub fn logged(&self, prefix: &str) -> usize {
        let messages = self.messages.lock().unwrap();
        messages.iter().filter(|m| m.starts_with(prefix)).count()
    }

    /// Kills the process outright (SIGKILL), as a crash or an OOM kill
    /// would, and waits until it is gone.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("send SIGKILL");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the killed gateway is gone")
            .expect("the exit status");
    }

    /// Sends SIGTERM, as Kubernetes does, and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("the gateway is running").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "SIGTERM was delivered");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the gateway exits within its grace period")
            .expect("the exit status")
    }
}
