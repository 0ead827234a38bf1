//! Code generated from `proto/`, and the descriptor set that reflection serves.

tonic::include_proto!("zenlayer.vm.v1");

/// Encoded `FileDescriptorSet` of the gateway's protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("zenlayer_gateway_descriptor");
