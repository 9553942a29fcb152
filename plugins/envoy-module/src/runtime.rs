//! The module-owned async runtime that drives plugins' pending work off the worker threads.
//!
//! A small multi-threaded tokio runtime, created on first use. Its threads live as long as the
//! process, so Envoy must load the module with `do_not_close: true` (a `dlclose` would unmap
//! code these threads run).

use std::sync::LazyLock;

use htnn_plugins::{Completion, PendingTask};
use tokio::runtime::Runtime;

static RUNTIME: LazyLock<Result<Runtime, String>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("htnn-async")
        .enable_time()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot start the htnn async runtime: {e}"))
});

/// Runs `task` (after its delay) on the runtime and calls `done` with its completion, or with
/// the panic message if the plugin's future panicked. `done` runs on a runtime thread.
pub fn spawn(
    task: PendingTask,
    done: impl FnOnce(Result<Completion, String>) + Send + 'static,
) -> Result<(), String> {
    let rt = RUNTIME.as_ref().map_err(Clone::clone)?;
    let delay = task.delay();
    let work = rt.spawn(async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        task.into_future().await
    });
    rt.spawn(async move {
        let result = work.await.map_err(|e| match e.try_into_panic() {
            Ok(payload) => crate::hooks::panic_message(&payload),
            Err(e) => e.to_string(),
        });
        done(result);
    });
    Ok(())
}
