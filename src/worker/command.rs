//! Running one task of a task job (issue 13): a command in a process group of its own,
//! its output appended to its log files, stopped (the whole group) when its time limit
//! passes or the job is cancelled. Synchronous: a worker thread runs one at a time.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Where a stream of the task goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Sink {
    /// Appended to this file (created with its folders).
    File(PathBuf),
    Discard,
}

/// One task, its placeholders already replaced.
#[derive(Clone, Debug)]
pub struct CommandTask {
    /// The program and its arguments.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub stdout: Sink,
    pub stderr: Sink,
    pub time_limit: Option<Duration>,
    /// A line written before the task's output when its log already has some (a retry,
    /// a resumed job): logs are appended to, never truncated.
    pub marker: String,
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Exited(i32),
    Signalled(i32),
    /// Its time limit passed; its process group was stopped.
    TimedOut,
    /// The job was cancelled while it ran; its process group was stopped.
    Cancelled,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        *self == Outcome::Exited(0)
    }
}

/// A handle to stop a running task from another thread.
#[derive(Clone, Default)]
pub struct Stop(Arc<(Mutex<State>, Condvar)>);

#[derive(Default)]
struct State {
    cancelled: bool,
    finished: bool,
    /// The task's process group, once started.
    pgid: Option<i32>,
    /// Why the group is being stopped (the first reason wins).
    stopped: Option<Outcome>,
}

impl Stop {
    /// Stop the task (now, or as soon as it starts).
    pub fn cancel(&self) {
        let (m, c) = &*self.0;
        let mut s = m.lock().expect("stop lock");
        s.cancelled = true;
        if s.pgid.is_some() && !s.finished && s.stopped.is_none() {
            s.stopped = Some(Outcome::Cancelled);
            let stop = self.clone();
            std::thread::spawn(move || stop.stop_group());
        }
        c.notify_all();
    }

    /// Kill the task's whole process group at once (the worker is exiting).
    pub fn kill(&self) {
        let s = self.0.0.lock().expect("stop lock");
        if let (false, Some(p)) = (s.finished, s.pgid) {
            let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
        }
    }

