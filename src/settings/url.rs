//! Upstream URLs: HTTPS, or plain HTTP only where it cannot leak.

use super::reader::Reader;
use reqwest::Url;

/// An upstream URL: HTTPS, or plain HTTP only to this machine (the
/// simulator, a test's key server) or, for Zenlayer, when
/// `ZENLAYER_ALLOW_INSECURE_HTTP=true` says so explicitly. Plain HTTP would
/// carry signed requests and key sets in the clear.
pub(super) fn upstream_url(r: &mut Reader, key: &str, raw: &str) -> Url {
    let fallback = || Url::parse("https://invalid.invalid").expect("a valid URL");
    let Ok(url) = Url::parse(raw.trim()) else {
        r.problem(format!(
            "{key}={raw:?} is not an absolute URL such as https://host"
        ));
        return fallback();
    };
    let loopback = match url.host() {
        Some(::url::Host::Domain(d)) => d == "localhost",
        Some(::url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(::url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let allowed =
        key == "ZENLAYER_BASE_URL" && r.or("ZENLAYER_ALLOW_INSECURE_HTTP", "true or false", false);
    match url.scheme() {
        "https" => {}
        "http" if loopback || allowed => {}
        "http" => r.problem(format!(
            "{key}={url} uses plain http to a non-loopback host; use https"
        )),
        other => r.problem(format!("{key}={url} has scheme {other:?}; expected https")),
    }
    url
}
