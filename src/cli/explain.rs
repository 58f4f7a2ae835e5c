//! `drover run --explain`: the plan without running it: stages, tasks, bytes read and
//! sent, and the memory of a task and of a worker against the bound.

use crate::config::workload::MemoryBound;
use crate::exec::geometry::fmt_shape;
use crate::exec::memory::{self, Footprint, mib};
use crate::exec::plan::Plan;

/// The explanation as text (a table and a memory line) or as one JSON object.
pub fn explain(plan: &Plan, bound: Option<&MemoryBound>, threads: u32, json: bool) -> String {
    let fp = memory::footprint(plan, bound.map_or(threads, |b| b.threads));
    if json {
        return to_json(plan, &fp, bound).to_string() + "\n";
    }
    use std::fmt::Write;
    let tasks: u64 = fp.stages.iter().map(|s| s.tasks).sum();
    let local = plan.stages.iter().filter(|s| s.local).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan: {} stage{} on the workers, {tasks} task{}{}",
        fp.stages.len(),
        if fp.stages.len() == 1 { "" } else { "s" },
        if tasks == 1 { "" } else { "s" },
        if local > 0 {
            format!(" (and {local} computed by the driver)")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "{:>5}  {:>8}  {:>12}  {:>12}  {:>12}  computes",
        "stage", "tasks", "reads", "sends", "task peak"
    );
    for s in &fp.stages {
        let st = &plan.stages[s.stage];
        let _ = writeln!(
            out,
            "{:>5}  {:>8}  {:>12}  {:>12}  {:>12}  {} in blocks of {}",
            s.stage,
            s.tasks,
            mib(s.read),
            mib(s.written),
            mib(s.task),
            memory::describe_stage(plan, s.stage),
            fmt_shape(&st.block)
        );
    }
    for (o, i) in staging(plan) {
        let _ = writeln!(
            out,
            "staging: input \"{}\" is compressed and its chunks would be decoded by many tasks: copied once, uncompressed, to {} ({} on disk, removed at the end)",
            plan.inputs[i as usize].name,
            crate::exec::staging::temp_name(&o.file).display(),
            mib(crate::exec::staging::staged_bytes(plan, i)),
        );
    }
    let _ = write!(
        out,
        "memory per worker: base {} + input buffers {} + consts {} + {} thread{} x {} = {}",
        mib(fp.base),
        mib(fp.inputs),
        mib(fp.consts),
        fp.threads,
        if fp.threads == 1 { "" } else { "s" },
        mib(fp.per_thread()),
        mib(fp.total())
    );
    match bound {
        Some(b) => {
            let _ = writeln!(
                out,
                "; bound {} ({}): {}",
                mib(b.bytes),
                b.source,
                if fp.total() <= b.bytes { "fits" } else { "does not fit" }
            );
        }
        None => out.push_str("; no bound\n"),
    }
    out
}

/// The plan's staging copies: each output that is one, and the input it copies.
fn staging(plan: &Plan) -> impl Iterator<Item = (&crate::exec::plan::OutputSpec, u32)> {
    plan.outputs.iter().filter_map(|o| Some((o, o.staging?)))
}

fn to_json(plan: &Plan, fp: &Footprint, bound: Option<&MemoryBound>) -> serde_json::Value {
    let stages: Vec<serde_json::Value> = fp
        .stages
        .iter()
        .map(|s| {
            serde_json::json!({
                "stage": s.stage,
                "computes": memory::describe_stage(plan, s.stage),
                "block": plan.stages[s.stage].block,
                "tasks": s.tasks,
                "read_bytes": s.read,
                "sent_bytes": s.written,
                "task_peak_bytes": s.task,
            })
        })
        .collect();
    let staged: Vec<serde_json::Value> = staging(plan)
        .map(|(o, i)| {
            serde_json::json!({
                "input": plan.inputs[i as usize].name,
                "file": crate::exec::staging::temp_name(&o.file),
                "bytes": o.shape.iter().map(|&n| n as u64).product::<u64>() * o.dtype.size() as u64,
            })
        })
        .collect();
    serde_json::json!({
        "stages": stages,
        "staging": staged,
        "memory": {
            "base_bytes": fp.base,
            "input_buffer_bytes": fp.inputs,
            "const_bytes": fp.consts,
            "threads": fp.threads,
            "per_thread_bytes": fp.per_thread(),
            "per_worker_bytes": fp.total(),
            "bound_bytes": bound.map(|b| b.bytes),
            "bound_source": bound.map(|b| b.source.clone()),
        },
    })
}
