//! [`PluginProperties`].

use serde::{Deserialize, Serialize};

/// Default bound of generated names when a plugin sets none.
pub const DEFAULT_GENERATED_NAME_MAX_LENGTH: u32 = 50;

/// Smallest `generated_name_max_length` a plugin may ask for (a hashed name
/// has 8 characters).
pub const MIN_GENERATED_NAME_MAX_LENGTH: u32 = 8;

/// What a plugin tells the host about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PluginProperties {
    /// Do not use the host's catalog cache for this plugin's tasks.
    pub disable_node_level_caching: bool,
    /// Bound for generated names (`None` = 50); at least 8.
    pub generated_name_max_length: Option<u32>,
}

impl PluginProperties {
    /// The bound in force: the plugin's, else 50.
    pub fn effective_generated_name_max_length(&self) -> u32 {
        self.generated_name_max_length
            .unwrap_or(DEFAULT_GENERATED_NAME_MAX_LENGTH)
    }
}
