//! `countersign.v1`: the gRPC contract between a gateway and the control plane.
//!
//! Generated code only. Domain types on either side are built from these with
//! `TryFrom`, so generated types stop at the boundary.

#![allow(clippy::all, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod v1 {
    tonic::include_proto!("countersign.v1");
}
