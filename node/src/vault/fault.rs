//! Fault points: named steps of the write and erase protocols where a test can make the
//! process die as if the power failed, to prove recovery at every step.

/// A step at which the process can be made to abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Erase: journal and new key-tree versions applied to sled, not yet synced.
    EraseAfterNewVersions,
    /// Erase: new versions durable in sled; root slot not written.
    EraseAfterSync,
    /// Root slot: the new slot half written (a torn write), then the crash.
    RootTornWrite,
    /// Root slot: new slot durable, previous root not yet scrubbed.
    RootBeforeScrub,
    /// Erase: root committed and scrubbed; old versions and blobs not cleaned up.
    EraseAfterCommit,
    /// Erase: clean-up applied to sled, not yet synced.
    EraseAfterCleanup,
    /// Put: records applied to sled, not yet synced.
    PutBeforeSync,
}

impl FaultPoint {
    /// Every fault point, for tests that visit each.
    pub const ALL: [FaultPoint; 7] = [
        FaultPoint::EraseAfterNewVersions,
        FaultPoint::EraseAfterSync,
        FaultPoint::RootTornWrite,
        FaultPoint::RootBeforeScrub,
        FaultPoint::EraseAfterCommit,
        FaultPoint::EraseAfterCleanup,
        FaultPoint::PutBeforeSync,
    ];

    /// Parses the name used on a child process's command line.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Stable name.
    pub fn name(self) -> String {
        format!("{self:?}")
    }
}

/// Aborts the process if `armed` names `point`. Abort skips destructors and buffered
/// writes, like a crash (sled's dirty pages in the page cache survive, as they survive
/// a SIGKILL; power loss is covered by the syncs that precede each commit point).
pub fn hit(armed: Option<FaultPoint>, point: FaultPoint) {
    if armed == Some(point) {
        std::process::abort();
    }
}
