//! Golden files of rendered job scripts (tests/golden/), and parser tests on samples of
//! the real tools' output. Regenerate goldens with `UPDATE_GOLDEN=1 cargo test golden`
//! and read the diff: it is the review of every directive.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::site::Site;

fn site(text: &str) -> Site {
    Site::parse("golden.toml", "golden", text).unwrap_or_else(|e| panic!("{e}"))
}

fn req(array_size: u32) -> JobRequest {
    JobRequest {
        worker_command: "/opt/drover/bin/drover worker --access /home/u/.drover/server/access.toml --threads 4 --death-timeout 60".into(),
        array_size,
        log_dir: PathBuf::from("/home/u/.drover/logs"),
        script_stem: PathBuf::from("/home/u/.drover/logs/drover-worker-1"),
    }
}

fn check(name: &str, text: &str, array_size: u32) {
    let s = site(text);
    let sys = system_for(&s).unwrap();
    let r = render(sys.as_ref(), &s, &req(array_size)).unwrap();
    let mut out = r.main.clone();
    for (suffix, body) in &r.extra {
        out.push_str(&format!("\n#### {suffix}\n{body}"));
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &out).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing golden {}; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(out, want, "rendered {name} differs from {}", path.display());
}

const FULL: &str = r#"
queue = "q1"
account = "acct7"
cores = 8
memory = "20 GiB"
processes = 2
walltime = "1-02:03:04"
prologue = ["module load hdf5", "export OMP_NUM_THREADS=1"]
"#;

#[test]
fn golden_slurm() {
    check("slurm-basic", "scheduler = \"slurm\"", 0);
    check(
        "slurm-full",
        &format!("scheduler = \"slurm\"\n{FULL}\ngpus = 4\njob_extra_directives = [\"--qos=debug\", \"--constraint=cpu\"]"),
        0,
    );
    check(
        "slurm-array",
        "scheduler = \"slurm\"\ncores = 2\narray = true\nwalltime = \"00:30:00\"",
        5,
    );
    check(
        "slurm-multinode",
        "scheduler = \"slurm\"\ncores = 4\nprocesses = 2\nnodes = 3\nmemory = \"1000 MB\"",
        0,
    );
}

#[test]
fn golden_pbs() {
    check(
        "pbs-full",
        &format!("scheduler = \"pbs\"\n{FULL}\ngpus = 2\njob_extra_directives = [\"-l filesystems=home:eagle\"]"),
        0,
    );
    check("pbs-array", "scheduler = \"pbs\"\ncores = 2\narray = true", 4);
    check("pbs-array-of-one", "scheduler = \"pbs\"\ncores = 2\narray = true", 1);
    check(
        "pbs-multinode",
        "scheduler = \"pbs\"\ncores = 4\nprocesses = 2\nnodes = 2\nwalltime = \"48:00:00\"",
        0,
    );
    check("torque-full", &format!("scheduler = \"pbs\"\npbs_flavor = \"torque\"\n{FULL}"), 0);
    check("torque-array", "scheduler = \"torque\"\narray = true", 3);
}

#[test]
fn golden_sge() {
    check("sge-full", &format!("scheduler = \"sge\"\n{FULL}\npe = \"mpi\""), 0);
    check(
        "sge-array",
        "scheduler = \"sge\"\narray = true\nmemory = \"3 GB\"\nmemory_resource = \"mem\"",
        6,
    );
    check("sge-one-core", "scheduler = \"sge\"", 0);
}

#[test]
fn golden_lsf() {
    check("lsf-full", &format!("scheduler = \"lsf\"\n{FULL}\ngpus = 1"), 0);
    check(
        "lsf-mb-unit",
        "scheduler = \"lsf\"\nmemory = \"1500 MB\"\nlsf_unit = \"MB\"\nwalltime = \"00:00:30\"",
        0,
    );
    check("lsf-array", "scheduler = \"lsf\"\narray = true", 8);
    check("lsf-multinode", "scheduler = \"lsf\"\ncores = 4\nnodes = 2\nprocesses = 4", 0);
}

#[test]
fn golden_htcondor() {
    check(
        "htcondor-full",
        &format!("scheduler = \"htcondor\"\n{FULL}\ngpus = 1\njob_extra_directives = ['+JobFlavour = \"espresso\"']"),
        0,
    );
    check("htcondor-array", "scheduler = \"htcondor\"\narray = true\nmemory = \"100 MB\"", 10);
}

#[test]
fn golden_template_override() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("mine.j2");
    std::fs::write(
        &t,
        "#!/bin/sh\n# custom {{ job_name }} on {{ queue }} for {{ walltime }}\n{{ worker_command }}\n",
    )
    .unwrap();
    let s = site(&format!(
        "scheduler = \"slurm\"\nqueue = \"gpu\"\nwalltime = \"00:10:00\"\ntemplate = \"{}\"",
        t.display()
    ));
    let r = render(&slurm::Slurm, &s, &req(0)).unwrap();
    assert_eq!(
        r.main,
        format!("#!/bin/sh\n# custom drover-worker on gpu for 00:10:00\n{}\n", req(0).worker_command)
    );
    let bad = site(&format!(
        "scheduler = \"slurm\"\ntemplate = \"{}\"",
        dir.path().join("missing.j2").display()
    ));
    assert!(render(&slurm::Slurm, &bad, &req(0)).unwrap_err().to_string().contains("missing.j2"));
    std::fs::write(&t, "{{ no_such_variable }}").unwrap();
    let e = render(&slurm::Slurm, &s, &req(0)).unwrap_err().to_string();
    assert!(e.contains("undefined"), "{e}");
}

