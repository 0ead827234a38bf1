//! Transport security on the gRPC listener: TLS, client certificates and
//! the identity they put in the audit trail, certificates rotated on disk
//! while serving, and no plaintext where other machines can reach it.
//! Certificates are made here, per test, by throwaway CAs.

use crate::helpers::request;
use crate::helpers::{
    AppOptions, TestApp, captured_logs, eventually, spawn_app_with, spawn_app_with_settings,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;
use zenlayer_gateway::pb::ReleaseDiskResponse;
use zenlayer_gateway::pb::disk_service_client::DiskServiceClient;

/// How long a rotated certificate may take to be served in these tests.
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);

/// A throwaway certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = name_of(&[
            (DnType::OrganizationName, "Example"),
            (DnType::CommonName, name),
        ]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let certificate = params.self_signed(&key).expect("a CA certificate");
        Self {
            pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `params`, and its private key, both PEM.
    fn issue(&self, params: &CertificateParams) -> (String, String) {
        let key = KeyPair::generate().expect("a key");
        let certificate = params.signed_by(&key, &self.issuer).expect("a certificate");
        (certificate.pem(), key.serialize_pem())
    }

    /// The gateway's certificate, for 127.0.0.1 and localhost.
    fn server_certificate(&self) -> (String, String) {
        let mut params = CertificateParams::new(["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("valid names");
        params.distinguished_name = name_of(&[(DnType::CommonName, "zenlayer-gateway")]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(&params)
    }

    /// A caller's certificate and key, with this subject (most significant
    /// attribute first, as encoded).
    fn client_identity(&self, subject: &[(DnType, &str)]) -> Identity {
        let mut params = CertificateParams::default();
        params.distinguished_name = name_of(subject);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (certificate, key) = self.issue(&params);
        Identity::from_pem(certificate, key)
    }

    /// A client that trusts only this CA.
    fn trusted_by_client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.pem))
            .domain_name("localhost")
    }
}

fn name_of(attributes: &[(DnType, &str)]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    for (kind, value) in attributes {
        name.push(kind.clone(), *value);
    }
    name
}

/// The gateway's certificate files in a temporary directory.
struct TlsFiles {
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
}

impl TlsFiles {
    /// Files holding a server certificate from `ca`, and `ca` as the client CA.
    fn issued_by(ca: &Ca) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = Self {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: dir.path().join("ca.crt"),
            dir,
        };
        files.rotate_to(ca);
        files
    }

    /// Replaces every file with ones from `ca`, each atomically, as
    /// cert-manager does.
    fn rotate_to(&self, ca: &Ca) {
        let (cert, key) = ca.server_certificate();
        self.replace(&self.client_ca, &ca.pem);
        self.replace(&self.key, &key);
        self.replace(&self.cert, &cert);
    }

    /// Writes `contents` to a temporary file beside `path`, then renames it
    /// over `path`.
    fn replace(&self, path: &Path, contents: &str) {
        let mut file = tempfile::NamedTempFile::new_in(self.dir.path()).expect("a temporary file");
        file.write_all(contents.as_bytes()).expect("write");
        file.persist(path).expect("rename over the old file");
    }

    /// Settings for TLS with these files; `mtls` adds the client CA.
    fn settings(&self, mtls: bool) -> HashMap<String, String> {
        let mut settings = HashMap::from([
            ("GATEWAY_TLS_CERT_FILE".to_owned(), path_string(&self.cert)),
            ("GATEWAY_TLS_KEY_FILE".to_owned(), path_string(&self.key)),
            ("GATEWAY_TLS_RELOAD_INTERVAL_MS".to_owned(), "50".to_owned()),
        ]);
        if mtls {
            settings.insert(
                "GATEWAY_TLS_CLIENT_CA_FILE".to_owned(),
                path_string(&self.client_ca),
            );
        }
        settings
    }
}

