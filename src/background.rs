//! Work whose result nobody waits for.
//!
//! A run ends holding large structures: the writer properties of thousands of columns per
//! table, the tables' parsed Delta schemas, a merge's id sets. Freeing them takes tens of
//! milliseconds on a wide dataset, and a command line run would spend them just before it
//! exits, when the operating system frees the memory at once anyway.

/// Drops `value` on a thread of its own: the caller goes on at once. The process may exit
/// before the thread is done, which loses nothing (it only frees memory).
pub fn drop<T: Send + 'static>(value: T) {
    let spawned = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || std::mem::drop(value));
    // No thread to be had: the value came back with the error and is freed here.
    std::mem::drop(spawned);
}
