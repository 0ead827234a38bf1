//! zenlayer-gateway: the one audited door through which internal services may
//! release Zenlayer cloud disks.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod budget;
pub mod database;
pub mod deadline;
pub mod decision;
pub mod dev;
pub mod domain;
pub mod ephemeral_postgres;
pub mod export;
pub mod freeze;
pub mod health;
pub mod metrics;
pub mod pb;
pub mod policy;
pub mod rpc;
pub mod settings;
pub mod shutdown;
pub mod simulator;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod trail;
pub mod transport;
pub mod zenlayer;
