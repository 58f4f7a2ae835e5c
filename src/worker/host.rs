//! What a worker learns about its process, its node and its batch job.

/// The batch job this worker runs in, from the batch system's environment, in the
/// form the pool tracks it: `123` or `123_4` (SLURM), `123.server` or
/// `123[4].server` (PBS), `123` or `123.4` (SGE), `123` or `123[4]` (LSF), `42.0`
/// (HTCondor), `local-3` (local).
pub fn batch_job_from_env() -> Option<String> {
    batch_job_from(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

pub(super) fn batch_job_from(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let numeric = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit());
    if let Some(id) = get("SLURM_JOB_ID") {
        return Some(match (get("SLURM_ARRAY_JOB_ID"), get("SLURM_ARRAY_TASK_ID")) {
            (Some(a), Some(t)) => format!("{a}_{t}"),
            _ => id,
        });
    }
    if let Some(id) = get("PBS_JOBID") {
        return Some(id);
    }
    if let Some(id) = get("LSB_JOBID") {
        return Some(match get("LSB_JOBINDEX") {
            Some(i) if numeric(&i) && i != "0" => format!("{id}[{i}]"),
            _ => id,
        });
    }
    if let Some(id) = get("CONDOR_JOB_ID") {
        return Some(id);
    }
    if let Some(id) = get("JOB_ID").filter(|_| get("SGE_ROOT").is_some() || get("SGE_TASK_ID").is_some()) {
        return Some(match get("SGE_TASK_ID") {
            Some(t) if numeric(&t) => format!("{id}.{t}"),
            _ => id,
        });
    }
    get("DROVER_LOCAL_JOB")
}

pub fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// This process's peak resident memory (VmHWM), in bytes. Unlike getrusage's
/// ru_maxrss it does not carry over the peak of a parent that exec'd us.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// This process's resident memory (bytes) and CPU time (user + system, ms) so far.
pub(super) fn load() -> Option<(u64, u64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??.max(1) as u64;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??.max(1) as u64;
    Some((pages * page, ticks * 1000 / hz))
}

#[cfg(test)]
mod tests {
    use super::batch_job_from;
    use std::collections::HashMap;

    fn job(vars: &[(&str, &str)]) -> Option<String> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        batch_job_from(|k| m.get(k).cloned())
    }

    #[test]
    fn job_ids_match_what_the_pool_tracks() {
        assert_eq!(job(&[("SLURM_JOB_ID", "15")]).unwrap(), "15");
        assert_eq!(
            job(&[("SLURM_JOB_ID", "16"), ("SLURM_ARRAY_JOB_ID", "12"), ("SLURM_ARRAY_TASK_ID", "4")]).unwrap(),
            "12_4"
        );
        assert_eq!(job(&[("PBS_JOBID", "7[2].pbs01")]).unwrap(), "7[2].pbs01");
        assert_eq!(
            job(&[("JOB_ID", "9"), ("SGE_TASK_ID", "undefined"), ("SGE_ROOT", "/x")]).unwrap(),
            "9"
        );
        assert_eq!(job(&[("JOB_ID", "9"), ("SGE_TASK_ID", "3")]).unwrap(), "9.3");
        assert_eq!(job(&[("LSB_JOBID", "5"), ("LSB_JOBINDEX", "0")]).unwrap(), "5");
        assert_eq!(job(&[("LSB_JOBID", "5"), ("LSB_JOBINDEX", "2")]).unwrap(), "5[2]");
        assert_eq!(job(&[("CONDOR_JOB_ID", "42.0")]).unwrap(), "42.0");
        assert_eq!(job(&[("JOB_ID", "1")]), None, "JOB_ID alone is not SGE");
        assert_eq!(job(&[]), None);
    }
}
