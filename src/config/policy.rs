//! `[policy]` and `[identity]`: where the actionpolicy files and the identity rules are.

use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;

/// Where the identity mapping rules live.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// A TOML file of `[[rule]]` tables (see `security::identity`); none denies every caller.
    #[serde(default)]
    pub rules: Option<PathBuf>,
}

/// Where actionpolicy files live and what applies when none does.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy directory: `default.policy`, `<agent>.policy`, `<collective>/<agent>.policy`
    /// and `groups`. Watched and reloaded on change.
    pub dir: PathBuf,
    /// What applies when no policy file does, and inside a file without `policy default`.
    #[serde(default = "defaults::unconfigured")]
    pub unconfigured: crate::policy::Effect,
}
