//! End-to-end tests: the real `azbrokerd` and `azbroker` against test doubles
//! that speak the real wire formats (a fake `az`, an HTTPS Entra ID endpoint).

mod harness;

mod cache_and_chain;
mod lifecycle;
mod mcp;
mod refresh;
mod robustness;
mod security;
