//! Settings for the gRPC listener's transport security: the certificate and
//! key it serves, the CA its callers' certificates must chain to, and the one
//! explicit way to go without TLS off this machine.
//!
//! Callers send bearer tokens that release disks for good, so plaintext on
//! an address other machines can reach is refused unless the deployment
//! says a mesh sidecar terminates TLS in front of the gateway.

use super::reader::Reader;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the gRPC listener is secured.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// `None`: plaintext, on a loopback address or because
    /// `allow_plaintext` says so.
    pub files: Option<TlsFiles>,
    /// `GATEWAY_ALLOW_PLAINTEXT`: plaintext on a non-loopback address, for
    /// a mesh sidecar that terminates TLS in front of the gateway.
    pub allow_plaintext: bool,
}

/// The PEM files the listener's TLS configuration is built from, re-read
/// while serving so that rotated certificates are picked up.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `GATEWAY_TLS_CERT_FILE`: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// `GATEWAY_TLS_KEY_FILE`: the leaf's private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub key: PathBuf,
    /// `GATEWAY_TLS_CLIENT_CA_FILE`: when set, every caller must present a
    /// certificate issued by one of these CAs (mTLS).
    pub client_ca: Option<PathBuf>,
    /// `GATEWAY_TLS_RELOAD_INTERVAL_MS`: how often the files are checked
    /// for changes.
    pub reload_interval: Duration,
}

pub(super) const CERT: &str = "GATEWAY_TLS_CERT_FILE";
pub(super) const KEY: &str = "GATEWAY_TLS_KEY_FILE";
pub(super) const CLIENT_CA: &str = "GATEWAY_TLS_CLIENT_CA_FILE";
pub(super) const ALLOW_PLAINTEXT: &str = "GATEWAY_ALLOW_PLAINTEXT";

impl TlsSettings {
    /// Reads the TLS variables for a listener on `listen_addr` (`None` when
    /// the address itself was invalid, which is reported on its own).
    pub(super) fn read(r: &mut Reader, listen_addr: Option<SocketAddr>) -> Self {
        let cert = r.raw(CERT).map(PathBuf::from);
        let key = r.raw(KEY).map(PathBuf::from);
        let client_ca = r.raw(CLIENT_CA).map(PathBuf::from);
        let allow_plaintext = r.or(ALLOW_PLAINTEXT, "true or false", false);
        // Read even without TLS, so that a bad value is reported now rather
        // than on the day TLS is switched on.
        let reload_interval = r.millis("GATEWAY_TLS_RELOAD_INTERVAL_MS", 5_000, (10, 3_600_000));
        let files = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca,
                reload_interval,
            }),
            (Some(_), None) => {
                r.problem(format!(
                    "{CERT} is set but {KEY} is not: TLS needs the certificate's private key too"
                ));
                None
            }
            (None, Some(_)) => {
                r.problem(format!(
                    "{KEY} is set but {CERT} is not: TLS needs the certificate too"
                ));
                None
            }
            (None, None) => {
                if client_ca.is_some() {
                    r.problem(format!(
                        "{CLIENT_CA} needs {CERT} and {KEY}: client certificates are only checked over TLS"
                    ));
                } else if let Some(addr) = listen_addr
                    && !is_loopback(addr)
                    && !allow_plaintext
                {
                    r.problem(format!(
                        "GATEWAY_LISTEN_ADDR={addr} is not a loopback address, and plaintext there would carry callers' tokens in the clear: set {CERT} and {KEY}, or {ALLOW_PLAINTEXT}=true if a mesh sidecar terminates TLS in front of the gateway"
                    ));
                }
                None
            }
        };
        Self {
            files,
            allow_plaintext,
        }
    }
}

/// Whether only this machine can reach `addr` (IPv4-mapped IPv6 included).
pub(super) fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::source::Source;
    use std::collections::HashMap;

    fn read(listen: &str, values: &[(&str, &str)]) -> (TlsSettings, Vec<String>) {
        let source: HashMap<String, String> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let source: &dyn Source = &source;
        let mut reader = Reader::new(source);
        let settings = TlsSettings::read(&mut reader, Some(listen.parse().unwrap()));
        let problems = match reader.finish() {
            Ok(()) => Vec::new(),
            Err(error) => error
                .to_string()
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect(),
        };
        (settings, problems)
    }

    #[test]
    fn plaintext_on_loopback_needs_no_tls_and_no_allowance() {
        for listen in ["127.0.0.1:0", "[::1]:50051", "[::ffff:127.0.0.1]:50051"] {
            let (settings, problems) = read(listen, &[]);
            assert!(settings.files.is_none());
            assert_eq!(problems, Vec::<String>::new(), "{listen}");
        }
    }

    #[test]
    fn plaintext_on_a_reachable_address_is_refused_unless_explicitly_allowed() {
        let (_, problems) = read("0.0.0.0:50051", &[]);
        assert_eq!(problems.len(), 1);
        for name in [CERT, KEY, ALLOW_PLAINTEXT, "0.0.0.0:50051"] {
            assert!(problems[0].contains(name), "{problems:?}");
        }

        let (settings, problems) = read("10.1.2.3:50051", &[(ALLOW_PLAINTEXT, "true")]);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(settings.allow_plaintext && settings.files.is_none());
    }

    #[test]
    fn a_certificate_and_key_turn_tls_on_with_the_default_reload_interval() {
        let (settings, problems) = read(
            "0.0.0.0:50051",
            &[
                (CERT, "/tls/tls.crt"),
                (KEY, "/tls/tls.key"),
                (CLIENT_CA, "/tls/ca.crt"),
            ],
        );
        assert!(problems.is_empty(), "{problems:?}");
        let files = settings.files.expect("TLS is on");
        assert_eq!(files.cert, PathBuf::from("/tls/tls.crt"));
        assert_eq!(files.key, PathBuf::from("/tls/tls.key"));
        assert_eq!(files.client_ca, Some(PathBuf::from("/tls/ca.crt")));
        assert_eq!(files.reload_interval, Duration::from_secs(5));
    }

    #[test]
    fn half_a_tls_configuration_is_a_problem_naming_what_is_missing() {
        let (_, problems) = read("0.0.0.0:50051", &[(CERT, "/tls/tls.crt")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains(KEY), "{problems:?}");

        let (_, problems) = read("127.0.0.1:50051", &[(KEY, "/tls/tls.key")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains(CERT), "{problems:?}");

        let (_, problems) = read("127.0.0.1:50051", &[(CLIENT_CA, "/tls/ca.crt")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(CLIENT_CA) && problems[0].contains(CERT),
            "{problems:?}"
        );
    }

    #[test]
    fn the_reload_interval_is_checked_even_without_tls() {
        let (_, problems) = read("127.0.0.1:0", &[("GATEWAY_TLS_RELOAD_INTERVAL_MS", "0")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("GATEWAY_TLS_RELOAD_INTERVAL_MS"));
    }
}
