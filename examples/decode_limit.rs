//! The decode limit of a compressed dataset: how fast this machine reads every stored
//! chunk from the page cache (a positioned read, as drover's reader does) and decodes
//! it, on N threads, with no HDF5 call in the
//! loop and nothing computed on the values. The benchmark (scripts/bench.sh) sets
//! drover's whole `drover run` against this figure, measured in the same run.
//!
//! The decoders are the fastest this build has (libdeflate for deflate, libzstd,
//! lz4_flex, c-blosc, a vectorizable byte unshuffle): the same ones drover's reader
//! uses, so the ratio is what drover spends beyond decoding (planning, scheduling,
//! converting, reducing, process start-up).
//!
//! For an unfiltered chunked dataset it is the time to read every chunk that way.
//!
//! Run: cargo run --release --example decode_limit -- FILE DATASET [--threads N] [--rounds R]
//! Prints one JSON line: {"seconds", "chunks", "bytes_stored", "bytes_decoded", "threads"}
//! with the fastest of R rounds (default 1) after one untimed warm-up pass.

use std::time::Instant;

use drover::exec::hdf::decoding_of;
use drover::exec::hdf::filters::Decoding;
use drover::exec::hdf::index::ChunkIndex;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: decode_limit FILE DATASET [--threads N] [--rounds R]";
    let (Some(file), Some(name)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let opt = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| {
                v.parse().unwrap_or_else(|_| panic!("{flag} takes a number, not {v:?}"))
            })
    };
    let threads = opt("--threads", 2).max(1);
    let rounds = opt("--rounds", 1).max(1);
    let ds = hdf5::File::open(file).and_then(|f| f.dataset(name)).expect("open the dataset");
    // An unfiltered dataset's limit is reading its chunks.
    let pipeline = match decoding_of(&ds) {
        Decoding::Drover(p) => Some(p),
        Decoding::None if ds.is_chunked() => None,
        _ => {
            eprintln!("error: dataset {name:?} is neither chunked and unfiltered nor compressed with filters drover decodes");
            std::process::exit(2);
        }
    };
    let index = ChunkIndex::read(&ds, pipeline.is_some()).expect("chunk index");
    let chunk_bytes = index.chunk().iter().product::<usize>() * ds.dtype().expect("dtype").size();
    let locs: Vec<_> = index.locations().collect();
    let f = std::fs::File::open(file).expect("open the file");
    let stored: u64 = locs.iter().map(|l| l.size).sum();
    let pass = || {
        let t = Instant::now();
        std::thread::scope(|s| {
            for k in 0..threads {
                let (locs, f, pipeline) = (&locs, &f, &pipeline);
                s.spawn(move || {
                    use std::os::unix::fs::FileExt;
                    let mut out = Vec::with_capacity(chunk_bytes);
                    let mut raw = Vec::new();
                    let mut check = 0u8;
                    for loc in locs.iter().skip(k).step_by(threads) {
                        raw.resize(loc.size as usize, 0);
                        f.read_exact_at(&mut raw, loc.addr).expect("read a chunk");
                        let values = match pipeline {
                            Some(p) => {
                                p.decode(&raw, loc.mask, chunk_bytes, &mut out).expect("decode");
                                &out
                            }
                            None => &raw,
                        };
                        check ^= values[values.len() / 2];
                    }
                    std::hint::black_box(check);
                });
            }
        });
        t.elapsed().as_secs_f64()
    };
    pass(); // warm the page cache and the buffers
    let best = (0..rounds).map(|_| pass()).fold(f64::INFINITY, f64::min);
    println!(
        "{{\"seconds\": {best:.6}, \"chunks\": {}, \"bytes_stored\": {stored}, \"bytes_decoded\": {}, \"threads\": {threads}}}",
        locs.len(),
        locs.len() * chunk_bytes
    );
}
