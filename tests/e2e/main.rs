//! End-to-end tests: the real `azbrokerd` and `azbroker` against test doubles
//! that speak the real wire formats (a fake `az`, an HTTPS Entra ID endpoint).

mod harness;
mod login_support;

mod audit;
mod cache_and_chain;
mod configuration;
mod credentials;
mod device_code;
mod diagnose;
mod exec;
mod failure_cache;
mod fuzz;
mod hardening;
mod install;
mod interactive_browser;
mod lifecycle;
mod limits;
mod login_hijack;
mod logout_and_persistence;
mod managed_identity;
mod mcp;
mod network;
mod policy;
mod refresh;
mod robustness;
mod secret_store;
mod security;
mod service;
mod sharing;
mod shim;
mod socket_trust;
mod third_party;
mod token_output;
mod upstream;
