//! drover: a launcher and scheduler for chunked array work over HDF5 on worker pools
//! connected by authenticated QUIC. See ARCHITECTURE.md for the map.

// Links the BLAS ndarray's matrix products call (Debian's OpenBLAS; exec::gemm).
extern crate blas_src;

pub mod batch;
pub mod cli;
pub mod config;
pub mod core;
pub mod dashboard;
pub mod exec;
pub mod fuzzing;
pub mod pool;
pub mod proto;
pub mod server;
pub mod transport;
pub mod worker;
