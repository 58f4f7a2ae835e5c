//! Sun/Son of Grid Engine: `-pe PE C`, `h_rt`, a per-slot memory request, `-t`
//! arrays, `qstat -xml` for state.

use std::collections::BTreeMap;
use std::path::Path;

use quick_xml::events::Event;

use super::{BatchError, BatchSystem, JobId, JobRequest, JobState, SubmitCommand, submit_with};
use crate::config::site::Site;

pub struct Sge;

/// Expand an SGE task range like `1-4:1`, `3`, `2-10:2` or `1,3`.
fn expand_tasks(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (range, step) = part.split_once(':').unwrap_or((part, "1"));
        let step: u32 = step.trim().parse().unwrap_or(1).max(1);
        match range.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    out.extend((a..=b).step_by(step as usize));
                }
            }
            None => {
                if let Ok(a) = range.trim().parse() {
                    out.push(a);
                }
            }
        }
    }
    out
}

impl BatchSystem for Sge {
    fn name(&self) -> &'static str {
        "sge"
    }

    fn default_template(&self) -> &'static str {
        include_str!("../../templates/sge.sh.j2")
    }

    fn context(&self, site: &Site, _req: &JobRequest) -> Result<BTreeMap<String, minijinja::Value>, BatchError> {
        let mut c = BTreeMap::new();
        // Grid Engine memory requests are per slot; M = 2^20 bytes; rounded up.
        let per_slot = site
            .memory
            .map(|m| format!("{}M", m.0.div_ceil(u64::from(site.cores)).div_ceil(1 << 20)));
        c.insert("mem_per_slot".into(), per_slot.into());
        c.insert(
            "memory_resource".into(),
            site.memory_resource.clone().unwrap_or_else(|| "h_vmem".into()).into(),
        );
        c.insert("walltime".into(), site.walltime.map(|w| w.hms()).into());
        c.insert("pe".into(), site.pe.clone().unwrap_or_else(|| "smp".into()).into());
        Ok(c)
    }

    fn submit(&self, site: &Site, script: &Path) -> SubmitCommand {
        submit_with("qsub", site, script)
    }

    /// `Your job 12 ("name") has been submitted`, `Your job-array 12.1-4:1 ...`, or a
    /// bare id with `-terse`.
    fn parse_submit(&self, stdout: &str) -> Result<JobId, BatchError> {
        for line in stdout.lines().rev() {
            let line = line.trim();
            let rest = line.strip_prefix("Your job-array ").or_else(|| line.strip_prefix("Your job "));
            let word = match rest {
                Some(r) => r.split_whitespace().next().unwrap_or(""),
                None if !line.is_empty() && line.chars().next().is_some_and(|c| c.is_ascii_digit()) && !line.contains(' ') => line,
                None => continue,
            };
            let num = word.split('.').next().unwrap_or("");
            if !num.is_empty() && num.chars().all(|c| c.is_ascii_digit()) {
                return Ok(JobId(num.to_string()));
            }
        }
        Err(BatchError::NoJobId {
            command: "qsub".into(),
            output: stdout.into(),
        })
    }

    fn array_elements(&self, id: &JobId, size: u32) -> Vec<JobId> {
        (1..=size).map(|i| JobId(format!("{id}.{i}"))).collect()
    }

    fn status(&self, _ids: &[JobId]) -> Vec<String> {
        vec!["qstat".into(), "-xml".into()]
    }

    fn parse_status(&self, stdout: &str, ids: &[JobId]) -> Result<BTreeMap<JobId, JobState>, BatchError> {
        let perr = |m: String| BatchError::Parse {
            command: "qstat -xml".into(),
            message: m,
        };
        let mut seen: BTreeMap<String, JobState> = BTreeMap::new();
        let mut reader = quick_xml::Reader::from_str(stdout);
        let (mut in_job, mut field) = (false, String::new());
        let (mut num, mut state, mut tasks) = (String::new(), String::new(), String::new());
        loop {
            match reader.read_event().map_err(|e| perr(e.to_string()))? {
                Event::Start(e) => {
                    let name = String::from_utf8_lossy(e.name().as_ref().as_bytes()).into_owned();
                    if name == "job_list" {
                        in_job = true;
                        num.clear();
                        state.clear();
                        tasks.clear();
                    }
                    field = name;
                }
                Event::Text(t) if in_job => {
                    let text = t.xml10_content();
                    match field.as_str() {
                        "JB_job_number" => num.push_str(text.trim()),
                        "state" => state.push_str(text.trim()),
                        "tasks" => tasks.push_str(text.trim()),
                        _ => {}
                    }
                }
                Event::End(e) => {
                    if e.name().as_ref() == "job_list" {
                        in_job = false;
                        // Deleted jobs (dr, dt) stay listed until they really end; error
                        // states (Eqw) never run and are cancelled by the pool.
                        let st = if state.contains('d') {
                            JobState::Running
                        } else if state.contains('E') {
                            JobState::Held
                        } else if state.contains('r') || state.contains('t') || state.contains('R') || state.contains('s') {
                            JobState::Running
                        } else {
                            JobState::Pending
                        };
                        seen.insert(num.clone(), st);
                        for t in expand_tasks(&tasks) {
                            seen.insert(format!("{num}.{t}"), st);
                        }
                    }
                    field.clear();
                }
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(ids
            .iter()
            .map(|id| (id.clone(), seen.get(&id.0).copied().unwrap_or(JobState::Gone)))
            .collect())
    }

    fn cancel(&self, ids: &[JobId]) -> Vec<String> {
        std::iter::once("qdel".to_string()).chain(ids.iter().map(|i| i.0.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::expand_tasks;

    #[test]
    fn task_ranges() {
        assert_eq!(expand_tasks("1-4:1"), vec![1, 2, 3, 4]);
        assert_eq!(expand_tasks("2-10:4"), vec![2, 6, 10]);
        assert_eq!(expand_tasks("7"), vec![7]);
        assert_eq!(expand_tasks("1,3"), vec![1, 3]);
        assert!(expand_tasks("").is_empty());
    }
}
