//! The embedded engine: a tantivy index under `<data.dir>/search/<collection>`.
//!
//! Writes go to one writer thread that owns the index writer. It takes every change waiting
//! when it wakes, applies them, commits once (tantivy fsyncs the segment files and the meta file
//! before `commit` returns) and reloads the reader, and only then answers each waiting caller:
//! concurrent syncs share one commit (group commit), an answered change survives kill -9, and
//! the next search sees it (read-your-writes). Searches use the last loaded reader and never
//! wait for the writer. A restart opens the index as it is on disk; nothing is rebuilt.
//!
//! tantivy's writer lock allows one writing process per index directory, so one instance serves
//! an index; more search replicas mean the Typesense backend.

mod index;
mod matcher;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use futures_util::future::LocalBoxFuture;
use prometheus::IntCounter;
use tantivy::indexer::IndexWriterOptions;
use tantivy::{IndexReader, IndexWriter, TantivyDocument};
use tokio::sync::oneshot;

use self::index::Fields;
use super::api::{Document, SearchResponse};
use super::backend::{BackendError, BackendResult, Change, Outcome, Query, SearchBackend};
use super::config::SearchConfig;

/// The changes of one caller, and where to send their outcomes.
struct Pending {
    changes: Vec<Change>,
    reply: oneshot::Sender<Result<Vec<Outcome>, String>>,
}

/// Most changes folded into one commit; more wait for the next.
const MAX_CHANGES_PER_COMMIT: usize = 200_000;

/// What the writer thread counts: changes per commit is how much group commit shares.
#[derive(Clone)]
pub struct CommitMetrics {
    /// Commits of the index (each one fsync and reader reload).
    pub commits: IntCounter,
    /// Changes (upserts and deletes) made durable and searchable by those commits.
    pub changes: IntCounter,
}

impl CommitMetrics {
    pub fn register(registry: &prometheus::Registry) -> Result<Self, String> {
        let commits = IntCounter::new("search_commits_total", "Commits of the embedded search index")
            .map_err(|e| e.to_string())?;
        let changes = IntCounter::new(
            "search_synced_changes_total",
            "Document changes made durable and searchable by embedded index commits",
        )
        .map_err(|e| e.to_string())?;
        for counter in [&commits, &changes] {
            registry.register(Box::new(counter.clone())).map_err(|e| e.to_string())?;
        }
        Ok(Self { commits, changes })
    }
}

pub struct Embedded {
    reader: IndexReader,
    /// Searches running at once: each thread that runs one keeps its own allocator arena and
    /// scratch memory, and more searches than cores only share the same CPUs.
    searching: tokio::sync::Semaphore,
    fields: Arc<Fields>,
    writer: Mutex<mpsc::Sender<Pending>>,
    path: PathBuf,
}

