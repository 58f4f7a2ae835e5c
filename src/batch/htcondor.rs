//! HTCondor: a submit description plus an executable script; `condor_q -json`,
//! `condor_rm`. One cluster per submission, `queue K` for arrays.

use std::collections::BTreeMap;
use std::path::Path;

use super::{BatchError, BatchSystem, JobId, JobRequest, JobState, SubmitCommand, submit_with};
use crate::config::site::Site;

pub struct Htcondor;

impl BatchSystem for Htcondor {
    fn name(&self) -> &'static str {
        "htcondor"
    }

    fn default_template(&self) -> &'static str {
        include_str!("../../templates/htcondor.sub.j2")
    }

    fn extra_templates(&self) -> &'static [(&'static str, &'static str)] {
        &[("-job.sh", include_str!("../../templates/htcondor-job.sh.j2"))]
    }

    fn script_suffix(&self) -> &'static str {
        ".sub"
    }

    fn context(&self, site: &Site, req: &JobRequest) -> Result<BTreeMap<String, minijinja::Value>, BatchError> {
        let mut c = BTreeMap::new();
        // request_memory is in MiB, rounded up.
        c.insert("mem".into(), site.memory.map(|m| m.ceil_in(1 << 20)).into());
        c.insert("walltime".into(), site.walltime.map(|w| w.seconds()).into());
        c.insert("job_script".into(), format!("{}-job.sh", req.script_stem.display()).into());
        Ok(c)
    }

    fn submit(&self, site: &Site, script: &Path) -> SubmitCommand {
        submit_with("condor_submit", site, script)
    }

    /// `N job(s) submitted to cluster C.`
    fn parse_submit(&self, stdout: &str) -> Result<JobId, BatchError> {
        for line in stdout.lines() {
            if let Some((_, rest)) = line.split_once("submitted to cluster ") {
                let id = rest.trim().trim_end_matches('.');
                if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) {
                    return Ok(JobId(id.to_string()));
                }
            }
        }
        Err(BatchError::NoJobId {
            command: "condor_submit".into(),
            output: stdout.into(),
        })
    }

    fn array_elements(&self, id: &JobId, size: u32) -> Vec<JobId> {
        (0..size).map(|i| JobId(format!("{id}.{i}"))).collect()
    }

    /// A one-job cluster `C` runs as `C.0`.
    fn single_job(&self, id: JobId) -> JobId {
        JobId(format!("{id}.0"))
    }

    fn status(&self, ids: &[JobId]) -> Vec<String> {
        let mut argv = vec!["condor_q".to_string(), "-json".to_string()];
        let mut seen = std::collections::BTreeSet::new();
        for id in ids {
            let cluster = id.0.split('.').next().unwrap_or(&id.0).to_string();
            if seen.insert(cluster.clone()) {
                argv.push(cluster);
            }
        }
        argv
    }

    fn parse_status(&self, stdout: &str, ids: &[JobId]) -> Result<BTreeMap<JobId, JobState>, BatchError> {
        let mut seen: BTreeMap<String, JobState> = BTreeMap::new();
        if !stdout.trim().is_empty() {
            let v: serde_json::Value = serde_json::from_str(stdout).map_err(|e| BatchError::Parse {
                command: "condor_q -json".into(),
                message: e.to_string(),
            })?;
            for ad in v.as_array().into_iter().flatten() {
                let (Some(c), Some(p)) = (
                    ad.get("ClusterId").and_then(|x| x.as_u64()),
                    ad.get("ProcId").and_then(|x| x.as_u64()),
                ) else {
                    continue;
                };
                let st = match ad.get("JobStatus").and_then(|x| x.as_u64()) {
                    Some(1) => JobState::Pending,
                    Some(2) | Some(6) | Some(7) => JobState::Running,
                    Some(5) => JobState::Held,
                    _ => JobState::Gone,
                };
                seen.insert(format!("{c}.{p}"), st);
            }
        }
        Ok(ids
            .iter()
            .map(|id| {
                let key = if id.0.contains('.') { id.0.clone() } else { format!("{}.0", id.0) };
                (id.clone(), seen.get(&key).copied().unwrap_or(JobState::Gone))
            })
            .collect())
    }

    fn cancel(&self, ids: &[JobId]) -> Vec<String> {
        std::iter::once("condor_rm".to_string())
            .chain(ids.iter().map(|i| i.0.clone()))
            .collect()
    }
}