#[test]
fn conversions_never_round_down() {
    // 1 byte over a MiB asks for 2 MiB everywhere.
    let s = site("scheduler = \"slurm\"\nmemory = \"1048577 B\"\nwalltime = \"00:00:59\"");
    let r = render(&slurm::Slurm, &s, &req(0)).unwrap().main;
    assert!(r.contains("--mem=2M") && r.contains("--time=00:00:59"), "{r}");
    let s = site("scheduler = \"lsf\"\nmemory = \"1025 B\"\nwalltime = \"00:00:59\"");
    let r = render(&lsf::Lsf, &s, &req(0)).unwrap().main;
    assert!(r.contains("-M 2\n") && r.contains("-W 0:01"), "{r}");
    let s = site("scheduler = \"sge\"\ncores = 3\nmemory = \"3145729 B\"");
    let r = render(&sge::Sge, &s, &req(0)).unwrap().main;
    assert!(r.contains("h_vmem=2M"), "per slot 1048577 B is 2M: {r}");
    let s = site("scheduler = \"htcondor\"\nmemory = \"1 GB\"");
    let r = render(&htcondor::Htcondor, &s, &req(0)).unwrap().main;
    assert!(r.contains("request_memory = 954\n"), "1e9 B = 953.67 MiB -> 954: {r}");
}

#[test]
fn submit_outputs_from_the_real_tools() {
    assert_eq!(slurm::Slurm.parse_submit("12345\n").unwrap().0, "12345");
    assert_eq!(
        slurm::Slurm.parse_submit("sbatch: warning: something\n12346;cluster2\n").unwrap().0,
        "12346"
    );
    assert!(slurm::Slurm.parse_submit("sbatch: error: Batch job submission failed\n").is_err());
    let pbs = pbs::Pbs {
        flavor: crate::config::site::PbsFlavor::Pro,
    };
    assert_eq!(pbs.parse_submit("1234.pbs01\n").unwrap().0, "1234.pbs01");
    assert_eq!(
        pbs.parse_submit("Welcome to the cluster!\n1235[].pbs01.example.org\n").unwrap().0,
        "1235[].pbs01.example.org"
    );
    assert!(pbs.parse_submit("qsub: Unknown queue\n").is_err());
    assert_eq!(
        sge::Sge
            .parse_submit("Your job 42 (\"drover-worker\") has been submitted\n")
            .unwrap()
            .0,
        "42"
    );
    assert_eq!(
        sge::Sge
            .parse_submit("Your job-array 43.1-4:1 (\"drover-worker\") has been submitted\n")
            .unwrap()
            .0,
        "43"
    );
    assert_eq!(sge::Sge.parse_submit("44\n").unwrap().0, "44");
    assert_eq!(
        lsf::Lsf.parse_submit("Job <5678> is submitted to queue <normal>.\n").unwrap().0,
        "5678"
    );
    assert_eq!(
        lsf::Lsf
            .parse_submit("Job <5679> is submitted to default queue <normal>.\n")
            .unwrap()
            .0,
        "5679"
    );
    assert!(lsf::Lsf.parse_submit("bad: No such queue. Job not submitted.\n").is_err());
    assert_eq!(
        htcondor::Htcondor
            .parse_submit("Submitting job(s)...\n3 job(s) submitted to cluster 77.\n")
            .unwrap()
            .0,
        "77"
    );
}

