//! The result cache: keys are canonical JSON of (task project, domain,
//! name, cache version, inputs); entries live in the store.

use std::sync::Arc;

use kozmo_interface::literals::LiteralMap;
use kozmo_interface::{Catalog, CatalogKey, PluginError, Result};

use crate::store::Store;

/// The store key of a catalog key (task version is not part of it).
pub fn key_string(key: &CatalogKey) -> String {
    let v = serde_json::json!({
        "project": key.identifier.project,
        "domain": key.identifier.domain,
        "name": key.identifier.name,
        "cache_version": key.cache_version,
        "inputs": key.inputs,
    });
    v.to_string()
}

/// A [`Catalog`] over the store.
#[derive(Clone)]
pub struct StoreCatalog {
    store: Arc<dyn Store>,
}

impl StoreCatalog {
    /// A catalog in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreCatalog { store }
    }
}

impl Catalog for StoreCatalog {
    fn get(&self, key: &CatalogKey) -> Result<Option<LiteralMap>> {
        self.store
            .catalog_get(&key_string(key))
            .map_err(|e| PluginError::system("CatalogError", e.to_string()))
    }

    fn put(&self, key: &CatalogKey, outputs: &LiteralMap) -> Result<()> {
        self.store
            .catalog_put(&key_string(key), outputs)
            .map_err(|e| PluginError::system("CatalogError", e.to_string()))
    }
}
