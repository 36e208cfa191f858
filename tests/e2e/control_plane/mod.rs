//! Control-plane tests: basins, streams, error mapping, hostile clients and restarts.

mod basins;
mod errors;
mod restart;
mod robustness;
mod streams;
mod tokens;
