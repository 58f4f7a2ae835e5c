//! IBM Spectrum LSF: `bsub < script`, `bjobs -json`, `bkill`; multi-node jobs start
//! one `drover worker --processes P` per host with `blaunch`.

use std::collections::BTreeMap;
use std::path::Path;

use super::{BatchError, BatchSystem, JobId, JobRequest, JobState, SubmitCommand};
use crate::config::site::Site;

pub struct Lsf;

impl BatchSystem for Lsf {
    fn name(&self) -> &'static str {
        "lsf"
    }

    fn default_template(&self) -> &'static str {
        include_str!("../../templates/lsf.sh.j2")
    }

    fn context(&self, site: &Site, _req: &JobRequest) -> Result<BTreeMap<String, minijinja::Value>, BatchError> {
        let mut c = BTreeMap::new();
        // -M in the site's LSF_UNIT_FOR_LIMITS (KB by default; LSF units are binary).
        let unit: u64 = match site.lsf_unit.as_str() {
            "MB" => 1 << 20,
            "GB" => 1 << 30,
            "TB" => 1 << 40,
            _ => 1 << 10,
        };
        c.insert("mem".into(), site.memory.map(|m| m.ceil_in(unit)).into());
        // -W [HH:]MM, whole minutes rounded up.
        c.insert(
            "walltime".into(),
            site.walltime
                .map(|w| format!("{}:{:02}", w.ceil_minutes() / 60, w.ceil_minutes() % 60))
                .into(),
        );
        c.insert("log_id".into(), (if site.array { "%J_%I" } else { "%J" }).into());
        Ok(c)
    }

    fn submit(&self, site: &Site, _script: &Path) -> SubmitCommand {
        let mut argv = vec!["bsub".to_string()];
        argv.extend(site.submit_extra_args.iter().cloned());
        SubmitCommand { argv, stdin: true }
    }

    /// `Job <123> is submitted to queue <normal>.`
    fn parse_submit(&self, stdout: &str) -> Result<JobId, BatchError> {
        for line in stdout.lines() {
            if let Some(rest) = line.trim().strip_prefix("Job <")
                && let Some((id, tail)) = rest.split_once('>')
                && tail.contains("submitted")
                && !id.is_empty()
                && id.chars().all(|c| c.is_ascii_digit())
            {
                return Ok(JobId(id.to_string()));
            }
        }
        Err(BatchError::NoJobId {
            command: "bsub".into(),
            output: stdout.into(),
        })
    }

    fn array_elements(&self, id: &JobId, size: u32) -> Vec<JobId> {
        (1..=size).map(|i| JobId(format!("{id}[{i}]"))).collect()
    }

    fn status(&self, ids: &[JobId]) -> Vec<String> {
        let mut argv: Vec<String> = ["bjobs", "-o", "jobid jobindex stat", "-json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for id in ids {
            let base = id.0.split('[').next().unwrap_or(&id.0).to_string();
            if seen.insert(base.clone()) {
                argv.push(base);
            }
        }
        argv
    }

    fn parse_status(&self, stdout: &str, ids: &[JobId]) -> Result<BTreeMap<JobId, JobState>, BatchError> {
        let mut seen: BTreeMap<String, JobState> = BTreeMap::new();
        if !stdout.trim().is_empty() {
            let v: serde_json::Value = serde_json::from_str(stdout).map_err(|e| BatchError::Parse {
                command: "bjobs -json".into(),
                message: e.to_string(),
            })?;
            for rec in v.get("RECORDS").and_then(|r| r.as_array()).into_iter().flatten() {
                let Some(id) = rec.get("JOBID").and_then(|j| j.as_str()) else {
                    continue;
                };
                let st = match rec.get("STAT").and_then(|s| s.as_str()).unwrap_or("") {
                    "PEND" | "PSUSP" | "WAIT" => JobState::Pending,
                    "RUN" | "USUSP" | "SSUSP" | "PROV" => JobState::Running,
                    _ => JobState::Gone,
                };
                let index = rec.get("JOBINDEX").and_then(|j| j.as_str()).unwrap_or("0");
                let key = if index.is_empty() || index == "0" {
                    id.to_string()
                } else {
                    format!("{id}[{index}]")
                };
                seen.insert(key, st);
            }
        }
        Ok(ids
            .iter()
            .map(|id| (id.clone(), seen.get(&id.0).copied().unwrap_or(JobState::Gone)))
            .collect())
    }

    fn cancel(&self, ids: &[JobId]) -> Vec<String> {
        std::iter::once("bkill".to_string())
            .chain(ids.iter().map(|i| i.0.clone()))
            .collect()
    }
}
