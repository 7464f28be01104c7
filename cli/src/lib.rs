//! What the command-line programs share, private to this package: the
//! programs themselves are `src/bin/azbroker` (the CLI), `src/bin/azbroker-diagnose`
//! (`azbroker diagnose`, a program of its own so that its network stack stays out
//! of the `azbroker` that scripts start for every token) and
//! `src/bin/azbroker-az-shim` (the `az` token shim).
//!
//! - [`advice`] explains a failure (network or Entra ID) with its remedy; the
//!   CLI's errors and `azbroker diagnose` use it.

pub mod advice;
