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
    let spawned = std::thread::Builder::new().name(name.into()).spawn(|| {
        give_way();
        work()
    });
    std::mem::drop(spawned);
}

/// Lowers the calling thread's priority to the least (Linux: a thread's own nice value), so
/// that such work takes the time the run leaves its cores idle (a run's workers keep two cores
/// nine-tenths busy), not the run's. What the run may wait for (a new table's schema, see
/// `dataset::delta::prepare`) gets the cores as soon as the run waits.
fn give_way() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread; failure leaves the priority as it is.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// Drops `value` on a thread of its own (see [`run`]).
pub fn drop<T: Send + 'static>(value: T) {
    run("drop", move || std::mem::drop(value));
}
