//! A TCP relay in front of PostgreSQL that reads the messages the gateway
//! sends and counts, per connection, the Sync messages: each one ends a
//! round trip of the extended query protocol (a statement, or a ping). A
//! connection that has prepared `audit.write_batch` is the audit writer's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Protocol codes of the untyped requests that may come before the
/// startup message (SSL and GSS encryption requests).
const ENCRYPTION_REQUESTS: [u32; 2] = [80_877_103, 80_877_104];

#[derive(Debug, Default)]
struct Connection {
    writes_audit: bool,
    syncs: usize,
}

/// The relay's address and what it has counted.
#[derive(Debug, Clone)]
pub struct PgRelay {
    pub addr: SocketAddr,
    connections: Arc<Mutex<HashMap<usize, Connection>>>,
}

impl PgRelay {
    /// Relays every connection made to it to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Self {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
        };
        let counted = relay.clone();
        tokio::spawn(async move {
            for id in 0.. {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(counted.clone().relay(id, client, upstream));
            }
        });
        relay
    }

    /// The Sync messages sent so far on the audit writer's connections.
    pub fn audit_writer_syncs(&self) -> usize {
        let connections = self.connections.lock().unwrap();
        connections
            .values()
            .filter(|c| c.writes_audit)
            .map(|c| c.syncs)
            .sum()
    }

    async fn relay(self, id: usize, client: TcpStream, upstream: SocketAddr) {
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_server, mut to_server) = server.into_split();
        let answers = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        });
        let (mut pending, mut chunk, mut started) = (Vec::new(), vec![0; 8192], false);
        loop {
            let n = match from_client.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to_server.write_all(&chunk[..n]).await.is_err() {
                break;
            }
            pending.extend_from_slice(&chunk[..n]);
            while let Some(length) = self.count_one(id, &pending, &mut started) {
                pending.drain(..length);
            }
        }
        answers.abort();
    }

    /// Reads the first whole message of `pending`, if there is one, and
    /// returns its length. Before the startup message, messages have no
    /// type byte.
    fn count_one(&self, id: usize, pending: &[u8], started: &mut bool) -> Option<usize> {
        let at = usize::from(*started);
        let length_bytes = pending.get(at..at + 4)?;
        let total = at + u32::from_be_bytes(length_bytes.try_into().unwrap()) as usize;
        let message = pending.get(..total)?;
        if !*started {
            let code = u32::from_be_bytes(message[4..8].try_into().unwrap());
            *started = !ENCRYPTION_REQUESTS.contains(&code);
            return Some(total);
        }
        let mut connections = self.connections.lock().unwrap();
        let connection = connections.entry(id).or_default();
        match message[0] {
            b'S' => connection.syncs += 1,
            b'P' if contains(message, b"audit.write_batch(") => connection.writes_audit = true,
            _ => {}
        }
        Some(total)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
