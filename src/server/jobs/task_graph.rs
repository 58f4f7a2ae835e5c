//! A task job request checked and laid out: its groups (one per command: a plain
//! job's, or each `[[task]]` of a graph file) in dependency order, their tasks
//! numbered contiguously, the table users see and the core's graph (each task of a
//! group depending on every task of the groups it comes `after`).

use std::collections::HashMap;
use std::path::Path;

use super::task_table::TaskTable;
use crate::config::taskjob::{self, Vars};
use crate::core::{Graph, GraphBuilder, GraphSpec, OnError, TaskClasses, TaskKind};
use crate::proto::jobs::{CommandSpec, GroupRequest, Log, TaskJobRequest};

/// The most dependency edges one job may have (each task of a group on each task of
/// the groups it comes after).
const MAX_EDGES: u64 = 50_000_000;

/// Tasks of one command, numbered `first..first + len`.
pub struct Group {
    pub name: String,
    pub spec: CommandSpec,
    pub first: u32,
    pub len: u32,
    /// What `{task}` stands for in each (`None`: the table's ids).
    pub indices: Option<Vec<u64>>,
}

impl Group {
    /// The `{task}` value of task `t` (of this group).
    pub fn index(&self, t: u32, table: &TaskTable) -> u64 {
        match &self.indices {
            Some(ix) => ix[(t - self.first) as usize],
            None => table.id(t as usize),
        }
    }
}

pub struct Laid {
    pub groups: Vec<Group>,
    pub table: TaskTable,
    pub graph: Graph,
    pub spec: GraphSpec,
}

/// A path template for the default log of each task: `DIR/jobs/JOB/[NAME-]{task}.EXT`.
fn default_log(dir: &Path, job: u64, name: &str, ext: &str) -> String {
    let base = dir.join("jobs").join(job.to_string());
    let escaped = base.display().to_string().replace('{', "{{").replace('}', "}}");
    if name.is_empty() {
        format!("{escaped}/{{task}}.{ext}")
    } else {
        format!("{escaped}/{name}-{{task}}.{ext}")
    }
}

/// The groups in an order where each comes after those it depends on (the file's
/// order where it can); unknown names, duplicates and cycles refused.
fn order(groups: &[GroupRequest]) -> Result<Vec<usize>, String> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        if groups.len() > 1 && g.name.is_empty() {
            return Err(format!("task entry {} has no name; every [[task]] needs name = \"...\"", i + 1));
        }
        if by_name.insert(&g.name, i).is_some() {
            return Err(format!("two tasks are named \"{}\"; give each a name of its own", g.name));
        }
    }
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(groups.len());
    for g in groups {
        let mut d = Vec::new();
        for a in &g.after {
            match by_name.get(a.as_str()) {
                Some(&j) => d.push(j),
                None => {
                    let mut names: Vec<&str> = by_name.keys().copied().collect();
                    names.sort_unstable();
                    return Err(format!(
                        "task \"{}\": after = \"{a}\" names no task; the tasks are {}",
                        g.name,
                        names.join(", ")
                    ));
                }
            }
        }
        deps.push(d);
    }
    let mut placed = vec![false; groups.len()];
    let mut out = Vec::with_capacity(groups.len());
    while out.len() < groups.len() {
        let Some(next) = (0..groups.len()).find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d])) else {
            // Every group left waits on another left: follow the first's dependencies
            // until one repeats.
            let mut path = vec![(0..groups.len()).find(|&i| !placed[i]).expect("one left")];
            loop {
                let last = *path.last().expect("non-empty");
                let next = *deps[last].iter().find(|&&d| !placed[d]).expect("waits on one left");
                if let Some(at) = path.iter().position(|&p| p == next) {
                    let mut cycle: Vec<&str> = path[at..].iter().map(|&i| groups[i].name.as_str()).collect();
                    cycle.push(&groups[next].name);
                    return Err(format!(
                        "the tasks {} depend on each other in a cycle; remove one of these after = entries",
                        cycle.join(" -> ")
                    ));
                }
                path.push(next);
            }
        };
        placed[next] = true;
        out.push(next);
    }
    Ok(out)
}

