//! The Wasmtime engine of the process: one [`Engine`] (compiled code, the pooling allocator of
//! instance slots), one [`Linker`] with every import a function may use, the on-disk cache of
//! compiled components, and the epoch ticker that drives CPU accounting and cooperative yields.
//!
//! Owns: the engine configuration (fiber-based async, so a monoio shard drives guests; epoch
//! interruption; the pooling allocator with copy-on-write memory images), the `functions-epoch`
//! thread, `<data_dir>/functions/cache/<sha256>.cwasm`.
//!
//! Invariants:
//! - Every component that goes live was compiled by this engine and pre-instantiated against
//!   this linker: its imports are all provided and it exports `wasi:http/incoming-handler`
//!   (checked at deploy, [`Runtime::prepare`]); nothing is linked lazily at invoke time.
//! - A cached artifact is only ever one this process (or an earlier one with the same engine)
//!   wrote; Wasmtime refuses an artifact of another engine configuration or version and the
//!   component is then compiled again.
//! - The pool holds `shards × max_concurrent` component instances; the per-shard admission count
//!   in front of it ([`crate::invoke`]) keeps it from ever being exhausted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::host::Invocation;
use crate::settings::EdgeRuntime;

/// How often the epoch advances: the unit of CPU accounting and the longest a guest runs on a
/// shard before yielding to the shard's other tasks.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Bytes of a pool slot's memory and tables reset in place (not madvised) when it is released.
const KEEP_RESIDENT: usize = 1024 * 1024;

/// Why a component cannot go live.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("the component imports what MadBase does not provide: {0}")]
    Imports(String),
    #[error("the component does not target the wasi:http/proxy world (no wasi:http/incoming-handler export): {0}")]
    World(String),
}

/// The engine, the linker and the compiled-artifact cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Invocation>,
    cache_dir: PathBuf,
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    /// The engine for `shards` shards under `settings`; compiled artifacts are cached in
    /// `cache_dir`. Starts the epoch ticker.
    pub fn new(settings: &EdgeRuntime, shards: usize, cache_dir: &Path) -> Result<Runtime, String> {
        std::fs::create_dir_all(cache_dir).map_err(|e| format!("{}: {e}", cache_dir.display()))?;
        let slots = (shards * settings.max_concurrent) as u32;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            // A component instantiates a few core modules (its code, adapters, shims).
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 4)
            .max_memories_per_component(2)
            .max_tables_per_component(4)
            .max_memory_size((settings.memory_limit_mb * 1024 * 1024) as usize)
            .table_elements(100_000)
            .max_core_instance_size(4 * 1024 * 1024)
            .max_component_instance_size(1024 * 1024)
            .max_unused_warm_slots(slots)
            // Reset a released slot's dirty pages with memset instead of madvise (found with
            // Linux's PAGEMAP_SCAN where the kernel has it, 6.7+): a small function dirties few
            // pages per request, and every madvise in a threaded process costs a TLB shootdown on
            // each core the process runs on, then page faults on the next request.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| format!("the WebAssembly engine: {e:#}"))?;
        let linker = linker(&engine).map_err(|e| format!("the WebAssembly linker: {e:#}"))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        start_ticker(engine.clone(), ticker_stop.clone())?;
        Ok(Runtime { engine, linker, cache_dir: cache_dir.to_owned(), ticker_stop })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from the cache) the component `bytes` whose SHA-256 is `sha256` and
    /// pre-instantiates it against the linker. Slow (Cranelift): run it off the shards.
    pub fn prepare(&self, bytes: &[u8], sha256: &str) -> Result<ProxyPre<Invocation>, PrepareError> {
        let component = self.component(bytes, sha256)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| PrepareError::Imports(format!("{e:#}")))?;
        ProxyPre::new(pre).map_err(|e| PrepareError::World(format!("{e:#}")))
    }

    fn component(&self, bytes: &[u8], sha256: &str) -> Result<Component, PrepareError> {
        debug_assert!(sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()));
        let cached = self.cache_dir.join(format!("{sha256}.cwasm"));
        if cached.exists() {
            // SAFETY: the cache directory holds only artifacts this engine serialized (below);
            // Wasmtime checks the artifact's engine and version and refuses any other.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(error = %e, file = %cached.display(), "compiled function cache entry unusable; compiling again")
                }
            }
        }
        if is_core_module(bytes) {
            return Err(PrepareError::NotAComponent(
                "this is a core WebAssembly module; build a component (e.g. the wasm32-wasip2 target, or `wasm-tools component new`)"
                    .to_owned(),
            ));
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| PrepareError::NotAComponent(format!("{e:#}")))?;
        match component.serialize() {
            Ok(artifact) => {
                let tmp = self.cache_dir.join(format!("{sha256}.tmp.{}", std::process::id()));
                let written = std::fs::write(&tmp, artifact).and_then(|()| std::fs::rename(&tmp, &cached));
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::warn!(error = %e, "cannot cache a compiled function");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize a compiled function"),
        }
        Ok(component)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A core module's preamble: `\0asm`, version 1, layer 0 (a component's layer is 1).
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// Everything a function may import: WASI 0.2 (with no preopened directory and every socket
/// refused by the invocation's `WasiCtx`), `wasi:http` (outgoing requests go through
/// [`crate::host::OutboundHooks`]), and MadBase's own `madbase:functions` package.
fn linker(engine: &Engine) -> wasmtime::Result<Linker<Invocation>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    crate::host::bindings::Host_::add_to_linker::<Invocation, HasSelf<Invocation>>(&mut linker, |state| state)?;
    Ok(linker)
}

fn start_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), String> {
    std::thread::Builder::new()
        .name("functions-epoch".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the functions' epoch thread: {e}"))
}
