//! Read micro-benchmark: one thread reducing a 2-D dataset over axis 0, chunk by chunk,
//! three ways, to see what each costs against the raw read rate (docs/PERFORMANCE.md):
//!
//! - `hdf5`: hdf5-metno hyperslab reads of each chunk, then the sum;
//! - `copy`: drover's direct reader copying each chunk from the mapped file, then the sum;
//! - `view`: drover's direct reader, the sum computed on the mapped chunk in place.
//!
//! Run: cargo run --release --example read_bench -- FILE DATASET [ROUNDS] [MODES]
//! (MODES: a comma-separated subset of hdf5,copy,view; `flat` sums each chunk as one run)

use std::time::Instant;

use drover::exec::hdf::{Reader, read_region};
use drover::exec::plan::ReduceOp;
use drover::exec::reduce::partial;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (file, name) = (&args[1], &args[2]);
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(3);
    let reader = Reader::open(file.as_ref(), name).expect("open");
    let ds = hdf5::File::open(file).and_then(|f| f.dataset(name)).expect("dataset");
    let shape = ds.shape();
    let chunk = ds.chunk().expect("a chunked dataset");
    assert_eq!(shape.len(), 2, "a 2-D dataset");
    println!("direct reads: {}", reader.is_direct());
    let mut buf = vec![0.0f64; chunk.iter().product()];
    for round in 0..rounds {
        let modes = args.get(4).map_or("hdf5,copy,view", |s| s.as_str());
        for how in modes.split(',') {
            let t = Instant::now();
            let mut total = 0.0f64;
            let mut bytes = 0usize;
            for r in (0..shape[0]).step_by(chunk[0]) {
                for c in (0..shape[1]).step_by(chunk[1]) {
                    let region = [r..(r + chunk[0]).min(shape[0]), c..(c + chunk[1]).min(shape[1])];
                    let n = region.iter().map(|r| r.len()).product::<usize>();
                    let p = match how {
                        "hdf5" => partial(ReduceOp::Sum, &read_region(&ds, &region, Some(&chunk)).expect("read"), &[0]),
                        "copy" => {
                            reader.read_into(&region, &mut buf[..n]).expect("read");
                            let a = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&[region[0].len(), region[1].len()]), &buf[..n])
                                .expect("shape");
                            partial(ReduceOp::Sum, &a, &[0])
                        }
                        "flat" => match reader.view(&region).expect("view") {
                            Some(v) => vec![ndarray::arr0(v.as_slice().expect("contiguous").iter().sum::<f64>()).into_dyn()],
                            None => continue,
                        },
                        _ => match reader.view(&region).expect("view") {
                            Some(v) => partial(ReduceOp::Sum, &v, &[0]),
                            None => continue,
                        },
                    };
                    total += p[0].sum();
                    bytes += n * 8;
                }
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "round {round} {how:>4}: {s:.3} s, {:.2} GB/s (sum {total:.6e})",
                bytes as f64 / s / 1e9
            );
        }
    }
}
