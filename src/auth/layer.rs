//! The tower layer that authenticates every `DiskService` call before its
//! handler runs. It does not reject: the handler must record refused
//! attempts (with the disk they named) in the audit trail, so the layer
//! attaches its [`Authentication`] and the handler refuses. Health and
//! reflection are left open for on-call.

use super::Authenticator;
use http::Request;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The gRPC path prefix of the services that require a token.
const PROTECTED_PREFIX: &str = "/zenlayer.vm.v1.DiskService/";

#[derive(Debug, Clone)]
pub struct AuthLayer {
    authenticator: Authenticator,
}

impl AuthLayer {
    pub fn new(authenticator: Authenticator) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Authenticator,
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !request.uri().path().starts_with(PROTECTED_PREFIX) {
            return Box::pin(inner.call(request));
        }
        let authenticator = self.authenticator.clone();
        Box::pin(async move {
            let authentication = authenticator.check(request.headers()).await;
            request.extensions_mut().insert(authentication);
            inner.call(request).await
        })
    }
}
