//! Per-function counters on one shard, rendered into `/metrics` with `function` labels:
//! invocations by status class, execution and instantiation time (sums and counts), CPU time,
//! the memory high-water mark, traps and limit kills by kind. (Whole-service latency
//! histograms are the gateway's `madbase_request_duration_seconds{service="functions"}`, and
//! instantiation and execution histograms go to the shard's operation durations.)
//!
//! Invariants: written only by their shard (`Cell`s); one entry per deployed name at most
//! (names come from the registry, so cardinality is bounded by the deployments).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

/// Why an invocation was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    Cpu,
    Memory,
    WallClock,
    IdleTimeout,
    Concurrency,
}

impl Kill {
    pub const ALL: [Kill; 5] = [Kill::Cpu, Kill::Memory, Kill::WallClock, Kill::IdleTimeout, Kill::Concurrency];

    pub fn label(self) -> &'static str {
        match self {
            Kill::Cpu => "cpu",
            Kill::Memory => "memory",
            Kill::WallClock => "wall_clock",
            Kill::IdleTimeout => "idle_timeout",
            Kill::Concurrency => "concurrency",
        }
    }
}

/// One function's counters on one shard.
#[derive(Default)]
pub struct FunctionStats {
    /// By status class: 1xx..5xx at index 0..4.
    pub status: [Cell<u64>; 5],
    pub executions: Cell<u64>,
    pub execution_micros: Cell<u64>,
    pub instantiations: Cell<u64>,
    pub instantiation_nanos: Cell<u64>,
    pub cpu_micros: Cell<u64>,
    pub memory_high_water: Cell<u64>,
    pub traps: Cell<u64>,
    pub kills: [Cell<u64>; 5],
    /// The shard (its duration histograms: instantiation and execution times).
    ctx: Option<Rc<madbase_core::ShardCtx>>,
}

fn bump(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

impl FunctionStats {
    pub fn status(&self, status: u16) {
        if let Some(cell) = self.status.get((status / 100).saturating_sub(1) as usize) {
            bump(cell, 1);
        }
    }

    pub fn instantiated(&self, took: Duration) {
        bump(&self.instantiations, 1);
        bump(&self.instantiation_nanos, took.as_nanos() as u64);
        if let Some(ctx) = &self.ctx {
            ctx.metrics.record_duration("function_instantiate", took);
        }
    }

    pub fn finished(&self, took: Duration, cpu_micros: u64, memory: u64) {
        bump(&self.executions, 1);
        bump(&self.execution_micros, took.as_micros() as u64);
        bump(&self.cpu_micros, cpu_micros);
        self.memory_high_water.set(self.memory_high_water.get().max(memory));
        if let Some(ctx) = &self.ctx {
            ctx.metrics.record_duration("function_execute", took);
        }
    }

    pub fn trap(&self) {
        bump(&self.traps, 1);
    }

    pub fn kill(&self, kill: Kill) {
        bump(&self.kills[Kill::ALL.iter().position(|k| *k == kill).unwrap()], 1);
    }
}

/// Every function's counters on one shard.
#[derive(Default)]
pub struct Stats {
    functions: RefCell<BTreeMap<String, Rc<FunctionStats>>>,
    ctx: Option<Rc<madbase_core::ShardCtx>>,
}

impl Stats {
    pub fn new(ctx: Rc<madbase_core::ShardCtx>) -> Stats {
        Stats { functions: RefCell::default(), ctx: Some(ctx) }
    }

    /// `name`'s counters (a deployed name: the caller looked it up in the registry).
    pub fn function(&self, name: &str) -> Rc<FunctionStats> {
        if let Some(stats) = self.functions.borrow().get(name) {
            return stats.clone();
        }
        let stats = Rc::new(FunctionStats { ctx: self.ctx.clone(), ..FunctionStats::default() });
        self.functions.borrow_mut().insert(name.to_owned(), stats.clone());
        stats
    }

    /// Forgets names no longer deployed.
    pub fn retain(&self, deployed: impl Fn(&str) -> bool) {
        self.functions.borrow_mut().retain(|name, _| deployed(name));
    }

    /// This shard's counters as Prometheus text lines (`shard` label added).
    pub fn render(&self, shard: usize, out: &mut String) {
        for (name, s) in self.functions.borrow().iter() {
            let labels = format!("function=\"{name}\",shard=\"{shard}\"");
            for (i, cell) in s.status.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "madbase_function_invocations_total{{{labels},status=\"{}xx\"}} {}",
                    i + 1,
                    cell.get()
                );
            }
            let _ = writeln!(
                out,
                "madbase_function_execution_seconds_sum{{{labels}}} {}",
                s.execution_micros.get() as f64 / 1e6
            );
            let _ = writeln!(out, "madbase_function_execution_seconds_count{{{labels}}} {}", s.executions.get());
            let _ = writeln!(
                out,
                "madbase_function_instantiation_seconds_sum{{{labels}}} {}",
                s.instantiation_nanos.get() as f64 / 1e9
            );
            let _ =
                writeln!(out, "madbase_function_instantiation_seconds_count{{{labels}}} {}", s.instantiations.get());
            let _ = writeln!(out, "madbase_function_cpu_seconds_total{{{labels}}} {}", s.cpu_micros.get() as f64 / 1e6);
            let _ = writeln!(out, "madbase_function_memory_high_water_bytes{{{labels}}} {}", s.memory_high_water.get());
            let _ = writeln!(out, "madbase_function_traps_total{{{labels}}} {}", s.traps.get());
            for (kill, cell) in Kill::ALL.iter().zip(&s.kills) {
                let _ = writeln!(
                    out,
                    "madbase_function_limit_kills_total{{{labels},limit=\"{}\"}} {}",
                    kill.label(),
                    cell.get()
                );
            }
        }
    }
}

/// The `# HELP`/`# TYPE` lines of the series [`Stats::render`] writes.
pub const HEADER: &str = "\
# HELP madbase_function_invocations_total Function invocations answered, by status class.
# TYPE madbase_function_invocations_total counter
# HELP madbase_function_execution_seconds Time from admission to the guest's end.
# TYPE madbase_function_execution_seconds summary
# HELP madbase_function_instantiation_seconds Time to instantiate the function.
# TYPE madbase_function_instantiation_seconds summary
# HELP madbase_function_cpu_seconds_total CPU time spent in the function (epoch ticks).
# TYPE madbase_function_cpu_seconds_total counter
# HELP madbase_function_memory_high_water_bytes Largest linear memory an instance reached.
# TYPE madbase_function_memory_high_water_bytes gauge
# HELP madbase_function_traps_total Invocations that trapped (the function's own failures).
# TYPE madbase_function_traps_total counter
# HELP madbase_function_limit_kills_total Invocations stopped at a limit, by limit.
# TYPE madbase_function_limit_kills_total counter
";
