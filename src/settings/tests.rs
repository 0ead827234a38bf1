use super::*;
use std::collections::HashMap;
use std::time::Duration;

fn source(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The least a `serve` configuration needs (behind a mesh sidecar that
/// terminates TLS, so no certificate files).
fn minimal() -> HashMap<String, String> {
    source(&[
        ("GATEWAY_ALLOW_PLAINTEXT", "true"),
        (
            "DATABASE_URL",
            "postgres://gateway:db-password-123@db.internal:5432/gateway?sslmode=verify-full",
        ),
        ("ZENLAYER_ACCESS_KEY_ID", "AKIDexample"),
        ("ZENLAYER_ACCESS_KEY_PASSWORD", "zenlayer-secret-456"),
        (
            "JWT_JWKS_URL",
            "https://login.example.com/.well-known/jwks.json",
        ),
        ("JWT_ISSUER", "https://login.example.com/"),
    ])
}

#[test]
fn a_minimal_configuration_takes_the_documented_defaults() {
    let settings = Settings::load(&minimal()).unwrap();
    assert_eq!(settings.server.listen_addr.to_string(), "0.0.0.0:50051");
    assert_eq!(settings.server.admin_addr.to_string(), "127.0.0.1:9090");
    assert_eq!(settings.server.shutdown_grace, Duration::from_secs(15));
    assert_eq!(
        settings.server.idempotency_retention,
        Duration::from_secs(24 * 3600)
    );
    assert_eq!(
        settings.zenlayer.base_url.as_str(),
        "https://console.zenlayer.com/"
    );
    assert_eq!(settings.zenlayer.api_version, "2023-03-13");
    assert_eq!(settings.zenlayer.timeout, Duration::from_secs(10));
    assert_eq!(settings.auth.policy.audience, "zenlayer-gateway");
    assert_eq!(settings.auth.policy.roles_claim, "roles");
    assert_eq!(settings.auth.release_role, "disk:release");
    assert_eq!(settings.auth.policy.leeway_seconds, 30);
}

#[test]
fn every_problem_is_reported_at_once_each_naming_its_variable() {
    let mut bad = minimal();
    bad.remove("DATABASE_URL");
    bad.remove("JWT_ISSUER");
    bad.insert("GATEWAY_LISTEN_ADDR".into(), "not-an-address".into());
    bad.insert("ZENLAYER_TIMEOUT_MS".into(), "soon".into());
    bad.insert("JWT_LEEWAY_SECONDS".into(), "3600".into());
    bad.insert("JWT_ALGORITHMS".into(), "RS256,none".into());
    bad.insert("IDEMPOTENCY_RETENTION_HOURS".into(), "1".into());
    let message = Settings::load(&bad).unwrap_err().to_string();
    for variable in [
        "DATABASE_URL",
        "JWT_ISSUER",
        "GATEWAY_LISTEN_ADDR",
        "ZENLAYER_TIMEOUT_MS",
        "JWT_LEEWAY_SECONDS",
        "JWT_ALGORITHMS",
        "IDEMPOTENCY_RETENTION_HOURS",
    ] {
        assert!(
            message.contains(variable),
            "{variable} missing from:\n{message}"
        );
    }
}

#[test]
fn credentials_must_be_exactly_one_kind() {
    let mut both = minimal();
    both.insert("ZENLAYER_ACCESS_TOKEN".into(), "token".into());
    assert!(
        Settings::load(&both)
            .unwrap_err()
            .to_string()
            .contains("not both")
    );
    let mut half = minimal();
    half.remove("ZENLAYER_ACCESS_KEY_PASSWORD");
    assert!(
        Settings::load(&half)
            .unwrap_err()
            .to_string()
            .contains("ZENLAYER_ACCESS_KEY_PASSWORD is required")
    );
    let mut symmetric_and_public = minimal();
    symmetric_and_public.insert("JWT_HS256_SECRET".into(), "shared".into());
    assert!(
        Settings::load(&symmetric_and_public)
            .unwrap_err()
            .to_string()
            .contains("JWT_HS256_SECRET cannot be combined")
    );
}

#[test]
fn plain_http_upstreams_are_refused_unless_local_or_allowed() {
    let with = |key: &str, value: &str| {
        let mut values = minimal();
        values.insert(key.into(), value.into());
        Settings::load(&values)
    };
    assert!(with("ZENLAYER_BASE_URL", "http://zenlayer.example.com").is_err());
    assert!(with("ZENLAYER_BASE_URL", "http://127.0.0.1:8080").is_ok());
    assert!(with("JWT_JWKS_URL", "http://login.example.com/jwks.json").is_err());
    let mut allowed = minimal();
    allowed.insert(
        "ZENLAYER_BASE_URL".into(),
        "http://zenlayer-staging.internal".into(),
    );
    allowed.insert("ZENLAYER_ALLOW_INSECURE_HTTP".into(), "true".into());
    assert!(Settings::load(&allowed).is_ok());
}

#[test]
fn secrets_appear_neither_in_errors_nor_in_debug_output() {
    let settings = Settings::load(&minimal()).unwrap();
    let debug = format!("{settings:?}");
    assert!(
        !debug.contains("db-password-123") && !debug.contains("zenlayer-secret-456"),
        "{debug}"
    );
    let mut bad = minimal();
    bad.insert(
        "DATABASE_URL".into(),
        "mysql://user:db-password-123@host/db".into(),
    );
    bad.insert("ZENLAYER_ACCESS_TOKEN".into(), "zenlayer-secret-456".into());
    let message = Settings::load(&bad).unwrap_err().to_string();
    assert!(message.contains("DATABASE_URL"), "{message}");
    assert!(
        !message.contains("db-password-123") && !message.contains("zenlayer-secret-456"),
        "{message}"
    );
}

#[test]
fn the_database_url_sslmode_is_honoured() {
    let settings = Settings::load(&minimal()).unwrap();
    let options = settings.database.connect_options().unwrap();
    assert!(matches!(
        options.get_ssl_mode(),
        sqlx::postgres::PgSslMode::VerifyFull
    ));
}

#[test]
fn values_are_trimmed_and_header_values_checked_before_start_up() {
    let mut padded = minimal();
    padded.insert("ZENLAYER_ACCESS_KEY_ID".into(), "AKIDexample\n".into());
    let settings = Settings::load(&padded).unwrap();
    assert!(
        matches!(settings.zenlayer.credential, crate::zenlayer::Credential::AccessKey { ref id, .. } if id == "AKIDexample")
    );
    let mut broken = minimal();
    broken.insert("ZENLAYER_ACCESS_KEY_ID".into(), "AKID example".into());
    broken.insert("ZENLAYER_API_VERSION".into(), "2023-03-13\u{0}".into());
    let message = Settings::load(&broken).unwrap_err().to_string();
    assert!(
        message.contains("ZENLAYER_ACCESS_KEY_ID contains spaces"),
        "{message}"
    );
    assert!(
        message.contains("ZENLAYER_API_VERSION contains"),
        "{message}"
    );
}
