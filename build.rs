//! Compiles the gRPC contract with a pure-Rust protobuf compiler, so building
//! needs no system `protoc`, and keeps the file descriptor set for reflection.

use prost::Message;
use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &["proto/zenlayer/vm/v1/disk.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The migrations are embedded by `sqlx::migrate!`: rebuild when they change.
    println!("cargo:rerun-if-changed=migrations");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let descriptor_path = out_dir.join("zenlayer_gateway_descriptor.bin");
    fs::write(&descriptor_path, descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_protos(PROTOS, &["proto"])?;
    Ok(())
}
