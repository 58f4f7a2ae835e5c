//! Staging copies of compressed inputs: the intermediate layout of a rechunk (issue 12
//! item 2, the Rechunker's idea).
//!
//! A task may read any region of an input, but a compressed chunk is decoded whole
//! whatever part of it is read. When the plan's tasks cut across the chunks of a
//! compressed input (time-step chunks read as time series, a median over time of
//! spatial blocks), each chunk is decoded once per task that touches it: a rechunk of
//! `(1, 721, 1440)` chunks into `(8760, 8, 8)` blocks decodes every chunk dozens of
//! times. Such an input gets a *staging copy*: a first stage decodes every chunk
//! exactly once (blocks of whole chunks) and writes the values uncompressed, in the
//! same chunks, to a hidden file beside the first output
//! (`.OUT.drover-staging-INPUT.drover-tmp`); the stages that read the input read the
//! copy instead, through mapped partial reads that touch only the bytes they need.
//!
//! The copy is an output of the plan like any other (its blocks journaled, written by
//! the workers on the server's host or by the writer), marked `OutputSpec::staging`:
//! a barrier task after its stage makes the writer flush and close it before any task
//! opens it (`InputSpec::staged`), and at the end it is removed instead of renamed. A
//! run interrupted in either stage resumes from it like from any output.
//!
//! Values are copied exactly: the input's stored type when it has no CF decoding
//! (read as f64 and written back, which is exact for every stored type drover
//! computes in), else the decoded f64 values.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::geometry::{self, block_count};
use super::hdf::Dtype;
use super::memory::{input_regions, space};
use super::plan::{Kernel, OutputSpec, Plan, Stage, StageKind};
use crate::config::workload::OutDtype;

/// An input whose chunks the plan's tasks would decode at least this many times over
/// (on average) is staged.
pub const AMPLIFICATION: f64 = 3.0;

/// Blocks sampled to estimate a stage's decoding.
const SAMPLE: u64 = 4096;

/// The name of `file` (without its folder), for the hidden files drover keeps beside it.
pub fn file_name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into())
}

/// The hidden file a temporary output is written to, beside `file`.
pub fn temp_name(file: &Path) -> PathBuf {
    file.with_file_name(format!(".{}.drover-tmp", file_name(file)))
}

/// How many times over the plan's worker tasks decode the chunks of input `i`: the
/// chunks each task's region touches, summed over tasks, against the input's chunks
/// (1.0: each chunk decoded once). `None` for an input without chunks.
pub fn decode_amplification(plan: &Plan, i: u32) -> Option<f64> {
    let inp = &plan.inputs[i as usize];
    let chunk = inp.hdf5_chunk.as_ref()?;
    let total: u64 = inp.shape.iter().zip(chunk).map(|(&n, &c)| n.div_ceil(c.max(1)) as u64).product();
    if total == 0 {
        return None;
    }
    let touched = |r: &[Range<usize>]| -> u64 {
        r.iter()
            .zip(chunk)
            .map(|(r, &c)| {
                if r.is_empty() {
                    0
                } else {
                    (r.end.div_ceil(c) - r.start / c) as u64
                }
            })
            .product()
    };
    let mut decoded = 0f64;
    for st in plan.stages.iter().filter(|st| !st.local) {
        let tasks = block_count(&st.shape, &st.block);
        let step = tasks.div_ceil(SAMPLE).max(1);
        let mut sum = 0u64;
        let mut sampled = 0u64;
        for b in (0..tasks).step_by(step as usize) {
            let region = space(st, &geometry::block_region(&st.shape, &st.block, b));
            for k in st.kernels() {
                input_regions(plan, k, &region, &mut |j, r| {
                    if j == i {
                        sum += touched(r);
                    }
                });
            }
            sampled += 1;
        }
        if sampled > 0 {
            decoded += sum as f64 * tasks as f64 / sampled as f64;
        }
    }
    Some(decoded / total as f64)
}

