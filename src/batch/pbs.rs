//! PBS Pro / OpenPBS (`select=` chunks, `-J` arrays, `qstat -f -F json`) and Torque
//! (`nodes=N:ppn=C`, `-t` arrays, `qstat -f` text). Multi-node jobs start one
//! `drover worker --processes P` per host with `pbsdsh -n`.

use std::collections::BTreeMap;
use std::path::Path;

use super::{BatchError, BatchSystem, JobId, JobRequest, JobState, SubmitCommand, last_line, submit_with};
use crate::config::site::{PbsFlavor, Site};

pub struct Pbs {
    pub flavor: PbsFlavor,
}

impl Pbs {
    fn pending_or_running(&self, s: &str) -> JobState {
        match s {
            "Q" | "H" | "W" | "T" | "S" | "M" => JobState::Pending,
            "R" | "E" | "B" | "U" => JobState::Running,
            _ => JobState::Gone,
        }
    }
}

impl BatchSystem for Pbs {
    fn name(&self) -> &'static str {
        match self.flavor {
            PbsFlavor::Pro => "pbs",
            PbsFlavor::Torque => "torque",
        }
    }

    fn default_template(&self) -> &'static str {
        include_str!("../../templates/pbs.sh.j2")
    }

    fn context(&self, site: &Site, req: &JobRequest) -> Result<BTreeMap<String, minijinja::Value>, BatchError> {
        let mut c = BTreeMap::new();
        // PBS size units are binary: mb = 2^20 bytes. Rounded up.
        c.insert("mem".into(), site.memory.map(|m| format!("{}mb", m.ceil_in(1 << 20))).into());
        c.insert("walltime".into(), site.walltime.map(|w| w.hms()).into());
        c.insert("torque".into(), (self.flavor == PbsFlavor::Torque).into());
        // PBS Pro refuses one-element arrays; a size-1 array is a plain job.
        let dir = match (site.array, self.flavor) {
            (true, PbsFlavor::Pro) if req.array_size >= 2 => Some(format!("-J 1-{}", req.array_size)),
            (true, PbsFlavor::Torque) => Some(format!("-t 1-{}", req.array_size)),
            _ => None,
        };
        c.insert("array_directive".into(), dir.into());
        Ok(c)
    }

    fn submit(&self, site: &Site, script: &Path) -> SubmitCommand {
        submit_with("qsub", site, script)
    }

    /// `1234.server`, `1234[].server` for arrays; banners may come first.
    fn parse_submit(&self, stdout: &str) -> Result<JobId, BatchError> {
        let line = last_line(stdout);
        let head = line.split('.').next().unwrap_or("");
        let digits = head.trim_end_matches("[]");
        if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && !line.contains(char::is_whitespace) {
            Ok(JobId(line.to_string()))
        } else {
            Err(BatchError::NoJobId {
                command: "qsub".into(),
                output: stdout.into(),
            })
        }
    }

    fn array_elements(&self, id: &JobId, size: u32) -> Vec<JobId> {
        match id.0.split_once("[]") {
            Some((num, rest)) => (1..=size).map(|i| JobId(format!("{num}[{i}]{rest}"))).collect(),
            None => vec![id.clone()],
        }
    }

    fn status(&self, ids: &[JobId]) -> Vec<String> {
        let mut argv: Vec<String> = match self.flavor {
            PbsFlavor::Pro => ["qstat", "-x", "-t", "-f", "-F", "json"].iter().map(|s| s.to_string()).collect(),
            PbsFlavor::Torque => ["qstat", "-t", "-f"].iter().map(|s| s.to_string()).collect(),
        };
        // Array parents are queried as a whole; their elements come with -t.
        let mut seen = std::collections::BTreeSet::new();
        for id in ids {
            let q = match id.0.split_once('[') {
                Some((num, rest)) => format!("{num}[]{}", rest.split_once(']').map_or("", |(_, r)| r)),
                None => id.0.clone(),
            };
            if seen.insert(q.clone()) {
                argv.push(q);
            }
        }
        argv
    }

    fn parse_status(&self, stdout: &str, ids: &[JobId]) -> Result<BTreeMap<JobId, JobState>, BatchError> {
        let mut seen: BTreeMap<String, JobState> = BTreeMap::new();
        match self.flavor {
            PbsFlavor::Pro => {
                if !stdout.trim().is_empty() {
                    let v: serde_json::Value = serde_json::from_str(stdout).map_err(|e| BatchError::Parse {
                        command: "qstat -f -F json".into(),
                        message: e.to_string(),
                    })?;
                    if let Some(jobs) = v.get("Jobs").and_then(|j| j.as_object()) {
                        for (id, job) in jobs {
                            let st = job.get("job_state").and_then(|s| s.as_str()).unwrap_or("");
                            seen.insert(id.clone(), self.pending_or_running(st));
                        }
                    }
                }
            }
            PbsFlavor::Torque => {
                let mut current: Option<String> = None;
                for line in stdout.lines() {
                    if let Some(id) = line.strip_prefix("Job Id:") {
                        current = Some(id.trim().to_string());
                    } else if let Some((k, v)) = line.split_once('=')
                        && k.trim() == "job_state"
                        && let Some(id) = &current
                    {
                        let st = if v.trim() == "C" {
                            JobState::Gone
                        } else {
                            self.pending_or_running(v.trim())
                        };
                        seen.insert(id.clone(), st);
                    }
                }
            }
        }
        // Short names: qstat may print `1234.server.domain` for `1234.server`.
        let lookup = |id: &str| -> Option<JobState> {
            seen.get(id).copied().or_else(|| {
                let head = id.split('.').next().unwrap_or(id);
                seen.iter().find(|(k, _)| k.split('.').next() == Some(head)).map(|(_, s)| *s)
            })
        };
        Ok(ids.iter().map(|id| (id.clone(), lookup(&id.0).unwrap_or(JobState::Gone))).collect())
    }

    fn cancel(&self, ids: &[JobId]) -> Vec<String> {
        std::iter::once("qdel".to_string()).chain(ids.iter().map(|i| i.0.clone())).collect()
    }
}
