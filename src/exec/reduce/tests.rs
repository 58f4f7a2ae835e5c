use super::*;
use crate::exec::geometry::{block_count, block_region};
use crate::exec::kernel::const_slice;
use crate::exec::plan::ConstSpec;
use ndarray::{ArrayD, ShapeBuilder};

fn data(shape: &[usize]) -> ArrayD<f64> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| ((i * 7919) % 101) as f64 * 0.37 + 250.0).collect()).unwrap()
}

fn reduce_blockwise(op: ReduceOp, a: &ArrayD<f64>, axes: &[usize], block: &[usize]) -> ArrayD<f64> {
    let shape = kept(a.shape(), axes);
    let spec = ConstSpec {
        op,
        axes: axes.to_vec(),
        shape,
        stage: 0,
        ddof: 0.0,
        hist: None,
        groups: None,
    };
    let mut acc = Accumulator::new(&spec, a.shape());
    for i in 0..block_count(a.shape(), block) {
        let region = block_region(a.shape(), block, i);
        let blk = const_slice(a, &region);
        acc.merge(&region, partial(op, &blk, axes));
    }
    acc.finish().unwrap()
}

fn close(a: &ArrayD<f64>, b: &ArrayD<f64>) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-11 * y.abs().max(1e-300), "{x} vs {y}");
    }
}

#[test]
fn blockwise_reductions_equal_whole_array_ones() {
    let a = data(&[13, 7, 5]);
    let whole_mean = a.mean_axis(Axis(0)).unwrap();
    close(&reduce_blockwise(ReduceOp::Mean, &a, &[0], &[4, 3, 5]), &whole_mean);
    let whole_sum = a.sum_axis(Axis(2)).sum_axis(Axis(0));
    close(&reduce_blockwise(ReduceOp::Sum, &a, &[0, 2], &[5, 2, 2]), &whole_sum);
    let var1 = a.var_axis(Axis(1), 0.0);
    close(&reduce_blockwise(ReduceOp::Var, &a, &[1], &[3, 2, 4]), &var1);
    let std1 = a.std_axis(Axis(1), 0.0);
    close(&reduce_blockwise(ReduceOp::Std, &a, &[1], &[3, 2, 4]), &std1);
    let mx = reduce_blockwise(ReduceOp::Max, &a, &[0, 1, 2], &[4, 4, 4]);
    assert_eq!(mx.shape(), &[] as &[usize]);
    assert_eq!(mx[[]], a.iter().cloned().fold(f64::MIN, f64::max));
}

#[test]
fn contiguous_fast_paths_equal_the_generic_folds() {
    // A Fortran-ordered copy has the same values but no row-major slice, so
    // `partial` takes ndarray's generic path for it.
    let generic = |a: &ArrayD<f64>| {
        let mut f = ArrayD::zeros(IxDyn(a.shape()).f());
        f.assign(a);
        f
    };
    let mut a = data(&[9, 5, 6]);
    a[[3, 2, 1]] = f64::NAN;
    assert!(generic(&a).as_slice().is_none());
    let ops = [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::Var,
        ReduceOp::Std,
    ];
    let axes: [&[usize]; 6] = [&[0], &[0, 1], &[2], &[1, 2], &[0, 1, 2], &[1]];
    for op in ops {
        for ax in axes {
            let fast = partial(op, &a, ax);
            let slow = partial(op, &generic(&a), ax);
            assert_eq!(fast.len(), slow.len());
            for (f, s) in fast.iter().zip(&slow) {
                assert_eq!(f.shape(), s.shape(), "{op:?} over {ax:?}");
                for (x, y) in f.iter().zip(s) {
                    let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-12 * y.abs().max(1.0);
                    assert!(same, "{op:?} over {ax:?}: {x} vs {y}");
                }
            }
        }
    }
    // Fewer rows than one four-row pass, and a remainder after whole passes.
    for rows in [2, 3, 4, 7] {
        let b = data(&[rows, 11]);
        let fast = partial(ReduceOp::Sum, &b, &[0]);
        let slow = partial(ReduceOp::Sum, &generic(&b), &[0]);
        assert_eq!(fast, slow, "{rows} rows");
    }
}

#[test]
fn min_max_propagate_nan_like_numpy() {
    let mut a = data(&[4, 4]);
    a[[2, 1]] = f64::NAN;
    let mn = reduce_blockwise(ReduceOp::Min, &a, &[0], &[2, 2]);
    assert!(mn[[1]].is_nan());
    assert!(!mn[[0]].is_nan());
}

