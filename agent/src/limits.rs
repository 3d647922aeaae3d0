//! Per-instance CPU and memory limits through whatever cgroups the host offers.
//!
//! cgroup v2 (`cpu.max`, `memory.max`) when the unified hierarchy has the `cpu` and `memory`
//! controllers; otherwise the v1 `cpu` (`cpu.cfs_quota_us`) and `memory`
//! (`memory.limit_in_bytes`) hierarchies when they are mounted and writable; otherwise
//! nothing, and the site says so ([`LimitEnforcement::Unenforced`]) instead of pretending.

use std::{
    io,
    path::{Path, PathBuf},
};

use mecfed_core::{LimitEnforcement, Resources};

/// The CFS period used for CPU quotas, in microseconds.
const CFS_PERIOD_US: u64 = 100_000;

/// How limits are applied on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limits {
    /// cgroup v2 under this directory.
    V2 {
        /// Parent of the instance cgroups.
        root: PathBuf,
    },
    /// cgroup v1 `cpu` and `memory` hierarchies under these directories.
    V1 {
        /// Parent in the `cpu` hierarchy.
        cpu: PathBuf,
        /// Parent in the `memory` hierarchy.
        memory: PathBuf,
    },
    /// No usable cgroups.
    None {
        /// Why.
        reason: String,
    },
}

impl Limits {
    /// Looks at `/sys/fs/cgroup` and prepares `mecfed/<group>` parents.
    pub fn detect(group: &str) -> Self {
        Self::detect_in(Path::new("/sys/fs/cgroup"), group)
    }

    /// As [`Limits::detect`], under `base` (for tests).
    pub fn detect_in(base: &Path, group: &str) -> Self {
        let v2_controllers = std::fs::read_to_string(base.join("cgroup.controllers"))
            .or_else(|_| std::fs::read_to_string(base.join("unified/cgroup.controllers")))
            .unwrap_or_default();
        let has = |c: &str| v2_controllers.split_whitespace().any(|x| x == c);
        if has("cpu") && has("memory") {
            let unified = if base.join("cgroup.controllers").exists() {
                base.to_path_buf()
            } else {
                base.join("unified")
            };
            let root = unified.join("mecfed").join(group);
            // Children only get controllers the parent delegates.
            let enable =
                |dir: &Path| std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory");
            return match std::fs::create_dir_all(&root)
                .and_then(|()| enable(&unified))
                .and_then(|()| enable(&unified.join("mecfed")))
                .and_then(|()| enable(&root))
            {
                Ok(()) => Self::V2 { root },
                Err(e) => Self::None {
                    reason: format!("cgroup v2 present but not writable: {e}"),
                },
            };
        }
        let cpu = base.join("cpu");
        let memory = base.join("memory");
        if cpu.join("cpu.cfs_quota_us").exists() && memory.join("memory.limit_in_bytes").exists() {
            let cpu = cpu.join("mecfed").join(group);
            let memory = memory.join("mecfed").join(group);
            return match std::fs::create_dir_all(&cpu)
                .and_then(|()| std::fs::create_dir_all(&memory))
            {
                Ok(()) => Self::V1 { cpu, memory },
                Err(e) => Self::None {
                    reason: format!("cgroup v1 present but not writable: {e}"),
                },
            };
        }
        Self::None {
            reason: "no cgroup v2 with cpu and memory controllers, and no cgroup v1 cpu and memory hierarchies".into(),
        }
    }

    /// What to report in the site's status.
    pub fn enforcement(&self) -> LimitEnforcement {
        match self {
            Self::V2 { .. } => LimitEnforcement::CgroupV2,
            Self::V1 { .. } => LimitEnforcement::CgroupV1,
            Self::None { .. } => LimitEnforcement::Unenforced,
        }
    }

