//! Jobs of the server (issue 13): array workloads and task jobs behind one interface,
//! each in its own module. Today only the task job's record of its tasks lives here
//! ([`task_table`]); the array workload is still the actor's `Job`.

pub mod task_table;
