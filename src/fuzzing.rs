//! Entry points of the fuzz targets (`fuzz/`): every decoder of bytes from outside the
//! process, fed arbitrary bytes. Each function must return (never panic, hang or
//! allocate without bound) whatever the bytes are; where a decoder accepts the bytes,
//! it checks what must then hold (a round trip, a bound).
//!
//! The same functions replay the seed corpus (`fuzz/corpus/<target>/`) and every
//! crash found so far (`fuzz/regressions/<target>/`) in the unit tests, so the stable
//! toolchain checks them on every run; `scripts/fuzz.sh` runs the coverage-guided
//! campaigns (cargo-fuzz, libFuzzer).

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::proto::{self, PeerMsg};

/// A fuzz target: a decoder fed raw bytes.
pub type Target = fn(&[u8]);

/// The targets, by name (the folder names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_stranger", frame_stranger),
    ("frame_peer", frame_peer),
    ("expr", expr),
    ("workload", workload),
    ("site", site),
    ("tasks", tasks),
    ("access", access),
    ("journal", journal),
    ("batch_status", batch_status),
    ("chunk", chunk),
];

/// Run a future over in-memory bytes: reading a slice never waits, so one poll ends it.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("reading from memory never waits"),
    }
}

/// The server reading a stranger's first frame (before authentication).
pub fn frame_stranger(data: &[u8]) {
    let mut r = data;
    let _ = now(proto::read_first::<_, PeerMsg>(&mut r));
}