    /// Puts `pid` into a cgroup of its own, named `instance`, limited to `r` (zero means no
    /// limit in that dimension).
    pub fn apply(&self, instance: &str, pid: u32, r: &Resources) -> io::Result<()> {
        let quota = (r.cpu_millicores > 0).then(|| r.cpu_millicores * CFS_PERIOD_US / 1000);
        let memory = (r.memory_bytes > 0).then_some(r.memory_bytes);
        match self {
            Self::V2 { root } => {
                let dir = root.join(instance);
                std::fs::create_dir_all(&dir)?;
                let cpu_max = quota.map_or_else(
                    || format!("max {CFS_PERIOD_US}"),
                    |q| format!("{q} {CFS_PERIOD_US}"),
                );
                std::fs::write(dir.join("cpu.max"), cpu_max)?;
                std::fs::write(
                    dir.join("memory.max"),
                    memory.map_or_else(|| "max".to_string(), |m| m.to_string()),
                )?;
                std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            }
            Self::V1 { cpu, memory: mem } => {
                let cdir = cpu.join(instance);
                let mdir = mem.join(instance);
                std::fs::create_dir_all(&cdir)?;
                std::fs::create_dir_all(&mdir)?;
                std::fs::write(cdir.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string())?;
                std::fs::write(
                    cdir.join("cpu.cfs_quota_us"),
                    quota.map_or_else(|| "-1".to_string(), |q| q.to_string()),
                )?;
                // -1 is "unlimited" for memory.limit_in_bytes too.
                std::fs::write(
                    mdir.join("memory.limit_in_bytes"),
                    memory.map_or_else(|| "-1".to_string(), |m| m.to_string()),
                )?;
                std::fs::write(cdir.join("cgroup.procs"), pid.to_string())?;
                std::fs::write(mdir.join("cgroup.procs"), pid.to_string())
            }
            Self::None { .. } => Ok(()),
        }
    }

    /// Removes the instance's cgroup (after its processes are gone).
    pub fn remove(&self, instance: &str) {
        let dirs = match self {
            Self::V2 { root } => vec![root.join(instance)],
            Self::V1 { cpu, memory } => vec![cpu.join(instance), memory.join(instance)],
            Self::None { .. } => vec![],
        };
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }

    /// The directories of an instance's cgroup (for inspection).
    pub fn dirs(&self, instance: &str) -> Vec<PathBuf> {
        match self {
            Self::V2 { root } => vec![root.join(instance)],
            Self::V1 { cpu, memory } => vec![cpu.join(instance), memory.join(instance)],
            Self::None { .. } => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_layout_gets_quota_and_memory_limit() {
        let base = tempfile::tempdir().unwrap();
        for (c, f) in [
            ("cpu", "cpu.cfs_quota_us"),
            ("memory", "memory.limit_in_bytes"),
        ] {
            std::fs::create_dir_all(base.path().join(c)).unwrap();
            std::fs::write(base.path().join(c).join(f), "-1").unwrap();
        }
        let l = Limits::detect_in(base.path(), "site-1");
        assert_eq!(l.enforcement(), LimitEnforcement::CgroupV1);
        l.apply(
            "i1",
            4242,
            &Resources::parse("cpu=250m,memory=64Mi").unwrap(),
        )
        .unwrap();
        let read = |p: &str| std::fs::read_to_string(base.path().join(p)).unwrap();
        assert_eq!(read("cpu/mecfed/site-1/i1/cpu.cfs_quota_us"), "25000");
        assert_eq!(read("cpu/mecfed/site-1/i1/cpu.cfs_period_us"), "100000");
        assert_eq!(
            read("memory/mecfed/site-1/i1/memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(read("memory/mecfed/site-1/i1/cgroup.procs"), "4242");
    }

    #[test]
    fn v2_layout_gets_cpu_max_and_memory_max() {
        let base = tempfile::tempdir().unwrap();
        std::fs::write(
            base.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        let l = Limits::detect_in(base.path(), "s");
        assert_eq!(l.enforcement(), LimitEnforcement::CgroupV2);
        l.apply("i", 7, &Resources::parse("cpu=2,memory=1Gi").unwrap())
            .unwrap();
        let read = |p: &str| std::fs::read_to_string(base.path().join(p)).unwrap();
        assert_eq!(read("mecfed/s/i/cpu.max"), "200000 100000");
        assert_eq!(read("mecfed/s/i/memory.max"), (1u64 << 30).to_string());
        assert_eq!(read("mecfed/cgroup.subtree_control"), "+cpu +memory");
    }

    #[test]
    fn nothing_usable_is_reported_not_faked() {
        let base = tempfile::tempdir().unwrap();
        std::fs::write(base.path().join("cgroup.controllers"), "pids").unwrap();
        let l = Limits::detect_in(base.path(), "s");
        assert_eq!(l.enforcement(), LimitEnforcement::Unenforced);
        assert!(matches!(l, Limits::None { ref reason } if reason.contains("no cgroup")));
        l.apply("i", 1, &Resources::parse("cpu=1").unwrap())
            .unwrap();
    }
}
