//! Opening the store: sled's settings, and waiting out the file lock a just-closed
//! handle still holds.

use std::path::Path;
use std::sync::atomic::AtomicUsize;

use super::{group, tracking, Store, StoreError};

/// How many times (50 ms apart) opening waits for a lock a just-closed handle holds.
const LOCK_WAIT_TRIES: u32 = 200;

/// sled's page cache: bounds the daemon's memory with a large portal's snapshots.
pub const STORE_CACHE_BYTES: u64 = 32 * 1024 * 1024;

impl Store {
    /// Open (or create) the store in `dir`, waiting up to 10 s for a lock that a
    /// just-closed handle (or a process on its way out) still holds.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_waiting(dir, LOCK_WAIT_TRIES)
    }

    /// Open at once or fail: for commands that ask the running daemon when it holds
    /// the store (`status`, `forget`), so they do not wait 10 s before asking.
    pub fn open_now(dir: &Path) -> Result<Store, StoreError> {
        Self::open_waiting(dir, 0)
    }

    fn open_waiting(dir: &Path, tries: u32) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        let config = sled::Config::new()
            .path(dir.join("db"))
            .mode(sled::Mode::HighThroughput)
            // sled's default page cache is 1 GiB: a pass over every stored snapshot (a
            // rescore dry run over 100,000 leads) would keep hundreds of MB resident.
            // The hot set (pending, timers, recent snapshots) is far smaller.
            .cache_capacity(STORE_CACHE_BYTES);
        // sled releases its file lock only when its flusher thread has exited, a moment
        // after the last handle is dropped: a restart in the same process (or one racing
        // the old process's exit) waits for it instead of failing.
        let mut waited = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock && waited < tries =>
                {
                    if waited == 0 {
                        tracing::info!(dir = %dir.display(), "store is locked; waiting up to 10 s for the previous handle to let go");
                    }
                    waited += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        let pending = db.open_tree("pending")?;
        let count = pending.len();
        Ok(Store {
            dlq: db.open_tree("dlq")?,
            written: db.open_tree("written")?,
            ledger: db.open_tree("ledger")?,
            crossing: db.open_tree("crossing")?,
            reminders: db.open_tree("reminders")?,
            snapshot: db.open_tree("snapshot")?,
            deal_values: db.open_tree("deal_values")?,
            timers: db.open_tree("timers")?,
            timer_of: db.open_tree("timer_of")?,
            meta: db.open_tree("meta")?,
            tracking: tracking::TrackingTrees::open(&db)?,
            capacity: super::capacity::CapacityTrees::open(&db)?,
            companies: super::companies::CompanyTrees::open(&db)?,
            episodes: db.open_tree("episode")?,
            pending,
            pending_count: AtomicUsize::new(count),
            group: group::GroupFlush::start(db.clone())?,
            db,
        })
    }
}
