//! Supervision decisions, IO-free: what to start, stop or restart, and when.
//!
//! [`plan`] compares the desired instances with the running ones by spec hash: an instance
//! whose spec did not change is left alone, whatever else happens (edge autonomy: a link that
//! comes back never restarts a healthy instance). [`Supervised`] is one instance's lifecycle
//! as an explicit state machine in quinn's vocabulary: `handle_*` takes inputs with the time
//! they happened, `poll_effect` yields what the shell must do (spawn, signal), and
//! `poll_timeout` says when to call `handle_timeout` next.
//!
//! Architecture Invariant: no IO, no clock reads, no processes here; the shell owns those.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

pub use mecfed_core::Probe;
use mecfed_core::{AppId, InstanceId, InstanceState, Port, Resources};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Everything needed to run one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// Instance id.
    pub id: InstanceId,
    /// App.
    pub app: AppId,
    /// Executable.
    pub command: String,
    /// Arguments; `{port:NAME}` is replaced by the allocated port.
    pub args: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Ports to allocate.
    pub ports: Vec<Port>,
    /// Readiness probe; without one, a started process counts as ready.
    pub probe: Option<Probe>,
    /// Resource limits.
    pub resources: Resources,
    /// Load probe. Not part of how the instance runs: left out of the hash (adding one
    /// restarts nothing) and of the state on disk (the next assignments bring it back).
    #[serde(skip)]
    pub load: Option<mecfed_core::LoadProbe>,
}

impl InstanceSpec {
    /// A stable digest of the spec: equal specs, equal hashes, across processes and builds.
    pub fn hash(&self) -> String {
        // serde_json writes struct fields in declaration order and maps sorted (BTreeMap).
        let json = serde_json::to_vec(self).expect("specs serialize");
        hex::encode(Sha256::digest(json))
    }
}

/// A change [`plan`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Not running: start it.
    Start(InstanceId),
    /// Running with another spec: stop it, then start the new spec.
    Replace(InstanceId),
    /// Running but no longer desired: stop it.
    Stop(InstanceId),
}

/// What to change so that `running` (id to spec hash) matches `desired`. Instances whose
/// hash matches are left alone.
pub fn plan(
    desired: &BTreeMap<InstanceId, InstanceSpec>,
    running: &BTreeMap<InstanceId, String>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for (id, spec) in desired {
        match running.get(id) {
            None => changes.push(Change::Start(id.clone())),
            Some(h) if *h != spec.hash() => changes.push(Change::Replace(id.clone())),
            Some(_) => {}
        }
    }
    for id in running.keys() {
        if !desired.contains_key(id) {
            changes.push(Change::Stop(id.clone()));
        }
    }
    changes
}

/// Restart and stop timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuperviseConfig {
    /// First restart delay.
    pub backoff_initial: Duration,
    /// Longest restart delay.
    pub backoff_max: Duration,
    /// A run this long resets the back-off.
    pub stable_after: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
}

impl Default for SuperviseConfig {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            grace: Duration::from_secs(10),
        }
    }
}

/// A signal to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Please stop.
    Term,
    /// Stop now.
    Kill,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start the process.
    Spawn,
    /// Signal the process.
    Signal(u32, Signal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting to spawn (at once, or after back-off).
    Waiting { at: Instant },
    /// Spawn requested, not yet reported.
    Spawning,
    /// Running, not yet ready.
    Starting { pid: u32, since: Instant },
    /// Running and ready.
    Ready { pid: u32, since: Instant },
    /// SIGTERM sent; SIGKILL at `kill_at`.
    Stopping { pid: u32, kill_at: Instant },
    /// Gone for good.
    Stopped,
}

/// One supervised instance.
#[derive(Debug, Clone)]
pub struct Supervised {
    config: SuperviseConfig,
    phase: Phase,
    /// Consecutive failed runs (reset by a stable run).
    restarts: u32,
    effects: VecDeque<Effect>,
}

impl Supervised {
    /// A new instance, to be spawned at `now`.
    pub fn new(config: SuperviseConfig, now: Instant) -> Self {
        Self {
            config,
            phase: Phase::Waiting { at: now },
            restarts: 0,
            effects: VecDeque::new(),
        }
    }

