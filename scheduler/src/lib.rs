//! mecfed's global scheduler: on which sites of which operators each app's instances run.
//!
//! - [`decide`]: the IO-free decision core, `schedule(&Snapshot, &App, &PlacementPolicy) ->
//!   (Decision, Vec<Rejection>)`: filter plugins, score plugins, replica division by demand,
//!   spread, affinity groups with overflow.
//! - [`snapshot`]: the world one decision reads, interned for speed.
//! - [`explain`]: per site, why it was chosen or rejected, with the numbers.
//! - [`autoscale`]: instance counts per demand area from observed sessions (HPA-style).
//! - [`state`]: the scheduler's documents in the store and the [`state::World`] read from it.
//! - [`controller`]: the reconcile loop that decides and commits through store transactions.
//!
//! Architecture Invariant: `decide`, `snapshot`, `explain` and `autoscale` do no IO, read no clock and
//! draw no random numbers; time arrives as `now` in the snapshot. Only `state` and
//! `controller` touch the store.

pub mod autoscale;
pub mod controller;
pub mod decide;
pub mod explain;
pub mod snapshot;
pub mod state;

pub use controller::{Controller, ControllerConfig, PassReport, SchedulerMetrics};
pub use decide::{
    Decision, Reason, Reasons, Rejection, Scheduler, Score, Target, Unmet, Weights, schedule,
};
pub use explain::{AreaRtt, Explanation, SiteExplanation, explain};
pub use snapshot::{SiteHealth, SiteIdx, Snapshot, SnapshotBuilder};
pub use state::{AppPolicy, AppSchedule, SiteAllocation, World};
