//! Preparing an array workload off the runtime: its plan, its journal (resuming an
//! interrupted run when it matches), its output writer.

use std::sync::Arc;

use crate::config::workload::Workload;
use crate::exec::plan::{Plan, TaskMap};
use crate::server::journal::{Journal, Recovered};
use crate::server::writer::{Writer, output_files, temp_name};

/// A planned workload, built off the runtime (HDF5 inspection, output file creation).
pub struct Prepared {
    pub(super) plan: Arc<Plan>,
    pub(super) graph: crate::core::Graph,
    pub(super) map: TaskMap,
    pub(super) writer: Writer,
    pub(super) recovered: Recovered,
}

impl Prepared {
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}

/// Plan a workload, open its journal (resuming when it matches), open the writer.
pub fn prepare(workload: &Workload) -> Result<Prepared, (bool, String)> {
    let plan = Plan::build(workload).map_err(|e| (true, e.to_string()))?;
    let (graph, map) = plan.graph();
    let (mut journal, mut recovered) = Journal::open(&plan, || tracing::info!("the workload or its inputs changed: starting afresh"))
        .map_err(|e| {
            (
                false,
                format!(
                    "cannot open the run journal \"{}\": {e}",
                    crate::server::journal::path_for(&plan).display()
                ),
            )
        })?;
    let temps_exist = output_files(&plan).iter().all(|f| temp_name(f).exists());
    if !recovered.blocks.is_empty() && !temps_exist {
        // Blocks were recorded in temporary files that are gone: start over.
        journal.reset().map_err(|e| (false, format!("cannot reset the run journal: {e}")))?;
        recovered = Recovered::default();
    }
    let reopen = temps_exist && !recovered.blocks.is_empty();
    let writer = Writer::start(&plan, reopen, journal).map_err(|e| (false, e))?;
    Ok(Prepared {
        plan: Arc::new(plan),
        graph,
        map,
        writer,
        recovered,
    })
}
