//! Blocks of write stages: each output's values encoded in its dtype straight into
//! the payload (compressed chunk by chunk for a compressed output). A stage writing
//! several outputs (`Stage::also`) evaluates them together and frames their parts.

use std::ops::Range;
use std::sync::Arc;

use ndarray::ArrayD;

use super::plan::{Plan, ReduceOp, Stage};
use super::{
    ExecError, Pieces, Source, buffers, contract_region, encode_piece, eval_regions, for_each_piece, gemm, hdf, leaf_shape, recycle,
};

/// A block of a write stage: the payload to send and the input bytes read.
pub(super) fn block(
    plan: &Plan,
    datasets: &[Source],
    consts: &dyn Fn(u32) -> Option<Arc<ArrayD<f64>>>,
    st: &Stage,
    region: &[Range<usize>],
    piece: &Pieces,
) -> Result<(Vec<u8>, u64), ExecError> {
    let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
    let outputs = st.outputs();
    let kernels: Vec<_> = st.kernels().collect();
    let cast = |o: u32| {
        let out = &plan.outputs[o as usize];
        move |value| ExecError::Cast {
            index: o as usize,
            file: out.file.display().to_string(),
            dataset: out.dataset.clone(),
            dtype: out.dtype.name(),
            value,
        }
    };
    let mut bytes_read = 0;
    // Each piece is encoded straight into its place in the payload: the block exists
    // once, as the bytes that are sent. Every byte is overwritten: the pieces tile it.
    let elems: usize = shape.iter().product();
    let mut bufs: Vec<Vec<u8>> = outputs
        .iter()
        .map(|&o| buffers::PAYLOADS.take(elems * plan.outputs[o as usize].dtype.size()))
        .collect();
    match &st.contract {
        // A contraction whole in the block: one matrix product per block.
        Some(c) => {
            let full = c.full_region(region);
            let con = gemm::contraction(&st.kernel, &c.shape, ReduceOp::Sum, &c.axes, &|k| leaf_shape(plan, k))
                .expect("planned as a contraction");
            let (arr, n) = contract_region(plan, datasets, consts, &con, &full)?;
            bytes_read += n;
            let whole: Vec<Range<usize>> = shape.iter().map(|&n| 0..n).collect();
            let o = outputs[0];
            encode_piece(&arr, &whole, &shape, plan.outputs[o as usize].dtype, &mut bufs[0]).map_err(cast(o))?;
        }
        None => for_each_piece(region, piece, |abs, rel| {
            let (arrays, n) = eval_regions(plan, datasets, consts, &kernels, abs)?;
            bytes_read += n;
            for ((arr, buf), &o) in arrays.into_iter().zip(&mut bufs).zip(&outputs) {
                encode_piece(&arr, rel, &shape, plan.outputs[o as usize].dtype, buf).map_err(cast(o))?;
                recycle(arr);
            }
            Ok(())
        })?,
    }
    // A compressed output: its chunks compressed here, in the worker's threads.
    let mut parts: Vec<Vec<u8>> = outputs
        .iter()
        .zip(bufs)
        .map(|(&o, buf)| {
            let out = &plan.outputs[o as usize];
            match (out.compression, &out.chunk) {
                (Some(c), Some(chunk)) => {
                    let z = hdf::compress_block(region, &out.shape, chunk, out.dtype.size(), c, &buf);
                    buffers::PAYLOADS.give(buf);
                    z
                }
                _ => buf,
            }
        })
        .collect();
    if parts.len() == 1 {
        return Ok((parts.pop().expect("one part"), bytes_read));
    }
    // Several outputs: each part after its length.
    let mut payload = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for p in parts {
        payload.extend_from_slice(&(p.len() as u64).to_le_bytes());
        payload.extend_from_slice(&p);
        buffers::PAYLOADS.give(p);
    }
    Ok((payload, bytes_read))
}

/// Where each output's part lies in a write stage's block payload (`None`: malformed).
pub fn split(st: &Stage, payload: &[u8]) -> Option<Vec<(u32, Range<usize>)>> {
    let outputs = st.outputs();
    if let [o] = outputs[..] {
        return Some(vec![(o, 0..payload.len())]);
    }
    let mut at = 0usize;
    let mut parts = Vec::with_capacity(outputs.len());
    for o in outputs {
        let len = payload.get(at..at + 8)?;
        let len = usize::try_from(u64::from_le_bytes(len.try_into().ok()?)).ok()?;
        let end = at.checked_add(8)?.checked_add(len)?;
        if end > payload.len() {
            return None;
        }
        parts.push((o, at + 8..end));
        at = end;
    }
    (at == payload.len()).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::plan::{Kernel, StageKind};

    #[test]
    fn parts_of_several_outputs_split_back() {
        let st = Stage {
            kernel: Kernel::Num(1.0),
            shape: vec![2],
            block: vec![2],
            kind: StageKind::Write { output: 3 },
            local: false,
            contract: None,
            also: vec![(5, Kernel::Num(2.0))],
        };
        let mut payload = Vec::new();
        for p in [&b"abc"[..], &b""[..]] {
            payload.extend_from_slice(&(p.len() as u64).to_le_bytes());
            payload.extend_from_slice(p);
        }
        assert_eq!(split(&st, &payload), Some(vec![(3, 8..11), (5, 19..19)]));
        assert_eq!(split(&st, &payload[..payload.len() - 1]), None, "truncated");
        let mut longer = payload.clone();
        longer.push(0);
        assert_eq!(split(&st, &longer), None, "trailing bytes");
        let one = Stage { also: vec![], ..st };
        assert_eq!(split(&one, b"xyz"), Some(vec![(3, 0..3)]));
    }
}
