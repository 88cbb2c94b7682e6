//! RBAC with Choria actionpolicy files: parse, decide, reload.
//!
//! - [`actionpolicy`]: the file format and the groups file, parsed as go-choria reads them; a
//!   line go-choria skips is skipped with a warning only where that cannot widen what is
//!   allowed, and refuses the file (file and line named) otherwise.
//! - [`set`]: a policy directory: `<collective>/<agent>.policy` overrides `<agent>.policy`, which
//!   overrides `default.policy`; a gateway-wide setting decides when none applies.
//! - [`authorize()`]: the pure decision, from the gateway (conditions become filter additions or
//!   fail closed) or from a node (facts and classes checked as a Choria server does).
//!
//! The current set, watched and swapped atomically, is held with the other rules in
//! [`crate::rules`].

pub mod actionpolicy;
mod authorize;
mod index;
pub mod set;
#[cfg(test)]
mod tests;

pub use actionpolicy::{Conditions, Effect, Groups, ParseError, PolicyFile, SkipReason, Skipped};
pub use authorize::{
    Decision, Denied, DenyKind, Permit, Query, Source, Vantage, authorize, describe,
};
pub use set::{LoadError, PolicySet};
