//! herd's wire protocol: the protobuf messages and the two gRPC services (`Workers`, `Sweeps`)
//! the coordinator serves.

pub mod v1 {
    tonic::include_proto!("herd.v1");
}

pub mod security;
