//! End-to-end tests: the real `azbrokerd` and `azbroker` against test doubles
//! that speak the real wire formats (a fake `az`, an HTTPS Entra ID endpoint).

mod harness;
mod login_support;

mod cache_and_chain;
mod credentials;
mod device_code;
mod diagnose;
mod interactive_browser;
mod lifecycle;
mod logout_and_persistence;
mod managed_identity;
mod mcp;
mod network;
mod refresh;
mod robustness;
mod security;
mod shim;
mod upstream;
