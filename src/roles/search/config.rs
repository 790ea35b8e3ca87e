//! The search role's own settings: `[roles.search]` in configuration.

use serde::{Deserialize, Serialize};

/// Which engine holds the collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// tantivy, in `<data.dir>/search/<collection>`: one instance per index.
    Embedded,
    /// A Typesense server at `typesense_url`, its API key the role's secret `TYPESENSE_API_KEY`.
    Typesense,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    pub backend: BackendKind,
    /// The collection's name (the seed's `elements`).
    pub collection: String,
    /// Where the Typesense backend reaches Typesense.
    pub typesense_url: String,
    /// Timeout of one call to Typesense.
    pub typesense_timeout_ms: u64,
    /// Largest `POST /documents/import` body.
    pub import_max_bytes: usize,
    /// Indexing memory of the embedded engine's writer (at least 15 MB): a bigger arena writes
    /// fewer, larger segments for imports beyond it, and stays in the process's memory.
    pub writer_memory_bytes: usize,
    /// Background merges of the embedded engine that may run at once (each holds its own buffers).
    pub merge_threads: usize,
    /// Decompressed document-store blocks (16 KiB each) the embedded engine keeps per segment.
    pub doc_store_cache_blocks: usize,
    /// Searches the embedded engine runs at once (0: one per core); more wait their turn.
    pub search_threads: usize,
}

impl SearchConfig {
    /// What `fountain config check` and every start refuse.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = (1..=64).contains(&self.collection.len())
            && self.collection.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err("collection: must be 1-64 characters of A-Z a-z 0-9 _ -".into());
        }
        if self.backend == BackendKind::Typesense {
            let url = url::Url::parse(&self.typesense_url).map_err(|e| format!("typesense_url: {e}"))?;
            if !matches!(url.scheme(), "http" | "https")
                || !url.username().is_empty()
                || url.password().is_some()
            {
                return Err("typesense_url: must be http(s) without credentials".into());
            }
        }
        if self.typesense_timeout_ms == 0 {
            return Err("typesense_timeout_ms must be at least 1".into());
        }
        if self.writer_memory_bytes < 15_000_000 {
            return Err("writer_memory_bytes must be at least 15000000".into());
        }
        if self.search_threads > 256 {
            return Err("search_threads must be 0-256".into());
        }
        if !(1..=8).contains(&self.merge_threads) {
            return Err("merge_threads must be 1-8".into());
        }
        Ok(())
    }
}