/// Check a request for job `id` of the server in `dir` and lay it out.
pub fn lay_out(dir: &Path, id: u64, req: &TaskJobRequest) -> Result<Laid, String> {
    if req.groups.is_empty() {
        return Err("the job has no task; a graph file needs at least one [[task]]".into());
    }
    let file = req.groups.len() > 1 || !req.groups[0].name.is_empty();
    let order = order(&req.groups)?;
    let mut groups: Vec<Group> = Vec::with_capacity(order.len());
    let mut all_ids: Vec<u64> = Vec::new();
    let mut all_entries: Vec<String> = Vec::new();
    let any_entries = req.groups.iter().any(|g| g.entries.is_some());
    let mut first: u64 = 0;
    let mut at: HashMap<&str, usize> = HashMap::new();
    for &gi in &order {
        let g = &req.groups[gi];
        let what = if file { format!("task \"{}\": ", g.name) } else { String::new() };
        let fail = |m: String| format!("{what}{m}");
        if g.argv.is_empty() || g.argv[0].is_empty() {
            return Err(fail(
                "no command given: put it after --, as in `drover submit --array 1-10 -- ./run.sh {task}`".into(),
            ));
        }
        let (mut ids, entries) = match (&g.array, &g.entries) {
            (Some(_), Some(_)) => return Err(fail("--array and --each-line both given: use one of them".into())),
            (Some(spec), None) => (taskjob::parse_array(spec).map_err(|e| fail(e.to_string()))?, None),
            (None, Some(lines)) if lines.is_empty() => {
                return Err(fail("--each-line: the file has no lines; one task runs per line".into()));
            }
            (None, Some(lines)) => ((0..lines.len() as u64).collect(), Some(lines)),
            (None, None) => (vec![0], None),
        };
        ids.sort_unstable();
        if g.cores == 0 {
            return Err(fail("--cores 0: a task needs at least one core".into()));
        }
        let log = |l: &Log, ext: &str| match l {
            Log::Default => Some(default_log(dir, id, &g.name, ext)),
            Log::Discard => None,
            Log::Path(p) => Some(p.clone()),
        };
        let spec = CommandSpec {
            argv: g.argv.clone(),
            env: g.env.clone(),
            cwd: g.cwd.clone(),
            stdout: log(&g.stdout, "out"),
            stderr: log(&g.stderr, "err"),
            time_limit: g.time_limit,
            cores: g.cores,
        };
        // Placeholders are checked once here, so that no task fails on them.
        let vars = Vars {
            task: 0,
            job: id,
            entry: "",
        };
        for t in spec.argv.iter().chain(&spec.stdout).chain(&spec.stderr) {
            taskjob::substitute(t, &vars).map_err(|e| fail(e.to_string()))?;
        }
        let len = ids.len() as u64;
        if first + len > u64::from(u32::MAX) {
            return Err(format!("{} tasks: at most {} in one job", first + len, u32::MAX));
        }
        if any_entries {
            match entries {
                Some(e) => all_entries.extend(e.iter().cloned()),
                None => all_entries.extend(std::iter::repeat_n(String::new(), ids.len())),
            }
        }
        let indices = if file {
            all_ids.extend(first..first + len);
            Some(ids)
        } else {
            all_ids = ids;
            None
        };
        at.insert(&g.name, groups.len());
        groups.push(Group {
            name: g.name.clone(),
            spec,
            first: first as u32,
            len: len as u32,
            indices,
        });
        first += len;
    }
    // Dependencies: every task of a group on every task of the groups it is after.
    let mut edges: u64 = 0;
    let mut deps_of: Vec<Vec<u32>> = Vec::with_capacity(groups.len());
    for (k, &gi) in order.iter().enumerate() {
        let mut deps = Vec::new();
        for a in &req.groups[gi].after {
            let d = &groups[at[a.as_str()]];
            deps.extend(d.first..d.first + d.len);
        }
        edges += deps.len() as u64 * u64::from(groups[k].len);
        deps_of.push(deps);
    }
    if edges > MAX_EDGES {
        return Err(format!(
            "{edges} dependencies between tasks (each task of an entry on every task of those it comes after); at most {MAX_EDGES}: put a single merge task between large arrays"
        ));
    }
    let mut b = GraphBuilder::with_capacity(first as usize, edges as usize);
    for (g, deps) in groups.iter().zip(&deps_of) {
        for _ in 0..g.len {
            b.add(TaskKind::Remote, deps);
        }
    }
    let mut res: Vec<(u32, Option<std::time::Duration>)> = Vec::new();
    let class: Vec<u16> = groups
        .iter()
        .map(|g| {
            let r = (g.spec.cores, g.spec.time_limit);
            let c = res.iter().position(|x| *x == r).unwrap_or_else(|| {
                res.push(r);
                res.len() - 1
            });
            c as u16
        })
        .collect();
    let classes = (res.len() > 1).then(|| TaskClasses {
        of_task: groups
            .iter()
            .zip(&class)
            .flat_map(|(g, &c)| std::iter::repeat_n(c, g.len as usize))
            .collect(),
        res: res.clone(),
    });
    let spec = GraphSpec {
        priority: req.priority,
        on_error: OnError::FailTask { retries: req.max_retries },
        cores: res[0].0,
        time_limit: res[0].1,
        prefetch: false,
        classes,
    };
    let table = TaskTable::new(all_ids, any_entries.then_some(all_entries));
    Ok(Laid {
        groups,
        table,
        graph: b.build(),
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, after: &[&str], array: Option<&str>, cores: u32) -> GroupRequest {
        GroupRequest {
            name: name.into(),
            argv: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            stdout: Log::Default,
            stderr: Log::Discard,
            array: array.map(str::to_string),
            entries: None,
            time_limit: None,
            cores,
            after: after.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn request(groups: Vec<GroupRequest>) -> TaskJobRequest {
        TaskJobRequest {
            name: None,
            priority: 0,
            max_retries: 0,
            after: vec![],
            groups,
        }
    }

    #[test]
    fn a_diamond_is_ordered_numbered_and_linked() {
        // Written out of order: merge first.
        let req = request(vec![
            group("merge", &["left", "right"], None, 1),
            group("left", &["prep"], Some("1-3"), 2),
            group("right", &["prep"], None, 1),
            group("prep", &[], None, 1),
        ]);
        let l = lay_out(Path::new("/srv"), 4, &req).unwrap();
        let names: Vec<(&str, u32, u32)> = l.groups.iter().map(|g| (g.name.as_str(), g.first, g.len)).collect();
        assert_eq!(names, vec![("prep", 0, 1), ("left", 1, 3), ("right", 4, 1), ("merge", 5, 1)]);
        assert_eq!(l.graph.len(), 6);
        // left's {task} values are its array indices; the table numbers tasks 0..6.
        assert_eq!(l.groups[1].index(2, &l.table), 2);
        assert_eq!(l.table.id(5), 5);
        assert_eq!(l.groups[0].spec.stdout.as_deref(), Some("/srv/jobs/4/prep-{task}.out"));
        // Two classes: left's tasks take 2 cores.
        assert_eq!(l.spec.res(1), (2, None));
        assert_eq!(l.spec.res(4), (1, None));
    }

    #[test]
    fn unknown_names_duplicates_and_cycles_are_refused() {
        let e = lay_out(Path::new("/s"), 1, &request(vec![group("a", &["b"], None, 1)]))
            .err()
            .unwrap();
        assert_eq!(e, "task \"a\": after = \"b\" names no task; the tasks are a");
        let e = lay_out(
            Path::new("/s"),
            1,
            &request(vec![group("a", &[], None, 1), group("a", &[], None, 1)]),
        )
        .err()
        .unwrap();
        assert!(e.contains("two tasks are named \"a\""), "{e}");
        let req = request(vec![
            group("x", &[], None, 1),
            group("a", &["c", "x"], None, 1),
            group("b", &["a"], None, 1),
            group("c", &["b"], None, 1),
        ]);
        let e = lay_out(Path::new("/s"), 1, &req).err().unwrap();
        assert_eq!(
            e,
            "the tasks a -> c -> b -> a depend on each other in a cycle; remove one of these after = entries"
        );
    }
}