/// The server reading an authenticated peer's frames, as its connection loop does.
pub fn frame_peer(data: &[u8]) {
    let mut r = data;
    while let Ok((msg, len)) = now(proto::read_head::<_, PeerMsg>(&mut r)) {
        let before = r.len();
        match now(proto::read_payload(&mut r, len)) {
            Ok(p) => assert_eq!(p.len() as u64, len),
            Err(_) => {
                assert!((len as usize) > before, "a payload that was there was not read");
                return;
            }
        }
        // What decodes encodes again to the same message.
        let again = proto::encode(&msg, len).expect("a decoded message encodes");
        let mut a = &again[..];
        let (back, blen) = now(proto::read_head::<_, PeerMsg>(&mut a)).expect("an encoded message decodes");
        assert_eq!(blen, len);
        assert_eq!(format!("{back:?}"), format!("{msg:?}"));
    }
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The expression parser (workload `expr` and `let` values, `drover explain`).
pub fn expr(data: &[u8]) {
    if let Some(s) = text(data) {
        if let Err(e) = crate::exec::expr::parse(s) {
            // The message points at a column inside the expression.
            let _ = e.to_string();
        }
    }
}

/// A workload file.
pub fn workload(data: &[u8]) {
    if let Some(s) = text(data) {
        let _ = crate::config::workload::Workload::parse(Path::new("/fuzz/w.toml"), s);
    }
}

/// A site file, and the batch script rendered from it.
pub fn site(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let Ok(mut site) = crate::config::site::Site::parse("/fuzz/site.toml", "fuzz", s) else {
        return;
    };
    // A template file is read from disk; the built-in ones are what is fuzzed here.
    site.template = None;
    if let Ok(sys) = crate::batch::system_for(&site) {
        let req = crate::batch::JobRequest {
            worker_command: "drover worker --access /fuzz/access.toml".into(),
            array_size: 3,
            log_dir: "/fuzz/logs".into(),
            script_stem: "/fuzz/job".into(),
        };
        let _ = crate::batch::render(sys.as_ref(), &site, &req);
    }
}

/// A task graph file and the task-job specs of the command line (arrays, time
/// limits, placeholders).
pub fn tasks(data: &[u8]) {
    let Some(s) = text(data) else { return };
    use crate::config::taskjob;
    let _ = crate::config::taskgraph::parse(Path::new("/fuzz/graph.toml"), s);
    for line in s.lines() {
        if let Ok(ix) = taskjob::parse_array(line) {
            assert!(ix.len() as u64 <= taskjob::MAX_ARRAY);
        }
        let _ = taskjob::parse_time_limit(line);
        let _ = taskjob::substitute(
            line,
            &taskjob::Vars {
                task: 7,
                job: 3,
                entry: "e",
            },
        );
    }
}

/// An access file (the worker's and client's key to a server).
pub fn access(data: &[u8]) {
    if let Some(s) = text(data) {
        let _ = crate::transport::Access::parse(Path::new("/fuzz/access.toml"), s);
    }
}

/// A journal's records, as a resumed run reads them.
pub fn journal(data: &[u8]) {
    use crate::server::journal::parse;
    let (rec, valid) = parse(data);
    assert!(valid <= data.len());
    // The valid prefix alone reads the same; what follows it is ignored.
    let (again, valid2) = parse(&data[..valid]);
    assert_eq!(valid2, valid);
    assert_eq!(again.partials, rec.partials);
    assert_eq!(again.blocks, rec.blocks);
}

/// The batch systems' submit and status output: first byte, which system; then a
/// line of the job ids asked about; then the tool's output.
pub fn batch_status(data: &[u8]) {
    use crate::batch::JobId;
    let Some((&which, rest)) = data.split_first() else { return };
    let Some(s) = text(rest) else { return };
    let name = ["slurm", "pbs", "torque", "sge", "lsf", "htcondor"][which as usize % 6];
    let site = crate::config::site::Site::parse("/fuzz/site.toml", "fuzz", &format!("scheduler = \"{name}\"\n"))
        .expect("a site naming only its scheduler is valid");
    let sys = crate::batch::system_for(&site).expect("a batch system");
    let (first, output) = s.split_once('\n').unwrap_or((s, ""));
    let _ = sys.parse_submit(output);
    let mut ids: Vec<JobId> = first.split_whitespace().take(16).map(|w| JobId(w.into())).collect();
    if let Some(id) = ids.first().cloned() {
        ids.extend(sys.array_elements(&id, 3));
        let _ = sys.status(&ids);
    }
    if let Ok(states) = sys.parse_status(output, &ids) {
        assert!(states.keys().all(|k| ids.contains(k)), "states only of the ids asked about");
    }
}

/// A stored HDF5 chunk through drover's filter pipeline (first bytes: the filters,
/// the element size, the filter mask and the chunk's size; then the stored bytes).
pub fn chunk(data: &[u8]) {
    use crate::exec::hdf::filters::{BITSHUFFLE, BLOSC, LZ4, Pipeline, ZSTD};
    use hdf5::filters::Filter;
    if data.len() < 5 {
        return;
    }
    let (head, stored) = data.split_at(5);
    let elem = [1usize, 2, 4, 8][head[0] as usize % 4];
    // A filter per nibble: bitshuffle with lz4 (5) or zstd (13); 7 and 15 none.
    let choices = |b: u8| -> Option<Filter> {
        Some(match b % 8 {
            0 => Filter::Deflate(4),
            1 => Filter::Shuffle,
            2 => Filter::Fletcher32,
            3 => Filter::User(BLOSC as _, vec![2, 2, elem as u32, 0, 5, 1, 1]),
            4 => Filter::User(LZ4 as _, vec![]),
            5 => Filter::User(BITSHUFFLE as _, vec![0, 3, elem as u32, 0, if b < 8 { 2 } else { 3 }]),
            6 => Filter::User(ZSTD as _, vec![]),
            _ => return None,
        })
    };
    let filters: Vec<Filter> = [head[1] & 0xf, head[1] >> 4, head[2] & 0xf]
        .into_iter()
        .filter_map(choices)
        .collect();
    let mask = (head[2] >> 4) as u32;
    // Chunks up to 64 KiB, whole elements.
    let expected = (head[3] as usize | (head[4] as usize) << 8) / elem * elem;
    let crate::exec::hdf::filters::Decoding::Drover(p) = Pipeline::for_dataset(&filters, elem, |_| true) else {
        return;
    };
    let mut out = Vec::new();
    if p.decode(stored, mask, expected, &mut out).is_ok() {
        assert_eq!(out.len(), expected, "a decoded chunk has the chunk's size");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write the seed corpus of the binary targets (frames, journal records, access
    /// files); the text targets' seeds come from `scripts/fuzz_seeds.py`.
    #[test]
    #[ignore = "writes fuzz/corpus; run by scripts/fuzz_seeds.py"]
    fn write_binary_seeds() {
        use crate::proto::Hello;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let put = |target: &str, name: &str, bytes: &[u8]| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        };
        let frame = |msg: &PeerMsg, payload: &[u8]| [proto::encode(msg, payload.len() as u64).unwrap(), payload.to_vec()].concat();
        let hello = PeerMsg::Hello(Hello {
            version: proto::PROTOCOL_VERSION,
            role: proto::Role::Worker,
            token: "ab".repeat(32),
            worker: Some(proto::WorkerInfo {
                host: "node7".into(),
                pid: 4242,
                threads: 2,
                memory: 8 << 30,
                batch_job: Some("1234_5".into()),
                node: Some("node7".into()),
                walltime_left_ms: Some(3_600_000),
                memory_bound: None,
                shared_fs: Default::default(),
                transport: "quic".into(),
            }),
        });
        put("frame_stranger", "hello", &frame(&hello, &[]));
        put("frame_stranger", "heartbeat", &frame(&PeerMsg::Heartbeat, &[]));
        let results = proto::sample_results();
        let w = crate::config::workload::Workload::parse(Path::new("/fuzz/w.toml"), SEED_WORKLOAD).unwrap();
        let stream = [
            frame(&hello, &[]),
            frame(
                &PeerMsg::Load {
                    rss_bytes: 1 << 30,
                    cpu_ms: 1200,
                    running_ms: 3400,
                },
                &[],
            ),
            frame(&results, &[7; 16]),
            frame(
                &PeerMsg::TaskError {
                    job: 1,
                    task: 2,
                    message: "boom".into(),
                },
                &[],
            ),
            frame(
                &PeerMsg::Draining {
                    released: vec![(1, 4), (1, 5)],
                },
                &[],
            ),
            frame(&PeerMsg::Submit { workload: w }, &[]),
            frame(
                &PeerMsg::Wait {
                    jobs: vec![1, 2],
                    as_completed: true,
                },
                &[],
            ),
            frame(
                &PeerMsg::CancelJob {
                    job: 1,
                    tasks: Some(vec![3]),
                },
                &[],
            ),
        ];
        put("frame_peer", "session", &stream.concat());
        for (i, f) in stream.iter().enumerate() {
            put("frame_peer", &format!("frame{i}"), f);
        }
        use crate::server::journal::{BLOCKS, PARTIAL, record as rec};
        let j = [
            rec(PARTIAL, 7, &[1, 2, 3, 4, 5, 6, 7, 8]),
            rec(BLOCKS, 0, &[5, 0, 0, 0, 9, 0, 0, 0]),
            rec(PARTIAL, 8, &[0; 24]),
        ]
        .concat();
        put("journal", "records", &j);
        put("journal", "torn", &j[..j.len() - 5]);
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .unwrap()
            .cert
            .pem();
        let access = format!(
            "version = {}\naddresses = [\"127.0.0.1:4433\", \"[::1]:4433\"]\ntcp_addresses = [\"127.0.0.1:4433\"]\ncert = \"\"\"\n{cert}\"\"\"\ntoken = \"{}\"\ndashboard = \"http://127.0.0.1:8787/?key=abc\"\n",
            proto::PROTOCOL_VERSION,
            "ab".repeat(32)
        );
        crate::transport::Access::parse(Path::new("a"), &access).expect("the seed access file is valid");
        put("access", "access.toml", access.as_bytes());
    }

    const SEED_WORKLOAD: &str = "[inputs]\nt = { file = \"t.h5\", dataset = \"t\" }\n\n[[outputs]]\nfile = \"out.h5\"\ndataset = \"m\"\nexpr = \"mean(t, axis=0)\"\n";

    /// Every file of the seed corpus and every crash found so far, through its target.
    #[test]
    fn the_seed_corpus_and_the_crashes_found_so_far_decode_without_panicking() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut seen = 0;
        for (name, target) in TARGETS {
            let mut files = 0;
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for e in entries {
                    let path = e.expect("a corpus entry").path();
                    let bytes = std::fs::read(&path).expect("a corpus file");
                    let done = std::panic::catch_unwind(|| target(&bytes));
                    assert!(done.is_ok(), "{name}: {} panicked", path.display());
                    files += 1;
                }
            }
            assert!(files > 0, "{name}: no seed corpus in fuzz/corpus/{name}");
            seen += files;
        }
        assert!(seen >= TARGETS.len());
    }
}