    /// An instance found already running (e.g. adopted after an agent restart).
    pub fn adopt(config: SuperviseConfig, pid: u32, now: Instant) -> Self {
        Self {
            config,
            phase: Phase::Starting { pid, since: now },
            restarts: 0,
            effects: VecDeque::new(),
        }
    }

    /// The process id, while one runs.
    pub fn pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Starting { pid, .. }
            | Phase::Ready { pid, .. }
            | Phase::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Consecutive failed runs.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The state to report to the platform.
    pub fn state(&self) -> InstanceState {
        match self.phase {
            Phase::Waiting { .. } if self.restarts > 0 => InstanceState::Failed,
            Phase::Waiting { .. } | Phase::Spawning => InstanceState::Pending,
            Phase::Starting { .. } => InstanceState::Starting,
            Phase::Ready { .. } => InstanceState::Ready,
            Phase::Stopping { .. } | Phase::Stopped => InstanceState::Terminating,
        }
    }

    /// Whether the instance is gone for good.
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    fn backoff(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.restarts.saturating_sub(1));
        self.config
            .backoff_initial
            .saturating_mul(factor)
            .min(self.config.backoff_max)
    }

    /// The process started.
    pub fn handle_spawned(&mut self, now: Instant, pid: u32) {
        if self.phase == Phase::Spawning {
            self.phase = Phase::Starting { pid, since: now };
        }
    }

    /// The process could not be started.
    pub fn handle_spawn_failed(&mut self, now: Instant) {
        if self.phase == Phase::Spawning {
            self.restarts += 1;
            self.phase = Phase::Waiting {
                at: now + self.backoff(),
            };
        }
    }

    /// The readiness probe answered.
    pub fn handle_probe(&mut self, ok: bool) {
        match self.phase {
            Phase::Starting { pid, since } if ok => self.phase = Phase::Ready { pid, since },
            Phase::Ready { pid, since } if !ok => self.phase = Phase::Starting { pid, since },
            _ => {}
        }
    }

    /// The process exited.
    pub fn handle_exit(&mut self, now: Instant, pid: u32) {
        match self.phase {
            Phase::Starting { pid: p, since } | Phase::Ready { pid: p, since } if p == pid => {
                if now.saturating_duration_since(since) >= self.config.stable_after {
                    self.restarts = 0;
                }
                self.restarts += 1;
                self.phase = Phase::Waiting {
                    at: now + self.backoff(),
                };
            }
            Phase::Stopping { pid: p, .. } if p == pid => self.phase = Phase::Stopped,
            _ => {}
        }
    }

    /// Asks the instance to stop: SIGTERM now, SIGKILL after the grace period.
    pub fn stop(&mut self, now: Instant) {
        match self.phase {
            Phase::Starting { pid, .. } | Phase::Ready { pid, .. } => {
                self.effects.push_back(Effect::Signal(pid, Signal::Term));
                self.phase = Phase::Stopping {
                    pid,
                    kill_at: now + self.config.grace,
                };
            }
            Phase::Waiting { .. } | Phase::Spawning => self.phase = Phase::Stopped,
            Phase::Stopping { .. } | Phase::Stopped => {}
        }
    }

    /// Time has reached `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Waiting { at } if now >= at => {
                self.effects.push_back(Effect::Spawn);
                self.phase = Phase::Spawning;
            }
            Phase::Stopping { pid, kill_at } if now >= kill_at => {
                self.effects.push_back(Effect::Signal(pid, Signal::Kill));
                // Wait for the exit; escalate again after another grace period.
                self.phase = Phase::Stopping {
                    pid,
                    kill_at: now + self.config.grace,
                };
            }
            _ => {}
        }
    }

    /// When to call [`Supervised::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { at } => Some(at),
            Phase::Stopping { kill_at, .. } => Some(kill_at),
            _ => None,
        }
    }

    /// The next thing to do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mecfed_core::{AppId, InstanceId};

    fn spec(id: &str, arg: &str) -> InstanceSpec {
        InstanceSpec {
            id: InstanceId::new(id).unwrap(),
            app: AppId::new("arena").unwrap(),
            command: "arena".into(),
            args: vec![arg.into()],
            env: BTreeMap::new(),
            ports: vec![],
            probe: None,
            resources: Resources::ZERO,
            load: None,
        }
    }

    #[test]
    fn plan_leaves_unchanged_specs_alone() {
        let a = spec("a", "1");
        let b = spec("b", "1");
        let c = spec("c", "1");
        let desired: BTreeMap<_, _> = [a.clone(), b.clone()]
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let running: BTreeMap<_, _> = [
            (a.id.clone(), a.hash()),
            (b.id.clone(), spec("b", "2").hash()),
            (c.id.clone(), c.hash()),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            plan(&desired, &running),
            vec![Change::Replace(b.id.clone()), Change::Stop(c.id.clone())]
        );
        let empty = BTreeMap::new();
        assert_eq!(
            plan(&desired, &empty),
            vec![Change::Start(a.id.clone()), Change::Start(b.id)]
        );
        assert_eq!(a.hash(), spec("a", "1").hash(), "hash is stable");
        assert_ne!(a.hash(), spec("a", "2").hash());
    }

    fn drain(s: &mut Supervised) -> Vec<Effect> {
        std::iter::from_fn(|| s.poll_effect()).collect()
    }

    #[test]
    fn spawns_probes_and_restarts_with_exponential_backoff() {
        let cfg = SuperviseConfig::default();
        let t0 = Instant::now();
        let mut s = Supervised::new(cfg, t0);
        assert_eq!(s.state(), InstanceState::Pending);
        assert_eq!(s.poll_timeout(), Some(t0));
        s.handle_timeout(t0);
        assert_eq!(drain(&mut s), vec![Effect::Spawn]);
        s.handle_spawned(t0, 100);
        assert_eq!(s.state(), InstanceState::Starting);
        s.handle_probe(true);
        assert_eq!(s.state(), InstanceState::Ready);
        assert_eq!(s.pid(), Some(100));

        // Crash loops back off 0.5 s, 1 s, 2 s, ... up to 30 s.
        let mut now = t0 + Duration::from_secs(1);
        let mut pid = 100;
        let mut delays = Vec::new();
        for _ in 0..8 {
            s.handle_exit(now, pid);
            assert_eq!(s.state(), InstanceState::Failed);
            let at = s.poll_timeout().unwrap();
            delays.push(at - now);
            s.handle_timeout(at - Duration::from_millis(1));
            assert!(
                drain(&mut s).is_empty(),
                "no spawn before the back-off ends"
            );
            s.handle_timeout(at);
            assert_eq!(drain(&mut s), vec![Effect::Spawn]);
            pid += 1;
            s.handle_spawned(at, pid);
            now = at + Duration::from_millis(100);
        }
        let secs: Vec<f64> = delays.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, vec![0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]);

        // A stable run resets the back-off.
        let later = now + cfg.stable_after;
        s.handle_exit(later, pid);
        assert_eq!(s.poll_timeout(), Some(later + cfg.backoff_initial));
        assert_eq!(s.restarts(), 1);
    }

    #[test]
    fn stop_terms_then_kills_after_grace() {
        let cfg = SuperviseConfig::default();
        let t0 = Instant::now();
        let mut s = Supervised::adopt(cfg, 42, t0);
        s.stop(t0);
        assert_eq!(drain(&mut s), vec![Effect::Signal(42, Signal::Term)]);
        assert_eq!(s.state(), InstanceState::Terminating);
        s.handle_timeout(t0 + cfg.grace - Duration::from_millis(1));
        assert!(drain(&mut s).is_empty());
        s.handle_timeout(t0 + cfg.grace);
        assert_eq!(drain(&mut s), vec![Effect::Signal(42, Signal::Kill)]);
        s.handle_exit(t0 + cfg.grace, 42);
        assert!(s.is_stopped());
        assert_eq!(s.poll_timeout(), None);
        // An exit of some other pid changes nothing.
        let mut s = Supervised::adopt(cfg, 7, t0);
        s.handle_exit(t0, 8);
        assert_eq!(s.pid(), Some(7));
    }

    #[test]
    fn stopping_before_spawn_needs_no_signal_and_spawn_failures_back_off() {
        let cfg = SuperviseConfig::default();
        let t0 = Instant::now();
        let mut s = Supervised::new(cfg, t0);
        s.handle_timeout(t0);
        assert_eq!(drain(&mut s), vec![Effect::Spawn]);
        s.handle_spawn_failed(t0);
        assert_eq!(s.state(), InstanceState::Failed);
        assert_eq!(s.poll_timeout(), Some(t0 + cfg.backoff_initial));
        s.stop(t0);
        assert!(s.is_stopped());
        assert!(drain(&mut s).is_empty());
    }
}
