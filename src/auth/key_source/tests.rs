//! The single flight and its pacing, against a real HTTP endpoint.

use super::*;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","n":"sXch","e":"AQAB"}]}"#;

/// A JWKS endpoint that answers after `delay` and counts the fetches it
/// was asked for.
#[derive(Debug, Clone)]
struct Issuer {
    url: Url,
    failing: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
}

impl Issuer {
    async fn start(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = Self {
            url: Url::parse(&format!("http://{}/jwks", listener.local_addr().unwrap())).unwrap(),
            failing: Arc::default(),
            fetches: Arc::default(),
        };
        let state = issuer.clone();
        let app = Router::new().route(
            "/jwks",
            get(move || async move { state.answer(delay).await }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        issuer
    }

    async fn answer(&self, delay: Duration) -> Result<&'static str, StatusCode> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        if self.failing.load(Ordering::SeqCst) {
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        Ok(JWKS)
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn cache(&self, cooldown: Duration) -> Arc<JwksCache> {
        Arc::new(JwksCache::new(self.url.clone(), cooldown, Metrics::new()).unwrap())
    }
}

/// Polls `condition` until it holds, for at most five seconds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch() {
    let issuer = Issuer::start(Duration::from_millis(200)).await;
    // No cooldown: only the single flight keeps this to one fetch.
    let cache = issuer.cache(Duration::ZERO);
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let cache = cache.clone();
        callers.spawn(async move { cache.refreshed().await.is_some() });
    }
    while let Some(got_keys) = callers.join_next().await {
        assert!(got_keys.unwrap(), "every waiter sees the fetched keys");
    }
    assert_eq!(issuer.fetches(), 1);
}

#[tokio::test]
async fn a_fetch_whose_callers_all_gave_up_still_completes_and_counts_for_the_cooldown() {
    let issuer = Issuer::start(Duration::from_millis(800)).await;
    let cache = issuer.cache(Duration::from_secs(60));
    // Five waves of callers who wait 50 ms each, all before the answer.
    for _wave in 0..5 {
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let cache = cache.clone();
            callers.spawn(async move {
                tokio::time::timeout(Duration::from_millis(50), cache.refreshed()).await
            });
        }
        while let Some(outcome) = callers.join_next().await {
            outcome
                .unwrap()
                .expect_err("the caller gives up before the answer");
        }
    }
    eventually("the abandoned fetch stores its keys", || {
        cache.cached().is_some()
    })
    .await;
    assert!(*cache.held.borrow());
    assert!(cache.refreshed().await.is_some());
    assert_eq!(issuer.fetches(), 1, "one fetch for every caller");
}

#[tokio::test]
async fn the_cooldown_runs_from_the_start_of_a_fetch() {
    let issuer = Issuer::start(Duration::from_millis(400)).await;
    let cache = issuer.cache(Duration::from_millis(300));
    cache.refreshed().await.expect("keys");
    // 400 ms since the first fetch began, 0 since it ended.
    cache.refreshed().await.expect("keys");
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn without_keys_callers_may_fetch_sooner_than_the_cooldown() {
    let issuer = Issuer::start(Duration::ZERO).await;
    issuer.failing.store(true, Ordering::SeqCst);
    let cache = issuer.cache(Duration::from_secs(60));
    cache.current().await.expect_err("the issuer is down");
    cache.current().await.expect_err("still down");
    assert_eq!(issuer.fetches(), 1, "callers are still paced");
    issuer.failing.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(3);
    while cache.current().await.is_err() {
        assert!(Instant::now() < deadline, "keys not fetched within 3 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn the_refresher_retries_quickly_until_keys_are_held() {
    let issuer = Issuer::start(Duration::ZERO).await;
    issuer.failing.store(true, Ordering::SeqCst);
    let cache = issuer.cache(Duration::from_secs(60));
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    cache
        .clone()
        .spawn_refresher(Duration::from_secs(3600), shutdown);
    let mut held = cache.held.subscribe();
    eventually("a retry after the first failure", || issuer.fetches() >= 2).await;
    assert!(!*held.borrow_and_update());
    issuer.failing.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), held.wait_for(|held| *held))
        .await
        .expect("keys held within the backoff")
        .unwrap();
}

#[test]
fn retries_back_off_from_a_quarter_second_to_five_seconds() {
    let delays: Vec<u64> = std::iter::successors(Some(FIRST_RETRY_DELAY), |d| Some(next_retry(*d)))
        .take(7)
        .map(|d| d.as_millis() as u64)
        .collect();
    assert_eq!(delays, [250, 500, 1000, 2000, 4000, 5000, 5000]);
}

/// A JWKS endpoint serving `body`.
async fn serving(body: String) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/jwks", listener.local_addr().unwrap())).unwrap();
    let app = Router::new().route("/jwks", get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The key set padded with whitespace to `size` bytes.
fn padded_jwks(size: usize) -> String {
    let mut body = JWKS.to_owned();
    body.insert_str(1, &" ".repeat(size - JWKS.len()));
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn a_key_set_of_up_to_one_mebibyte_is_read_and_a_larger_one_refused() {
    // A set with many large keys runs to tens of kilobytes; a megabyte is
    // not a key set but an answer to stop reading.
    for (size, held) in [(1024 * 1024, true), (1024 * 1024 + 1, false)] {
        let cache = Arc::new(
            JwksCache::new(
                serving(padded_jwks(size)).await,
                Duration::ZERO,
                Metrics::new(),
            )
            .unwrap(),
        );
        let downloaded = cache.download().await;
        match held {
            true => assert!(downloaded.is_ok(), "{size} bytes: {downloaded:?}"),
            false => {
                let error = downloaded.expect_err("refused");
                assert!(error.contains("exceeds 1048576 bytes"), "{error}");
            }
        }
    }
}

#[test]
fn a_caller_may_start_a_fetch_once_the_interval_has_passed_since_the_last_and_not_before() {
    let interval = Duration::from_secs(1);
    let at = Instant::now();
    assert!(caller_may_start(None, at, interval), "the first may");
    assert!(!caller_may_start(Some(at), at, interval));
    assert!(!caller_may_start(
        Some(at),
        at + interval - Duration::from_millis(1),
        interval
    ));
    assert!(caller_may_start(Some(at), at + interval, interval));
    assert!(caller_may_start(Some(at), at + 2 * interval, interval));
}