fn path_string(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

async fn spawn_tls_app(files: &TlsFiles, mtls: bool) -> TestApp {
    spawn_app_with(AppOptions {
        settings: files.settings(mtls),
        ..Default::default()
    })
    .await
}

/// A channel to the gateway over TLS.
async fn connect(app: &TestApp, tls: ClientTlsConfig) -> Result<Channel, String> {
    Channel::from_shared(format!("https://{}", app.addr))
        .expect("a valid endpoint")
        .tls_config(tls)
        .map_err(|e| format!("{e:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// A ReleaseDisk over a new connection with `tls`: the answer, or how the
/// connection or call failed.
async fn release_over(app: &TestApp, tls: ClientTlsConfig) -> Result<ReleaseDiskResponse, String> {
    let channel = connect(app, tls).await?;
    release_on(channel).await
}

async fn release_on(channel: Channel) -> Result<ReleaseDiskResponse, String> {
    DiskServiceClient::new(channel)
        .release_disk(request("disk-recycled-data"))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| format!("{status:?}"))
}

/// A health check on `channel`.
async fn healthy(channel: Channel) -> Result<(), String> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

/// The audit view's row for a call, as JSON.
async fn call_row(app: &TestApp, audit_id: &str) -> Value {
    sqlx::query_scalar::<_, Value>(
        "SELECT row_to_json(c) FROM audit.release_disk_calls c WHERE call_id = $1",
    )
    .bind(Uuid::parse_str(audit_id).expect("audit ids are UUIDs"))
    .fetch_one(&app.db)
    .await
    .expect("the call has a row")
}

async fn recorded_calls(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit.release_disk_calls")
        .fetch_one(&app.db)
        .await
        .expect("count the calls")
}

#[tokio::test]
async fn a_tls_client_releases_a_disk_through_to_zenlayer() {
    let ca = Ca::new("gateway test CA");
    let files = TlsFiles::issued_by(&ca);
    let app = spawn_tls_app(&files, false).await;

    let response = release_over(&app, ca.trusted_by_client())
        .await
        .expect("a release over TLS");

    assert!(response.request_id.starts_with('T'), "{response:?}");
    assert_eq!(app.simulator.release_disk_requests(), 1);
    let row = call_row(&app, &response.audit_id).await;
    assert_eq!(row["decision"], "allowed");
    assert!(
        row["peer_addr"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{row}"
    );
    // No client certificate was asked for, so there is no identity to record.
    assert_eq!(row["peer_identity"], Value::Null);
}

#[tokio::test]
async fn a_plaintext_client_gets_nothing_from_the_tls_port() {
    let ca = Ca::new("gateway test CA");
    let files = TlsFiles::issued_by(&ca);
    let app = spawn_tls_app(&files, false).await;

    let plaintext = async {
        let channel = Channel::from_shared(format!("http://{}", app.addr))
            .expect("a valid endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        release_on(channel).await
    };

    let refused = plaintext.await.expect_err("plaintext must not get through");
    assert!(!refused.contains("audit_id"), "{refused}");
    assert_eq!(recorded_calls(&app).await, 0);
    assert_eq!(app.simulator.release_disk_requests(), 0);
}

#[tokio::test]
async fn with_client_certificates_required_only_callers_certified_by_the_client_ca_get_through_and_their_subject_is_audited()
 {
    let ca = Ca::new("gateway test CA");
    let stranger_ca = Ca::new("some other CA");
    let files = TlsFiles::issued_by(&ca);
    let app = spawn_tls_app(&files, true).await;

    let without_certificate = release_over(&app, ca.trusted_by_client()).await;
    assert!(without_certificate.is_err(), "{without_certificate:?}");

    let stranger = ca
        .trusted_by_client()
        .identity(stranger_ca.client_identity(&[
            (DnType::OrganizationName, "Example"),
            (DnType::CommonName, "billing-service"),
        ]));
    let from_another_ca = release_over(&app, stranger).await;
    assert!(from_another_ca.is_err(), "{from_another_ca:?}");

    // Refused during the handshake: nothing reached the service.
    assert_eq!(recorded_calls(&app).await, 0);
    assert_eq!(app.simulator.release_disk_requests(), 0);

    let billing = ca.trusted_by_client().identity(ca.client_identity(&[
        (DnType::OrganizationName, "Example"),
        (DnType::CommonName, "billing-service"),
    ]));
    let response = release_over(&app, billing)
        .await
        .expect("a caller with a certificate from the client CA gets through");

    let row = call_row(&app, &response.audit_id).await;
    assert_eq!(row["peer_identity"], "CN=billing-service,O=Example");
    assert_eq!(row["decision"], "allowed");
    assert_eq!(recorded_calls(&app).await, 1);
}

#[tokio::test]
async fn certificates_replaced_on_disk_are_served_to_new_connections_without_a_restart_or_dropping_old_ones()
 {
    let old_ca = Ca::new("CA before rotation");
    let new_ca = Ca::new("CA after rotation");
    let files = TlsFiles::issued_by(&old_ca);
    let app = spawn_tls_app(&files, true).await;
    let old_client = || {
        old_ca
            .trusted_by_client()
            .identity(old_ca.client_identity(&[(DnType::CommonName, "old-client")]))
    };
    let new_client = || {
        new_ca
            .trusted_by_client()
            .identity(new_ca.client_identity(&[(DnType::CommonName, "new-client")]))
    };
    let established = connect(&app, old_client())
        .await
        .expect("connect before rotation");
    healthy(established.clone())
        .await
        .expect("healthy before rotation");
    assert!(connect_and_check(&app, new_client()).await.is_err());

    files.rotate_to(&new_ca);

    eventually(
        RELOAD_DEADLINE,
        "the new certificate and client CA to be served",
        || async { connect_and_check(&app, new_client()).await.ok() },
    )
    .await;

    let response = release_over(&app, new_client())
        .await
        .expect("a release under the new certificates");
    assert_eq!(
        call_row(&app, &response.audit_id).await["peer_identity"],
        "CN=new-client"
    );
    // The connection made before the rotation was kept (reconnecting would
    // fail: this client trusts only the old CA).
    healthy(established)
        .await
        .expect("the established connection still serves");
    assert!(connect_and_check(&app, old_client()).await.is_err());
}

#[tokio::test]
async fn a_replacement_certificate_that_cannot_be_loaded_is_logged_and_the_current_one_kept() {
    let ca = Ca::new("gateway test CA");
    let files = TlsFiles::issued_by(&ca);
    let app = spawn_tls_app(&files, false).await;

    files.replace(
        &files.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );

    let cert_path = path_string(&files.cert);
    eventually(
        RELOAD_DEADLINE,
        "the broken file to be reported, naming its variable and path",
        || async {
            let logs = captured_logs();
            logs.lines()
                .any(|line| line.contains("cannot be loaded") && line.contains(&cert_path))
                .then_some(())
        },
    )
    .await;

    connect_and_check(&app, ca.trusted_by_client())
        .await
        .expect("the previous certificate is still served");
}

async fn connect_and_check(app: &TestApp, tls: ClientTlsConfig) -> Result<(), String> {
    healthy(connect(app, tls).await?).await
}

#[tokio::test]
async fn plaintext_on_a_non_loopback_address_when_allowed_is_served_with_a_warning() {
    let app = spawn_app_with_settings(&[
        ("GATEWAY_LISTEN_ADDR", "0.0.0.0:0"),
        ("GATEWAY_ALLOW_PLAINTEXT", "true"),
    ])
    .await;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", app.addr.port()))
        .expect("a valid endpoint")
        .connect()
        .await
        .expect("plaintext is served");
    healthy(channel).await.expect("healthy");

    let addr = app.addr.to_string();
    let logs = captured_logs();
    assert!(
        logs.lines().any(|line| line.contains("WARN")
            && line.contains("GATEWAY_ALLOW_PLAINTEXT")
            && line.contains(&addr)),
        "no plaintext warning for {addr}"
    );
}

/// Runs `zenlayer-gateway serve` with a minimal valid environment plus
/// `extra`, expecting it to exit on its own.
async fn serve_with(extra: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zenlayer-gateway"));
    command
        .arg("serve")
        .env_clear()
        // Never contacted: the pool connects lazily, and these runs stop first.
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/none")
        .env("ZENLAYER_ACCESS_TOKEN", "unused-token")
        .env("JWT_HS256_SECRET", "unused-secret-unused-secret-unused")
        .env("JWT_ISSUER", "tls-test")
        .env("GATEWAY_ADMIN_ADDR", "127.0.0.1:0")
        .env("GATEWAY_LOG_FORMAT", "json")
        .envs(extra.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("serve exits on its own instead of serving")
        .expect("run the binary")
}

#[tokio::test]
async fn serve_refuses_plaintext_on_a_non_loopback_address_before_binding() {
    let output = serve_with(&[("GATEWAY_LISTEN_ADDR", "0.0.0.0:0")]).await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("invalid configuration"), "{stderr}");
    assert!(stderr.contains("GATEWAY_ALLOW_PLAINTEXT"), "{stderr}");
    assert!(stderr.contains("GATEWAY_TLS_CERT_FILE"), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("serving"), "{stdout}");
}

#[tokio::test]
async fn serve_stops_at_start_up_naming_the_variable_and_path_of_a_certificate_file_it_cannot_use()
{
    let ca = Ca::new("gateway test CA");
    let files = TlsFiles::issued_by(&ca);
    let missing = files.dir.path().join("missing.crt");
    let key = path_string(&files.key);

    let output = serve_with(&[
        ("GATEWAY_LISTEN_ADDR", "127.0.0.1:0"),
        ("GATEWAY_TLS_CERT_FILE", &path_string(&missing)),
        ("GATEWAY_TLS_KEY_FILE", &key),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "GATEWAY_TLS_CERT_FILE {} cannot be read",
            missing.display()
        )),
        "{stderr}"
    );

    // A key that is not the certificate's.
    let (_, other_key) = ca.server_certificate();
    files.replace(&files.key, &other_key);
    let output = serve_with(&[
        ("GATEWAY_LISTEN_ADDR", "127.0.0.1:0"),
        ("GATEWAY_TLS_CERT_FILE", &path_string(&files.cert)),
        ("GATEWAY_TLS_KEY_FILE", &key),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("GATEWAY_TLS_KEY_FILE {key}")),
        "{stderr}"
    );
}
