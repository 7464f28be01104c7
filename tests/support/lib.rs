//! Test doubles for azbroker's end-to-end tests.
//!
//! - [`tls`]: a per-test CA and TLS server configurations (valid and broken).
//! - [`entra_double`]: a local HTTPS Microsoft identity platform token endpoint.
//! - [`entra_user`]: its user flows (authorize, PKCE codes, rotating refresh tokens, device codes).
//! - [`fake_az`], [`fake_azd`], [`fake_pwsh`]: fake `az` (Azure CLI), `azd`
//!   and `pwsh` scripts to put on `PATH` (over [`fake_tool`]).
//! - [`managed_identity_double`]: App Service and IMDS managed identity endpoints.
//! - [`client_assertion`]: the Entra double's checks of certificate and federated assertions.
//! - [`certs`]: a service principal's certificate as PEM, encrypted PEM and PFX files.
//! - [`forward_proxy`]: a counting CONNECT / absolute-form HTTP proxy.
//! - [`jwt`]: JWT-shaped, unverifiable access tokens shared by the doubles.
//! - [`diagnose_doubles`]: an HTTPS endpoint, a silent server, a closed port and
//!   a forward (CONNECT) proxy, for the network checks of `azbroker diagnose`.
//! - [`arm_double`]: a local HTTPS Azure Resource Manager (subscriptions,
//!   resource groups, claims challenges, wrong-tenant errors).
//! - [`azurite`]: the real Azure Storage emulator (npm), started with HTTPS and
//!   bearer-token checks.
//! - [`loopback_server`]: the accept loop every network double runs on (own
//!   thread and runtime, stops on drop).
//! - [`https_server`]: HTTP/1.1 over TLS or plain TCP on it, for the Entra, ARM
//!   and managed identity doubles.
//!
//! Everything listens on or talks to loopback only.

pub mod arm_double;
pub mod azurite;
pub mod certs;
pub mod client_assertion;
pub mod diagnose_doubles;
pub mod entra_double;
pub mod entra_user;
pub mod fake_az;
pub mod fake_azd;
pub mod fake_pwsh;
pub mod fake_tool;
pub mod forward_proxy;
pub mod https_server;
pub mod jwt;
pub mod loopback_server;
pub mod managed_identity_double;
pub mod tls;

pub use arm_double::{ArmDouble, ArmSubscription};
pub use azurite::Azurite;
pub use entra_double::{EntraDouble, RecordedRequest};
pub use fake_az::{FakeAz, Mode};
pub use tls::TestPki;
