//! Integration tests: a real gateway over TCP, a real PostgreSQL, a real
//! HTTP key server, and a Zenlayer simulator that checks signatures as
//! Zenlayer does.

mod audit;
mod auth;
mod blast_radius;
mod deadlines;
mod export;
mod faults;
mod follow_up;
mod get_release;
mod group_commit;
mod grpcurl;
mod health;
mod helpers;
mod idempotency;
mod jwks;
mod monitoring;
mod observability;
mod ocsf;
mod otlp;
mod outcomes;
mod pg_relay;
mod policy;
mod preflight;
mod processes;
mod raw_h2;
mod release;
mod sdk;
mod tls;
mod token_cache;
mod token_edges;
mod tokens;
mod trail;
mod transport;
mod zc2;
