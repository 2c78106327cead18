//! Group commit for the embedded store.
//!
//! A durable redb commit costs two `fsync`s (several milliseconds on ordinary disks), and redb
//! runs one write transaction at a time, so committing every write durably caps the store at a
//! few hundred writes per second no matter how many callers wait. Instead every write commits
//! with `Durability::None` (visible at once, not yet on disk) and then waits for a *durable*
//! commit that happens after it: one background thread keeps making empty `Immediate` commits
//! while anyone is waiting, and each makes every earlier non-durable commit durable. Writers
//! that arrive during an `fsync` share the next one, so throughput grows with concurrency while
//! each caller still returns only once its write is on disk.
//!
//! What a crash can lose is exactly what no caller was told succeeded: redb rolls back to the
//! last durable commit on reopen. A reader may briefly see a write that is not durable yet (a
//! dirty read); every effect Flowgate performs follows its own write, which waits for
//! durability, and that durable commit covers everything committed before it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::watch;

use crate::ports::StoreError;

/// What the sync thread has made durable, and what it failed to.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every commit numbered up to this is durable.
    durable: u64,
    /// Commits up to this number were in a durable commit that failed.
    failed_through: u64,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Request {
    /// Highest commit number a waiter needs durable.
    wanted: u64,
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    /// Non-durable commits made so far (numbered from 1).
    committed: AtomicU64,
    /// Durable commits the sync thread made (to see how many writes share one).
    syncs: AtomicU64,
    request: Mutex<Request>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
}

/// The sync thread and its bookkeeping; stops (and joins the thread) when dropped.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    pub(crate) fn start(db: Arc<Database>) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            committed: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            request: Mutex::new(Request::default()),
            wake: Condvar::new(),
            progress: watch::Sender::new(Progress::default()),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("flowgate-store-sync".into())
            .spawn(move || sync_loop(&db, &worker))
            .map_err(|e| StoreError::Backend {
                message: format!("cannot start the embedded store's sync thread: {e}"),
            })?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Number a non-durable commit; call right after `commit()` returned, on the same thread.
    pub(crate) fn committed(&self) -> u64 {
        self.shared.committed.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Durable commits made so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::SeqCst)
    }

    /// Wait until commit `seq` is durable.
    pub(crate) async fn durable(&self, seq: u64) -> Result<(), StoreError> {
        let mut progress = self.shared.progress.subscribe();
        {
            let mut request = lock(&self.shared.request);
            request.wanted = request.wanted.max(seq);
        }
        self.shared.wake.notify_one();
        loop {
            {
                let now = progress.borrow_and_update();
                if now.durable >= seq {
                    return Ok(());
                }
                if now.failed_through >= seq {
                    return Err(StoreError::Unavailable {
                        message: format!(
                            "the embedded store could not make a write durable: {}",
                            now.error.as_deref().unwrap_or("unknown error")
                        ),
                    });
                }
            }
            progress
                .changed()
                .await
                .map_err(|_| StoreError::Unavailable {
                    message: "the embedded store is shutting down".to_string(),
                })?;
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared.request).stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The thread holds the database open; joining makes a reopen right after this
            // drop find the file free.
            let _ = thread.join();
        }
    }
}

fn lock(m: &Mutex<Request>) -> std::sync::MutexGuard<'_, Request> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn sync_loop(db: &Database, shared: &Shared) {
    let mut durable = 0u64;
    loop {
        {
            let mut request = lock(&shared.request);
            while !request.stop && request.wanted <= durable {
                request = shared
                    .wake
                    .wait(request)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if request.stop && request.wanted <= durable {
                return;
            }
        }
        // Everything numbered so far committed before this transaction begins, so its durable
        // commit covers it.
        let target = shared.committed.load(Ordering::SeqCst);
        shared.syncs.fetch_add(1, Ordering::SeqCst);
        let result = db
            .begin_write()
            .map_err(|e| e.to_string())
            .and_then(|txn| txn.commit().map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                durable = target;
                shared.progress.send_modify(|p| p.durable = target);
            }
            Err(error) => {
                tracing::error!(%error, "embedded store: durable commit failed");
                durable = target;
                shared.progress.send_modify(|p| {
                    p.failed_through = target;
                    p.error = Some(error);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::adapters::embedded::EmbeddedStore;
    use crate::ports::{RunStore, SessionRecord};

    fn session(i: usize) -> SessionRecord {
        SessionRecord {
            name: format!("s{i}"),
            agent_session_id: Some(format!("agent-{i}")),
            runs: Vec::new(),
            active: true,
            created_at: 1,
            updated_at: 1,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_syncs_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let writes = 200;
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let tasks: Vec<_> = (0..writes)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move { store.put_session(&session(i)).await })
                })
                .collect();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            let syncs = store.sync_count();
            assert!(syncs >= 1, "every write waited for a durable commit");
            assert!(
                syncs < writes as u64,
                "{syncs} durable commits for {writes} concurrent writes: none were shared"
            );
        }
        // Dropping the store stopped the sync thread and closed the file: it reopens at once.
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for i in 0..writes {
            let got = store.get_session(&format!("s{i}")).await.unwrap();
            assert_eq!(got, Some(session(i)));
        }
    }
}