impl Embedded {
    /// Opens the index under `dir` (creating it on first start) and starts its writer thread.
    pub fn open(dir: &Path, settings: &SearchConfig, metrics: CommitMetrics) -> Result<Self, String> {
        let (index, fields) = index::open(dir)?;
        let options = IndexWriterOptions::builder()
            .memory_budget_per_thread(settings.writer_memory_bytes.max(15_000_000))
            .num_worker_threads(1)
            .num_merge_threads(settings.merge_threads.max(1))
            .build();
        let writer: IndexWriter<TantivyDocument> = index.writer_with_options(options).map_err(|e| {
            format!("search index {} cannot be written (one instance per index): {e}", dir.display())
        })?;
        let reader = index
            .reader_builder()
            .reload_policy(tantivy::ReloadPolicy::Manual)
            .doc_store_cache_num_blocks(settings.doc_store_cache_blocks)
            .try_into()
            .map_err(|e| format!("search index {}: {e}", dir.display()))?;
        let fields = Arc::new(fields);
        let (sender, receiver) = mpsc::channel();
        let thread_reader = Clone::clone(&reader);
        let thread_fields = Arc::clone(&fields);
        std::thread::Builder::new()
            .name("search-writer".into())
            .spawn(move || writer_loop(writer, thread_reader, thread_fields, receiver, metrics))
            .map_err(|e| format!("cannot start the search writer: {e}"))?;
        let searches = match settings.search_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Ok(Self {
            reader,
            searching: tokio::sync::Semaphore::new(searches),
            fields,
            writer: Mutex::new(sender),
            path: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The writer thread: one batch of waiting changes per commit, until every sender is gone.
fn writer_loop(
    mut writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    fields: Arc<Fields>,
    receiver: mpsc::Receiver<Pending>,
    metrics: CommitMetrics,
) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        let mut size = batch[0].changes.len();
        while size < MAX_CHANGES_PER_COMMIT {
            match receiver.try_recv() {
                Ok(more) => {
                    size += more.changes.len();
                    batch.push(more);
                }
                Err(_) => break,
            }
        }
        let result = apply_batch(&mut writer, &reader, &fields, &batch);
        match &result {
            Ok(outcomes) => {
                metrics.commits.inc();
                metrics.changes.inc_by(outcomes.len() as u64);
            }
            Err(cause) => {
                log::error!(target: "fountain::search", "search index commit failed: {cause}");
                let _ = writer.rollback();
            }
        }
        let mut outcomes = result.map(|o| o.into_iter());
        for pending in batch {
            let answer = match &mut outcomes {
                Ok(all) => Ok(all.by_ref().take(pending.changes.len()).collect()),
                Err(cause) => Err(cause.clone()),
            };
            let _ = pending.reply.send(answer);
        }
    }
    // Every sender is gone: the role stopped. Dropping the writer waits for merges to finish.
    drop(writer);
}

/// Applies every change of the batch in order, commits once and reloads the reader.
fn apply_batch(
    writer: &mut IndexWriter<TantivyDocument>,
    reader: &IndexReader,
    fields: &Fields,
    batch: &[Pending],
) -> Result<Vec<Outcome>, String> {
    let searcher = reader.searcher();
    // Whether an id exists, as of the changes applied so far in this batch.
    let mut present: HashMap<&str, bool> = HashMap::new();
    let mut outcomes = Vec::new();
    for change in batch.iter().flat_map(|p| p.changes.iter()) {
        match change {
            Change::Upsert(document) => {
                // A delete kept in tantivy's queue costs ~350 bytes until the commit applies it:
                // only an id the index or this batch may hold is deleted first, so that an import
                // of new documents queues none.
                let term = fields.id_term(&document.id);
                let may_exist = match present.get(document.id.as_str()) {
                    Some(in_batch) => *in_batch,
                    None => searcher.doc_freq(&term).map_err(|e| e.to_string())? > 0,
                };
                if may_exist {
                    writer.delete_term(term);
                }
                writer.add_document(fields.to_tantivy(document)).map_err(|e| e.to_string())?;
                present.insert(&document.id, true);
                outcomes.push(Outcome::Done);
            }
            Change::Delete(id) => {
                let existed = match present.get(id.as_str()) {
                    Some(known) => *known,
                    None => index::find(&searcher, fields, id).map_err(|e| e.to_string())?.is_some(),
                };
                writer.delete_term(fields.id_term(id));
                present.insert(id, false);
                outcomes.push(if existed { Outcome::Done } else { Outcome::Missing });
            }
        }
    }
    writer.commit().map_err(|e| e.to_string())?;
    reader.reload().map_err(|e| e.to_string())?;
    Ok(outcomes)
}

fn internal(e: impl std::fmt::Display) -> BackendError {
    BackendError::Internal(e.to_string())
}

impl SearchBackend for Embedded {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn write(&self, changes: Vec<Change>) -> LocalBoxFuture<'_, BackendResult<Vec<Outcome>>> {
        Box::pin(async move {
            if changes.is_empty() {
                return Ok(Vec::new());
            }
            let (reply, answer) = oneshot::channel();
            self.writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(Pending { changes, reply })
                .map_err(|_| BackendError::Unavailable("the search writer stopped".into()))?;
            match answer.await {
                Ok(Ok(outcomes)) => Ok(outcomes),
                Ok(Err(cause)) => Err(BackendError::Internal(format!("search index commit failed: {cause}"))),
                Err(_) => Err(BackendError::Unavailable("the search writer stopped".into())),
            }
        })
    }

    fn get(&self, id: String) -> LocalBoxFuture<'_, BackendResult<Option<Document>>> {
        let searcher = self.reader.searcher();
        let fields = Arc::clone(&self.fields);
        Box::pin(async move {
            let _turn = self.searching.acquire().await.map_err(internal)?;
            actix_web::web::block(move || index::find(&searcher, &fields, &id))
                .await
                .map_err(internal)?
                .map_err(internal)
        })
    }

    fn search(&self, query: Query) -> LocalBoxFuture<'_, BackendResult<SearchResponse>> {
        let searcher = self.reader.searcher();
        let fields = Arc::clone(&self.fields);
        Box::pin(async move {
            let _turn = self.searching.acquire().await.map_err(internal)?;
            actix_web::web::block(move || matcher::search(&searcher, &fields, &query))
                .await
                .map_err(internal)?
                .map_err(internal)
        })
    }

    fn count(&self) -> LocalBoxFuture<'_, BackendResult<u64>> {
        let count = self.reader.searcher().num_docs();
        Box::pin(async move { Ok(count) })
    }

    fn ready(&self) -> LocalBoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}
