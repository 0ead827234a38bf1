//! Logs and traces. Logs are JSON lines in production and readable text on
//! a terminal, filtered by `RUST_LOG` (default `info`). Traces follow
//! OpenTelemetry and are exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Every call has a trace id either
//! way (the caller's, from `traceparent`, or a new one: see
//! `rpc::context`) for its log line, its audit row and the `traceparent`
//! sent to Zenlayer.
//!
//! Spans cost CPU on every call, so each goes only where it is used: the
//! OpenTelemetry layer is installed only when spans are exported, and the
//! spans inside a call that exist for traces alone (target [`TRACE_ONLY`])
//! never reach the log layer, whose lines carry the call's own span (request
//! id, call id, trace id).

use crate::settings::{LogFormat, TelemetrySettings};
use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The target of spans that are for traces only: the steps inside a call
/// (authorization, audit writes, upstream requests). Log lines leave them
/// out; their events still carry the call's span. (`#[instrument]` takes
/// a target only as a literal: those spans spell this out.)
pub const TRACE_ONLY: &str = "zenlayer_gateway::trace";

/// Whether spans leave the process: set once by [`init`].
static EXPORTED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported. Fields that only traces read (the RPC
/// attributes of OpenTelemetry's conventions, the status code) are given
/// to a span only then: the log layer formats every field a span is given,
/// and formats them all again on each `record`.
pub fn spans_exported() -> bool {
    EXPORTED.load(Ordering::Relaxed)
}

/// Records the call's gRPC status code on the current (server) span, for
/// traces; log lines carry the code as a field of their own.
pub fn record_grpc_status(code: i32) {
    if spans_exported() {
        tracing::Span::current().record("rpc.grpc.status_code", code);
    }
}

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes spans.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is still buffered. Call once, on the way out.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("zenlayer-gateway: could not flush traces: {error}");
        }
    }
}

/// Installs the global subscriber and propagator. Call once, before
/// anything logs.
pub fn init(settings: &TelemetrySettings) -> anyhow::Result<Telemetry> {
    let provider = tracer_provider(settings)?;
    // One filter for log lines and spans alike: `RUST_LOG=warn` also drops
    // the info-level spans traces are made of.
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if settings.otlp_endpoint.is_none() {
        // Spans for traces alone have no reader unless traces are exported
        // (the log layer leaves them out), yet each was made, entered on
        // every poll and closed on every call: off, they cost nothing.
        filter = filter.add_directive(
            format!("{TRACE_ONLY}=off")
                .parse()
                .expect("a valid directive"),
        );
    }
    let traces = settings
        .otlp_endpoint
        .is_some()
        .then(|| trace_layer(&provider));
    Registry::default()
        .with(filter)
        .with(log_layer(settings.log_format).with_filter(log_spans()))
        .with(traces)
        .try_init()
        .context("install the log subscriber")?;
    EXPORTED.store(settings.otlp_endpoint.is_some(), Ordering::Relaxed);
    Ok(Telemetry { provider })
}

/// Logs on standard error, for commands whose standard output is their
/// product (`audit export`). No spans are exported.
pub fn init_on_stderr(settings: &TelemetrySettings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match settings.log_format {
        LogFormat::Json => logs.json().boxed(),
        LogFormat::Text => logs.boxed(),
    };
    Registry::default()
        .with(filter)
        .with(logs)
        .try_init()
        .context("install the log subscriber")
}

/// What the log layer sees: every event, and the spans that are not for
/// traces only. Decided per call site, once.
pub fn log_spans() -> FilterFn<fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(|metadata| !metadata.is_span() || metadata.target() != TRACE_ONLY)
}

/// The tracer provider: exporting over OTLP when an endpoint is set, and
/// otherwise only minting trace and span ids.
pub fn tracer_provider(settings: &TelemetrySettings) -> anyhow::Result<SdkTracerProvider> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("zenlayer-gateway");
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    if let Some(endpoint) = &settings.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .with_context(|| {
                format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: cannot build the OTLP exporter")
            })?;
        provider = provider.with_batch_exporter(exporter);
    }
    Ok(provider.build())
}

/// The layer that turns spans into OpenTelemetry spans.
fn trace_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("zenlayer-gateway"))
}

fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match format {
        // The current span's fields (request id, trace id, call id) go on
        // every line, so one call's lines can be found by any of them. The
        // list of enclosing spans would say nothing more (a call's lines
        // have one span) and costs a parse of each span's fields per line.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    }
}