/// The inputs worth staging: compressed, decoded [`AMPLIFICATION`] times over or more,
/// with their amplification.
pub fn candidates(plan: &Plan) -> Vec<(u32, f64)> {
    if std::env::var_os("DROVER_STAGING").is_some_and(|v| v == "0") {
        return vec![];
    }
    (0..plan.inputs.len() as u32)
        .filter(|&i| {
            let inp = &plan.inputs[i as usize];
            inp.filtered && inp.generate.is_none() && inp.staged.is_none()
        })
        .filter_map(|i| decode_amplification(plan, i).map(|a| (i, a)))
        .filter(|&(_, a)| a >= AMPLIFICATION)
        .collect()
}

/// Bytes a staging copy of input `i` takes on disk.
pub fn staged_bytes(plan: &Plan, i: u32) -> u64 {
    let inp = &plan.inputs[i as usize];
    inp.shape.iter().map(|&n| n as u64).product::<u64>() * staged_dtype(plan, i).size() as u64
}

/// The stored type of a staging copy: the input's own, or f64 for decoded values.
fn staged_dtype(plan: &Plan, i: u32) -> Dtype {
    let inp = &plan.inputs[i as usize];
    if inp.cf.is_some() { Dtype::F64 } else { inp.dtype }
}

/// The output type that stores values of `d` as they are.
fn out_dtype(d: Dtype) -> OutDtype {
    match d {
        Dtype::I8 => OutDtype::I8,
        Dtype::I16 => OutDtype::I16,
        Dtype::I32 => OutDtype::I32,
        Dtype::I64 => OutDtype::I64,
        Dtype::U8 => OutDtype::U8,
        Dtype::U16 => OutDtype::U16,
        Dtype::U32 => OutDtype::U32,
        Dtype::U64 => OutDtype::U64,
        Dtype::F32 => OutDtype::F32,
        Dtype::F64 => OutDtype::F64,
    }
}

/// Replace input `from` by `to` in a kernel.
fn retarget(k: &mut Kernel, from: u32, to: u32) {
    match k {
        Kernel::Input(i) if *i == from => *i = to,
        Kernel::Map(_, args) => args.iter_mut().for_each(|a| retarget(a, from, to)),
        Kernel::View(leaf, _) | Kernel::Take(leaf, ..) | Kernel::Reshape(leaf, _) => retarget(leaf, from, to),
        Kernel::Along(leaf, _) => retarget(leaf, from, to),
        _ => {}
    }
}

