//! HDF5 read micro-benchmark: a dataset read chunk by chunk with hdf5-metno, to
//! compare with the raw read rate (docs/PERFORMANCE.md).
//!
//! Run: cargo run --release --example read_bench -- FILE DATASET

use std::time::Instant;

use hdf5::{Hyperslab, Selection, SliceOrIndex};
use ndarray::IxDyn;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (file, name) = (&args[1], &args[2]);
    let f = hdf5::File::open(file).expect("open");
    let ds = f.dataset(name).expect("dataset");
    let shape = ds.shape();
    let chunk = ds.chunk().expect("chunked");
    for round in 0..3 {
        let t = Instant::now();
        let mut total = 0.0f64;
        let mut bytes = 0usize;
        let (mut r, rows, cols) = (0, shape[0], shape[1]);
        while r < rows {
            let mut c = 0;
            while c < cols {
                let sel = vec![
                    SliceOrIndex::SliceTo {
                        start: r,
                        step: 1,
                        end: (r + chunk[0]).min(rows),
                        block: 1,
                    },
                    SliceOrIndex::SliceTo {
                        start: c,
                        step: 1,
                        end: (c + chunk[1]).min(cols),
                        block: 1,
                    },
                ];
                let a = ds
                    .as_reader()
                    .read_slice::<f64, _, IxDyn>(Selection::from(Hyperslab::from(sel)))
                    .expect("read");
                bytes += a.len() * 8;
                total += a.sum();
                c += chunk[1];
            }
            r += chunk[0];
        }
        let s = t.elapsed().as_secs_f64();
        println!("round {round}: {:.3} s, {:.2} GB/s (sum {total:.3})", s, bytes as f64 / s / 1e9);
    }
}