#[test]
fn status_outputs_from_the_real_tools() {
    let ids = |v: &[&str]| v.iter().map(|s| JobId(s.to_string())).collect::<Vec<_>>();
    let st = slurm::Slurm
        .parse_status(
            "101|RUNNING\n102_1|PENDING\n102_2|COMPLETING\n999|RUNNING\n",
            &ids(&["101", "102_1", "102_2", "103"]),
        )
        .unwrap();
    assert_eq!(
        st.values().copied().collect::<Vec<_>>(),
        vec![JobState::Running, JobState::Pending, JobState::Running, JobState::Gone]
    );

    let pbs = pbs::Pbs {
        flavor: crate::config::site::PbsFlavor::Pro,
    };
    let json = r#"{"timestamp":1700000000,"pbs_version":"2022.1","pbs_server":"pbs01",
      "Jobs":{"1234.pbs01":{"Job_Name":"drover-worker","job_state":"R"},
              "1235[1].pbs01":{"job_state":"Q"},"1235[2].pbs01":{"job_state":"F"}}}"#;
    let st = pbs
        .parse_status(json, &ids(&["1234.pbs01", "1235[1].pbs01", "1235[2].pbs01", "9.pbs01"]))
        .unwrap();
    assert_eq!(
        st.values().copied().collect::<Vec<_>>(),
        vec![JobState::Running, JobState::Pending, JobState::Gone, JobState::Gone]
    );
    assert_eq!(
        pbs.array_elements(&JobId("1235[].pbs01".into()), 2),
        ids(&["1235[1].pbs01", "1235[2].pbs01"])
    );
    assert_eq!(
        pbs.status(&ids(&["1235[1].pbs01", "1235[2].pbs01"])).last().unwrap(),
        "1235[].pbs01"
    );

    let torque = pbs::Pbs {
        flavor: crate::config::site::PbsFlavor::Torque,
    };
    let text = "Job Id: 77.torque01\n    Job_Name = drover-worker\n    job_state = R\n\nJob Id: 78.torque01\n    job_state = C\n";
    let st = torque.parse_status(text, &ids(&["77.torque01", "78.torque01"])).unwrap();
    assert_eq!(st.values().copied().collect::<Vec<_>>(), vec![JobState::Running, JobState::Gone]);

    let xml = r#"<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>12</JB_job_number>
      <JAT_prio>0.55500</JAT_prio>
      <JB_name>drover-worker</JB_name>
      <JB_owner>root</JB_owner>
      <state>r</state>
      <slots>2</slots>
    </job_list>
    <job_list state="running">
      <JB_job_number>14</JB_job_number>
      <state>r</state>
      <tasks>1</tasks>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>14</JB_job_number>
      <state>qw</state>
      <tasks>2-3:1</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>15</JB_job_number>
      <state>Eqw</state>
    </job_list>
  </job_info>
</job_info>"#;
    let st = sge::Sge
        .parse_status(xml, &ids(&["12", "14.1", "14.2", "14.3", "15", "16"]))
        .unwrap();
    assert_eq!(
        st.values().copied().collect::<Vec<_>>(),
        vec![
            JobState::Running,
            JobState::Running,
            JobState::Pending,
            JobState::Pending,
            JobState::Held,
            JobState::Gone
        ]
    );

    let bj = r#"{"COMMAND":"bjobs","JOBS":3,"RECORDS":[
      {"JOBID":"5678","JOBINDEX":"0","STAT":"RUN"},
      {"JOBID":"5679","JOBINDEX":"1","STAT":"PEND"},
      {"JOBID":"5679","JOBINDEX":"2","STAT":"DONE"},
      {"ERROR":"Job <5680> is not found"}]}"#;
    let st = lsf::Lsf.parse_status(bj, &ids(&["5678", "5679[1]", "5679[2]", "5680"])).unwrap();
    assert_eq!(
        st.values().copied().collect::<Vec<_>>(),
        vec![JobState::Running, JobState::Pending, JobState::Gone, JobState::Gone]
    );

    let cq = r#"[{"ClusterId":77,"ProcId":0,"JobStatus":2},{"ClusterId":77,"ProcId":1,"JobStatus":1},{"ClusterId":78,"ProcId":0,"JobStatus":5}]"#;
    let st = htcondor::Htcondor.parse_status(cq, &ids(&["77.0", "77.1", "78", "79"])).unwrap();
    assert_eq!(
        st.values().copied().collect::<Vec<_>>(),
        vec![JobState::Running, JobState::Pending, JobState::Held, JobState::Gone]
    );
    assert!(
        htcondor::Htcondor
            .parse_status("", &ids(&["80"]))
            .unwrap()
            .values()
            .all(|s| *s == JobState::Gone)
    );
}

#[test]
fn shared_fs_reaches_the_worker_command() {
    use crate::batch::runner::worker_command;
    let exe = std::path::Path::new("/opt/drover/bin/drover");
    let access = std::path::Path::new("/home/u/.drover/server/access.toml");
    let cmd = |extra: &str| worker_command(exe, access, &site(&format!("scheduler = \"slurm\"\ncores = 4\n{extra}")));
    assert!(cmd("shared_fs = true\n").ends_with(" --shared-fs"), "{}", cmd("shared_fs = true\n"));
    assert!(cmd("shared_fs = false\n").ends_with(" --no-shared-fs"));
    assert!(!cmd("").contains("shared-fs"));
}

#[test]
fn transport_reaches_the_worker_command_and_a_bad_one_is_refused() {
    use crate::batch::runner::worker_command;
    let exe = std::path::Path::new("/opt/drover/bin/drover");
    let access = std::path::Path::new("/home/u/.drover/server/access.toml");
    let cmd = |extra: &str| worker_command(exe, access, &site(&format!("scheduler = \"slurm\"\ncores = 4\n{extra}")));
    assert!(
        cmd("transport = \"tcp\"\n").ends_with(" --transport tcp"),
        "{}",
        cmd("transport = \"tcp\"\n")
    );
    assert!(cmd("transport = \"quic\"\n").ends_with(" --transport quic"));
    assert!(!cmd("transport = \"auto\"\n").contains("--transport"));
    assert!(!cmd("").contains("--transport"));
    let e = Site::parse("t.toml", "t", "scheduler = \"slurm\"\ntransport = \"udp\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("transport") && e.contains("\"udp\"") && e.contains("\"tcp\""), "{e}");
}