/// Give each of `inputs` a staging copy: a first stage copying it in blocks of whole
/// chunks of about `target` elements, read by every stage that read it.
pub fn stage(plan: &mut Plan, inputs: &[u32], target: usize) {
    if inputs.is_empty() || plan.outputs.is_empty() {
        return;
    }
    let first = plan.outputs[0].file.clone();
    let out_name = file_name(&first);
    let n = inputs.len() as u32;
    for st in &mut plan.stages {
        for (&from, to) in inputs.iter().zip(plan.inputs.len() as u32..) {
            retarget(&mut st.kernel, from, to);
            for (_, k) in &mut st.also {
                retarget(k, from, to);
            }
        }
    }
    for c in &mut plan.consts {
        c.stage += n;
    }
    let mut staging = Vec::new();
    for (s, &i) in inputs.iter().enumerate() {
        let dtype = staged_dtype(plan, i);
        let src = &plan.inputs[i as usize];
        // (The chunks of an extendible dataset may be larger than it.)
        let chunk: Vec<usize> = src
            .hdf5_chunk
            .as_ref()
            .expect("staged inputs are chunked")
            .iter()
            .zip(&src.shape)
            .map(|(&c, &n)| c.min(n).max(1))
            .collect();
        let file = first.with_file_name(format!("{out_name}.drover-staging-{}", src.name));
        let output = plan.outputs.len() as u32;
        let mut copy = src.clone();
        copy.file = temp_name(&file);
        copy.dataset = "staged".into();
        copy.dtype = dtype;
        copy.cf = None;
        copy.filtered = false;
        copy.staged = Some(s as u32);
        plan.outputs.push(OutputSpec {
            file,
            dataset: "staged".into(),
            shape: src.shape.clone(),
            dtype: out_dtype(dtype),
            chunk: Some(chunk.clone()),
            expr: src.name.clone(),
            compression: None,
            labels: Default::default(),
            staging: Some(i),
        });
        staging.push(Stage {
            kernel: Kernel::Input(i),
            shape: src.shape.clone(),
            block: geometry::chunk_multiple_block(&chunk, &src.shape, target),
            kind: StageKind::Write { output },
            local: false,
            contract: None,
            also: vec![],
        });
        plan.inputs.push(copy);
    }
    plan.stages.splice(0..0, staging);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::plan::InputSpec;

    fn input(shape: &[usize], chunk: &[usize], block: &[usize]) -> InputSpec {
        InputSpec {
            name: "t".into(),
            file: "/d/in.h5".into(),
            dataset: "t".into(),
            shape: shape.to_vec(),
            dtype: Dtype::F32,
            block: block.to_vec(),
            hdf5_chunk: Some(chunk.to_vec()),
            generate: None,
            cf: None,
            time: Default::default(),
            dims: Default::default(),
            attrs: Default::default(),
            filtered: true,
            staged: None,
        }
    }

    fn write_plan(inp: InputSpec, block: &[usize]) -> Plan {
        let shape = inp.shape.clone();
        Plan {
            inputs: vec![inp],
            consts: vec![],
            stages: vec![Stage {
                kernel: Kernel::Input(0),
                shape: shape.clone(),
                block: block.to_vec(),
                kind: StageKind::Write { output: 0 },
                local: false,
                contract: None,
                also: vec![],
            }],
            outputs: vec![OutputSpec {
                file: "/d/out.h5".into(),
                dataset: "r".into(),
                shape,
                dtype: OutDtype::F32,
                chunk: Some(block.to_vec()),
                expr: "t".into(),
                compression: None,
                labels: Default::default(),
                staging: None,
            }],
        }
    }

    #[test]
    fn amplification_counts_chunks_each_task_decodes() {
        // Time-step chunks read as time series in 4 x 4 spatial blocks: every chunk
        // is decoded by the 16 tasks.
        let p = write_plan(input(&[100, 40, 40], &[1, 40, 40], &[1, 40, 40]), &[100, 10, 10]);
        assert_eq!(decode_amplification(&p, 0), Some(16.0));
        // Blocks of whole chunks decode each once.
        let p = write_plan(input(&[100, 40, 40], &[1, 40, 40], &[1, 40, 40]), &[10, 40, 40]);
        assert_eq!(decode_amplification(&p, 0), Some(1.0));
        // Blocks straddling chunk edges decode the shared chunks twice.
        let p = write_plan(input(&[100, 40, 40], &[10, 40, 40], &[10, 40, 40]), &[15, 40, 40]);
        let a = decode_amplification(&p, 0).unwrap();
        assert!(a > 1.0 && a < 2.0, "{a}");
    }

    #[test]
    fn a_staged_plan_copies_first_and_reads_the_copy() {
        let mut p = write_plan(input(&[100, 40, 40], &[1, 40, 40], &[1, 40, 40]), &[100, 10, 10]);
        assert_eq!(candidates(&p), vec![(0, 16.0)]);
        stage(&mut p, &[0], 1 << 20);
        assert_eq!(p.stages.len(), 2);
        assert_eq!(p.stages[0].kernel, Kernel::Input(0));
        assert_eq!(p.stages[0].block, vec![100, 40, 40]);
        assert_eq!(p.stages[1].kernel, Kernel::Input(1));
        assert_eq!(p.inputs[1].staged, Some(0));
        assert_eq!(p.inputs[1].file, PathBuf::from("/d/.out.h5.drover-staging-t.drover-tmp"));
        assert_eq!(p.outputs[1].staging, Some(0));
        assert_eq!(p.user_outputs().len(), 1);
        // The copy is not itself a candidate, and the second stage waits for the
        // barrier after the first.
        assert!(candidates(&p).is_empty());
        let (g, map) = p.graph();
        assert_eq!(g.len(), 1 + 1 + 16);
        assert!(map.finalize_task(0).is_some());
        assert_eq!(decode_amplification(&p, 0), Some(1.0));
    }
}
