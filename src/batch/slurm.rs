//! SLURM: `sbatch --parsable`, `squeue`, `scancel`; workers started with `srun`.

use std::collections::BTreeMap;
use std::path::Path;

use super::{BatchError, BatchSystem, JobId, JobRequest, JobState, SubmitCommand, last_line, submit_with};
use crate::config::site::Site;

pub struct Slurm;

impl BatchSystem for Slurm {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn default_template(&self) -> &'static str {
        include_str!("../../templates/slurm.sh.j2")
    }

    fn context(&self, site: &Site, _req: &JobRequest) -> Result<BTreeMap<String, minijinja::Value>, BatchError> {
        let mut c = BTreeMap::new();
        // --mem is per node, in whole MiB rounded up.
        c.insert("mem".into(), site.memory.map(|m| format!("{}M", m.ceil_in(1 << 20))).into());
        c.insert("walltime".into(), site.walltime.map(|w| w.dhms()).into());
        c.insert("log_id".into(), (if site.array { "%A_%a" } else { "%j" }).into());
        Ok(c)
    }

    fn submit(&self, site: &Site, script: &Path) -> SubmitCommand {
        let mut cmd = submit_with("sbatch", site, script);
        cmd.argv.insert(1, "--parsable".into());
        cmd
    }

    /// `--parsable` prints `id` or `id;cluster`, possibly after other lines.
    fn parse_submit(&self, stdout: &str) -> Result<JobId, BatchError> {
        let line = last_line(stdout);
        let id = line.split(';').next().unwrap_or("");
        if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) {
            Ok(JobId(id.to_string()))
        } else {
            Err(BatchError::NoJobId {
                command: "sbatch --parsable".into(),
                output: stdout.into(),
            })
        }
    }

    fn array_elements(&self, id: &JobId, size: u32) -> Vec<JobId> {
        (1..=size).map(|i| JobId(format!("{id}_{i}"))).collect()
    }

    fn status(&self, _ids: &[JobId]) -> Vec<String> {
        // All of this user's jobs, one line per array element; never fails on ids that
        // already left the queue (squeue -j would).
        ["squeue", "--noheader", "--array", "--me", "--format=%i|%T"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn parse_status(&self, stdout: &str, ids: &[JobId]) -> Result<BTreeMap<JobId, JobState>, BatchError> {
        let mut seen = BTreeMap::new();
        for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((id, state)) = line.split_once('|') else {
                return Err(BatchError::Parse {
                    command: "squeue".into(),
                    message: format!("unexpected line {line:?}"),
                });
            };
            let st = match state.trim() {
                "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESIZING" | "SUSPENDED" => JobState::Pending,
                "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" => JobState::Running,
                _ => JobState::Gone,
            };
            seen.insert(id.trim().to_string(), st);
        }
        Ok(ids
            .iter()
            .map(|id| (id.clone(), seen.get(&id.0).copied().unwrap_or(JobState::Gone)))
            .collect())
    }

    fn cancel(&self, ids: &[JobId]) -> Vec<String> {
        std::iter::once("scancel".to_string())
            .chain(ids.iter().map(|i| i.0.clone()))
            .collect()
    }
}