    /// SIGTERM to the group, SIGKILL after [`GRACE`] unless the task ended.
    fn stop_group(&self) {
        let (m, c) = &*self.0;
        let mut s = m.lock().expect("stop lock");
        let Some(pgid) = s.pgid.map(Pid::from_raw) else { return };
        let _ = killpg(pgid, Signal::SIGTERM);
        let grace_end = Instant::now() + GRACE;
        while !s.finished && Instant::now() < grace_end {
            s = c.wait_timeout(s, grace_end - Instant::now()).expect("stop lock").0;
        }
        // The leader may be gone while others of its group are not.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// How long a stopped group has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

fn open_sink(sink: &Sink, marker: &str) -> std::io::Result<Stdio> {
    match sink {
        Sink::Discard => Ok(Stdio::null()),
        Sink::File(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = OpenOptions::new().create(true).append(true).open(p)?;
            if f.metadata()?.len() > 0 {
                writeln!(f, "{marker}")?;
            }
            Ok(Stdio::from(f))
        }
    }
}

/// Write why a task could not start or finish into its stderr log.
fn note_failure(sink: &Sink, marker: &str, message: &str) {
    if let Sink::File(p) = sink {
        let written = open_sink(sink, marker).and_then(|_| {
            let mut f = OpenOptions::new().append(true).open(p)?;
            writeln!(f, "{message}")
        });
        if let Err(e) = written {
            tracing::warn!(log = %p.display(), error = %e, "cannot write a task's stderr log");
        }
    }
}

/// Run `task` to its end; `stop` may cancel it. A program that cannot be started
/// ends as exit 127 (as a shell says), the reason written to its stderr log.
pub fn run(task: &CommandTask, stop: &Stop) -> (Outcome, Duration) {
    let started = Instant::now();
    let Some((program, args)) = task.argv.split_first() else {
        note_failure(&task.stderr, &task.marker, "drover: the task has no command");
        return (Outcome::Exited(127), started.elapsed());
    };
    let same_file = task.stdout == task.stderr && matches!(task.stdout, Sink::File(_));
    let streams = open_sink(&task.stdout, &task.marker).and_then(|out| {
        let err = if same_file {
            match &task.stdout {
                Sink::File(p) => Stdio::from(OpenOptions::new().append(true).open(p)?),
                Sink::Discard => Stdio::null(),
            }
        } else {
            open_sink(&task.stderr, &task.marker)?
        };
        Ok((out, err))
    });
    let (out, err) = match streams {
        Ok(s) => s,
        Err(e) => {
            note_failure(&task.stderr, &task.marker, &format!("drover: cannot open the task's log: {e}"));
            return (Outcome::Exited(127), started.elapsed());
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(task.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // No pre_exec hook (a parent-death signal, say): with none, std spawns with
    // posix_spawn (vfork-like) instead of fork, which in a multi-threaded worker costs
    // copy-on-write faults and TLB shootdowns on every task. A worker that is killed
    // outright therefore leaves its running commands to end by themselves (a batch
    // system reclaims a job's processes with the job); SIGTERM, SIGINT and a lost
    // server stop them (`Stop::kill`, `Stop::cancel`).
    if let Some(d) = &task.cwd {
        cmd.current_dir(d);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("drover: cannot run \"{program}\": {e}");
            note_failure(&task.stderr, &task.marker, &msg);
            return (Outcome::Exited(127), started.elapsed());
        }
    };
    let pgid = Pid::from_raw(child.id() as i32);
    {
        let mut s = stop.0.0.lock().expect("stop lock");
        s.pgid = Some(pgid.as_raw());
        if s.cancelled && s.stopped.is_none() {
            // Cancelled before it started.
            s.stopped = Some(Outcome::Cancelled);
            let stop = stop.clone();
            std::thread::spawn(move || stop.stop_group());
        }
    }
    // Only a task with a time limit has a watchdog thread (cancel starts its own).
    let watchdog = task.time_limit.map(|limit| {
        let watch = stop.clone();
        std::thread::spawn(move || {
            let deadline = started + limit;
            {
                let (m, c) = &*watch.0;
                let mut s = m.lock().expect("stop lock");
                while !s.finished && Instant::now() < deadline {
                    s = c.wait_timeout(s, deadline - Instant::now()).expect("stop lock").0;
                }
                if s.finished || s.stopped.is_some() {
                    return;
                }
                s.stopped = Some(Outcome::TimedOut);
            }
            watch.stop_group();
        })
    });
    let status = child.wait();
    let stopped = {
        let (m, c) = &*stop.0;
        let mut s = m.lock().expect("stop lock");
        s.finished = true;
        c.notify_all();
        s.stopped.clone()
    };
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    // Whatever the leader did, no process of its group outlives the task.
    let _ = killpg(pgid, Signal::SIGKILL);
    let outcome = match (stopped, status) {
        (Some(why), _) => why,
        (None, Ok(s)) => match (s.code(), s.signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(sig)) => Outcome::Signalled(sig),
            (None, None) => Outcome::Exited(-1),
        },
        (None, Err(e)) => {
            note_failure(&task.stderr, &task.marker, &format!("drover: lost the task's process: {e}"));
            Outcome::Exited(-1)
        }
    };
    (outcome, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!("drover-cmd-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn task(dir: &Dir, script: &str) -> CommandTask {
        CommandTask {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("DROVER_TASK_ID".into(), "7".into())],
            cwd: Some(dir.0.clone()),
            stdout: Sink::File(dir.0.join("logs/7.out")),
            stderr: Sink::File(dir.0.join("logs/7.err")),
            time_limit: None,
            marker: "==== drover: retry 1 ====".into(),
        }
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn exit_codes_signals_environment_and_logs() {
        let d = Dir::new("exit");
        let t = task(&d, "echo out $DROVER_TASK_ID; echo err >&2; exit 3");
        assert_eq!(run(&t, &Stop::default()).0, Outcome::Exited(3));
        assert_eq!(read(d.0.join("logs/7.out")), "out 7\n");
        assert_eq!(read(d.0.join("logs/7.err")), "err\n");
        // A retry appends after a marker: nothing is truncated.
        assert!(run(&task(&d, "echo again"), &Stop::default()).0.succeeded());
        assert_eq!(read(d.0.join("logs/7.out")), "out 7\n==== drover: retry 1 ====\nagain\n");
        assert_eq!(run(&task(&d, "kill -USR1 $$"), &Stop::default()).0, Outcome::Signalled(10));
    }

    #[test]
    fn a_missing_program_exits_127_with_the_reason_in_its_stderr() {
        let d = Dir::new("missing");
        let mut t = task(&d, "");
        t.argv = vec!["/no/such/program".into(), "x".into()];
        assert_eq!(run(&t, &Stop::default()).0, Outcome::Exited(127));
        let err = read(d.0.join("logs/7.err"));
        assert!(
            err.starts_with("drover: cannot run \"/no/such/program\": No such file or directory"),
            "{err}"
        );
    }

    /// Whether any live process (not a zombie) of group `pgid` remains, looking in
    /// /proc for up to 2 s (a SIGKILL is delivered asynchronously).
    fn group_alive(pgid: i32) -> bool {
        let alive = || {
            std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                // pid (comm) state ppid pgrp ...
                stat.rsplit_once(") ").is_some_and(|(_, rest)| {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
                })
            })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive() {
            if Instant::now() > deadline {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_time_limit_stops_the_whole_group_including_children() {
        let d = Dir::new("limit");
        // The group leader writes its pid, starts a child that ignores SIGTERM, and
        // waits: both must be gone after the limit.
        let mut t = task(&d, "echo $$ > pid; (trap '' TERM; sleep 60) & sleep 60");
        t.time_limit = Some(Duration::from_millis(300));
        let (outcome, took) = run(&t, &Stop::default());
        assert_eq!(outcome, Outcome::TimedOut);
        assert!(took < Duration::from_secs(10), "{took:?}");
        let pgid: i32 = read(d.0.join("pid")).trim().parse().unwrap();
        assert!(!group_alive(pgid), "a process of the task's group outlived it");
    }

    #[test]
    fn cancelling_stops_a_running_task() {
        let d = Dir::new("cancel");
        let t = task(&d, "echo $$ > pid; sleep 60");
        let stop = Stop::default();
        let s2 = stop.clone();
        let pid = d.0.join("pid");
        // Cancelled once the task runs (it has written its pid).
        let canceller = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !std::fs::read_to_string(&pid).is_ok_and(|p| p.ends_with('\n')) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            s2.cancel();
        });
        let (outcome, _) = run(&t, &stop);
        canceller.join().unwrap();
        assert_eq!(outcome, Outcome::Cancelled);
        let pgid: i32 = read(d.0.join("pid")).trim().parse().unwrap();
        assert!(!group_alive(pgid));
    }

    #[test]
    fn stdout_none_discards_and_one_file_takes_both_streams() {
        let d = Dir::new("sinks");
        let mut t = task(&d, "echo a; echo b >&2");
        t.stdout = Sink::Discard;
        run(&t, &Stop::default());
        assert_eq!(read(d.0.join("logs/7.err")), "b\n");
        let mut t = task(&d, "echo a; echo b >&2");
        t.stdout = Sink::File(d.0.join("both.log"));
        t.stderr = t.stdout.clone();
        run(&t, &Stop::default());
        assert_eq!(read(d.0.join("both.log")), "a\nb\n");
    }
}
