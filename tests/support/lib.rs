//! Test doubles for azbroker's end-to-end tests.
//!
//! - [`tls`]: a per-test CA and TLS server configurations (valid and broken).
//! - [`entra_double`]: a local HTTPS Microsoft identity platform token endpoint.
//! - [`fake_az`]: a fake `az` (Azure CLI) script to put on `PATH`.
//! - [`jwt`]: JWT-shaped, unverifiable access tokens shared by the doubles.
//! - [`diagnose_doubles`]: an HTTPS endpoint, a silent server, a closed port and
//!   a forward (CONNECT) proxy, for the network checks of `azbroker diagnose`.
//!
//! Everything listens on or talks to loopback only.

pub mod diagnose_doubles;
pub mod entra_double;
pub mod fake_az;
pub mod jwt;
pub mod tls;

pub use entra_double::{EntraDouble, RecordedRequest};
pub use fake_az::{FakeAz, Mode};
pub use tls::TestPki;
