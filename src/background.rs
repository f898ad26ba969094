//! Work whose result nobody waits for.
//!
//! A run ends holding large structures: the writer properties of thousands of columns per
//! table, the tables' parsed Delta schemas, a merge's id sets. Freeing them takes tens of
//! milliseconds on a wide dataset, and a command line run would spend them just before it
//! exits, when the operating system frees the memory at once anyway. And some work is only
//! worth starting early (reading definitions a run's last step may need).

/// Runs `work` on a thread of its own, named `name`: the caller goes on at once. The process
/// may exit before the thread is done, so `work` must be something only worth having sooner
/// (a cache filled, memory freed); where no thread is to be had, it is not done here (and
/// `work`, with what it holds, is dropped).
pub fn run(name: &str, work: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new().name(name.into()).spawn(work);
    std::mem::drop(spawned);
}

/// Drops `value` on a thread of its own (see [`run`]).
pub fn drop<T: Send + 'static>(value: T) {
    run("drop", move || std::mem::drop(value));
}