#[test]
fn histogram_bins_follow_numpy_edges() {
    let h = Histogram { bins: 4, lo: 0.0, hi: 1.0 };
    assert_eq!(h.bin(0.0), Some(0));
    assert_eq!(h.bin(0.25), Some(1), "a left edge belongs to its bin");
    assert_eq!(h.bin(0.2499999999), Some(0));
    assert_eq!(h.bin(1.0), Some(3), "the last bin is closed on the right");
    assert_eq!(h.bin(1.0000001), None);
    assert_eq!(h.bin(-0.0000001), None);
    assert_eq!(h.bin(f64::NAN), None);
    // 0.1 * 3 is 0.30000000000000004: its own bin by the edges, whatever the
    // division computes.
    let h = Histogram {
        bins: 10,
        lo: 0.0,
        hi: 1.0,
    };
    assert_eq!(h.bin(0.1 * 3.0), Some(3));
    assert_eq!(h.bin(0.3), Some(2));
}

/// Every fold-based reduction, blockwise over odd blocks with NaN and zeros
/// present, equals a direct fold of the whole array.
#[test]
fn every_fold_reduction_blockwise_equals_a_direct_fold() {
    let mut a = data(&[9, 7, 5]);
    a.mapv_inplace(|v| (v - 270.0) / 10.0);
    a[[3, 2, 1]] = f64::NAN;
    a[[0, 0, 0]] = 0.0;
    a[[8, 6, 4]] = 0.0;
    // One column entirely NaN along axis 0.
    for i in 0..9 {
        a[[i, 5, 3]] = f64::NAN;
    }
    let direct = |op: ReduceOp, lane: &[f64]| -> f64 {
        let valid: Vec<f64> = lane.iter().copied().filter(|x| !x.is_nan()).collect();
        let any_nan = valid.len() < lane.len();
        match op {
            ReduceOp::Prod => lane.iter().product(),
            ReduceOp::NanSum => valid.iter().sum(),
            ReduceOp::NanProd => valid.iter().product(),
            ReduceOp::NanMean => valid.iter().sum::<f64>() / valid.len() as f64,
            ReduceOp::NanMin if valid.is_empty() => f64::NAN,
            ReduceOp::NanMin => valid.iter().copied().fold(f64::INFINITY, f64::min),
            ReduceOp::NanMax if valid.is_empty() => f64::NAN,
            ReduceOp::NanMax => valid.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ReduceOp::Min if any_nan => f64::NAN,
            ReduceOp::Min => valid.iter().copied().fold(f64::INFINITY, f64::min),
            ReduceOp::CountNonzero => lane.iter().filter(|&&x| x != 0.0).count() as f64,
            ReduceOp::Any => f64::from(u8::from(lane.iter().any(|&x| x != 0.0))),
            ReduceOp::All => f64::from(u8::from(lane.iter().all(|&x| x != 0.0))),
            _ => unreachable!(),
        }
    };
    let ops = [
        ReduceOp::Prod,
        ReduceOp::NanSum,
        ReduceOp::NanProd,
        ReduceOp::NanMean,
        ReduceOp::NanMin,
        ReduceOp::NanMax,
        ReduceOp::Min,
        ReduceOp::CountNonzero,
        ReduceOp::Any,
        ReduceOp::All,
    ];
    let same = |x: f64, y: f64| (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-12 * y.abs().max(1.0);
    for op in ops {
        // Axis 0 (leading, the fast row fold) in blocks of 4, then axis 2
        // (trailing runs) in blocks of 2.
        let got = reduce_blockwise(op, &a, &[0], &[4, 3, 5]);
        for j in 0..7 {
            for k in 0..5 {
                let lane: Vec<f64> = (0..9).map(|i| a[[i, j, k]]).collect();
                assert!(
                    same(got[[j, k]], direct(op, &lane)),
                    "{op:?} axis 0 at [{j}, {k}]: {} vs {}",
                    got[[j, k]],
                    direct(op, &lane)
                );
            }
        }
        let got = reduce_blockwise(op, &a, &[2], &[4, 3, 2]);
        for i in 0..9 {
            for j in 0..7 {
                let lane: Vec<f64> = (0..5).map(|k| a[[i, j, k]]).collect();
                assert!(same(got[[i, j]], direct(op, &lane)), "{op:?} axis 2 at [{i}, {j}]");
            }
        }
        // Axes 0 and 2 (not adjacent: the generic path), all in odd blocks.
        let got = reduce_blockwise(op, &a, &[0, 2], &[4, 3, 2]);
        for j in 0..7 {
            let lane: Vec<f64> = (0..9)
                .flat_map(|i| (0..5).map(move |k| (i, k)))
                .map(|(i, k)| a[[i, j, k]])
                .collect();
            assert!(same(got[[j]], direct(op, &lane)), "{op:?} axes (0, 2) at [{j}]");
        }
    }
}

#[test]
fn grouped_reductions_merge_blocks_and_pieces_into_their_groups() {
    use crate::exec::calendar::{GroupBy, Groups};
    // 10 steps in three groups, interleaved; blocks of 4 steps cut every group.
    let of_step = vec![0u32, 1, 0, 2, 2, 1, 0, 1, 2, 0];
    let groups = Groups {
        by: GroupBy::Month,
        of_step: of_step.clone(),
        keys: vec![1, 2, 3],
    };
    let a = ArrayD::from_shape_fn(IxDyn(&[10, 3]), |ix| ((ix[0] * 7 + ix[1] * 3) % 11) as f64 - 4.0);
    for op in [ReduceOp::Mean, ReduceOp::Var, ReduceOp::Max, ReduceOp::NanSum] {
        let spec = ConstSpec {
            op,
            axes: vec![0],
            shape: vec![3, 3],
            stage: 0,
            ddof: 0.0,
            hist: None,
            groups: Some(groups.clone()),
        };
        let mut acc = Accumulator::new(&spec, &[10, 3]);
        for start in (0..10).step_by(4) {
            let end = (start + 4).min(10);
            let region = vec![start..end, 0..3];
            // the worker: a block-local accumulator fed in two pieces
            let local = ConstSpec {
                groups: Some(groups.slice(start..end)),
                shape: vec![end - start, 3],
                ..spec.clone()
            };
            let mut block = Accumulator::new(&local, &[end - start, 3]);
            let mid = (end - start) / 2;
            for piece in [0..mid, mid..end - start] {
                let values = a
                    .slice(ndarray::s![start + piece.start..start + piece.end, ..])
                    .to_owned()
                    .into_dyn();
                block.merge_values(&[piece, 0..3], &values);
            }
            acc.merge(&region, block.into_partial());
        }
        let got = acc.finish().unwrap();
        assert_eq!(got.shape(), &[3, 3]);
        for g in 0..3u32 {
            let rows: Vec<usize> = (0..10).filter(|&t| of_step[t] == g).collect();
            let sel = a.select(Axis(0), &rows);
            let want = reduce_blockwise(op, &sel, &[0], sel.shape());
            for j in 0..3 {
                let (w, v) = (want[[j]], got[[g as usize, j]]);
                assert!((w - v).abs() <= 1e-12 * w.abs().max(1.0), "{op:?} group {g} column {j}: {v} vs {w}");
            }
        }
    }
}

/// The strip-wise row folds give each element the rows in order: the same bits as a
/// plain fold of one row after another, whatever the row length against the strip.
#[test]
fn row_folds_in_strips_equal_plain_row_order() {
    for inner in [1, 7, FOLD_STRIP - 1, FOLD_STRIP, FOLD_STRIP + 1, 2 * FOLD_STRIP + 333] {
        for rows in [0, 1, 3, 4, 5, 9] {
            let data: Vec<f32> = (0..inner * rows)
                .map(|i| {
                    if i % 13 == 5 {
                        f32::NAN
                    } else {
                        ((i * 7919) % 1009) as f32 * 0.013 - 3.1
                    }
                })
                .collect();
            let start: Vec<f64> = (0..inner).map(|i| i as f64 * 1e-3).collect();
            let mut want = start.clone();
            let (mut want_sum, mut want_count) = (start.clone(), vec![0.0; inner]);
            for row in data.chunks_exact(inner) {
                for (i, &x) in row.iter().enumerate() {
                    want[i] += x as f64 * 1.5;
                    if !x.is_nan() {
                        want_sum[i] += x as f64;
                        want_count[i] += 1.0;
                    }
                }
            }
            let mut got = start.clone();
            fold_rows_by(&mut got, &data, |x| x as f64 * 1.5, |a, x| a + x);
            let (mut sum, mut count) = (start.clone(), vec![0.0; inner]);
            nan_sum_count_rows(&mut sum, &mut count, &data, |x| x as f64);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "fold_rows_by, {rows} rows of {inner}");
            assert_eq!(bits(&sum), bits(&want_sum), "nan sums, {rows} rows of {inner}");
            assert_eq!(count, want_count, "nan counts, {rows} rows of {inner}");
        }
    }
}
