//! Test doubles for azbroker's end-to-end tests.
//!
//! - [`tls`]: a per-test CA and TLS server configurations (valid and broken).
//! - [`entra_double`]: a local HTTPS Microsoft identity platform token endpoint.
//! - [`fake_az`]: a fake `az` (Azure CLI) script to put on `PATH`.
//! - [`jwt`]: JWT-shaped, unverifiable access tokens shared by the doubles.
//! - [`arm_double`]: a local HTTPS Azure Resource Manager (subscriptions,
//!   resource groups, claims challenges, wrong-tenant errors).
//! - [`azurite`]: the real Azure Storage emulator (npm), started with HTTPS and
//!   bearer-token checks.
//! - [`https_server`]: the small HTTPS server the ARM double runs on.
//!
//! Everything listens on or talks to loopback only.

pub mod arm_double;
pub mod azurite;
pub mod entra_double;
pub mod fake_az;
pub mod https_server;
pub mod jwt;
pub mod tls;

pub use arm_double::{ArmDouble, ArmSubscription};
pub use azurite::Azurite;
pub use entra_double::{EntraDouble, RecordedRequest};
pub use fake_az::{FakeAz, Mode};
pub use tls::TestPki;
