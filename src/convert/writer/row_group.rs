//! A row group in progress, shared by the workers: each encodes the columns no other worker is encoding.

use super::columns::trim_empty;
use super::columns::Shape;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use arrow::array::RecordBatch;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowColumnWriter};

/// A folder's row group in progress, shared by every worker.
///
/// A worker hands a decoded batch to the row group ([`Folder::write`]) and then encodes
/// whatever columns no other worker is encoding: each top-level field has its own column
/// writers behind its own lock, and takes the batches in the order they came. A type's rows
/// thus go to one row group at a time however many workers decode them, and encoding a wide
/// table spreads over every core.
pub(super) struct RowGroup {
    /// The columns it holds; its batches are of `shape.schema`.
    pub(super) shape: Arc<Shape>,
    pub(super) queue: Mutex<Queue>,
    pub(super) fields: Vec<Mutex<FieldWriters>>,
    /// What the column writers hold, as last measured by each field.
    pub(super) bytes: AtomicUsize,
}

/// Batches of a row group not yet taken by every field.
pub(super) struct Queue {
    /// Each batch with the number of fields yet to write it.
    pub(super) batches: VecDeque<(RecordBatch, usize)>,
    /// The sequence number of `batches[0]`.
    pub(super) first: u64,
    pub(super) rows: usize,
}

/// The column writers of one top-level field.
pub(super) struct FieldWriters {
    pub(super) writers: Vec<ArrowColumnWriter>,
    /// The sequence number of the next batch to write.
    pub(super) next: u64,
    pub(super) bytes: usize,
}

/// Batches a row group may hold not yet encoded before the worker handing in one more waits
/// for every field to take them (bounds memory when one field is slow).
pub(super) const MAX_QUEUED: usize = 4;

/// A row group is also cut at this many bytes held by its column writers.
pub(super) const ROW_GROUP_BYTES: usize = 48 << 20;

impl RowGroup {
    pub(super) fn new(shape: Arc<Shape>) -> Result<Self> {
        let mut all = shape.factory.create_column_writers(0)?.into_iter();
        let fields = shape
            .field_leaves
            .iter()
            .map(|&n| {
                Mutex::new(FieldWriters {
                    writers: all.by_ref().take(n).collect(),
                    next: 0,
                    bytes: 0,
                })
            })
            .collect();
        Ok(RowGroup {
            shape,
            queue: Mutex::new(Queue {
                batches: VecDeque::new(),
                first: 0,
                rows: 0,
            }),
            fields,
            bytes: AtomicUsize::new(0),
        })
    }

    /// Writes to field `i` the batches it has not taken yet.
    pub(super) fn drain(&self, i: usize, fw: &mut FieldWriters) -> Result<()> {
        let field = &self.shape.schema.fields()[i];
        loop {
            let todo: Vec<RecordBatch> = {
                let q = self.queue.lock().expect("no writer panicked");
                let from = (fw.next - q.first) as usize;
                q.batches
                    .iter()
                    .skip(from)
                    .map(|(b, _)| b.clone())
                    .collect()
            };
            if todo.is_empty() {
                return Ok(());
            }
            for batch in &todo {
                let mut writers = fw.writers.iter_mut();
                for leaf in compute_leaves(field, batch.column(i))? {
                    writers.next().expect("a writer per leaf").write(&leaf)?;
                }
            }
            let bytes = fw
                .writers
                .iter()
                .map(|w| w.get_estimated_total_bytes())
                .sum();
            if bytes >= fw.bytes {
                self.bytes.fetch_add(bytes - fw.bytes, Ordering::Relaxed);
            } else {
                self.bytes.fetch_sub(fw.bytes - bytes, Ordering::Relaxed);
            }
            fw.bytes = bytes;
            let mut q = self.queue.lock().expect("no writer panicked");
            let from = (fw.next - q.first) as usize;
            for (_, left) in q.batches.range_mut(from..from + todo.len()) {
                *left -= 1;
            }
            fw.next += todo.len() as u64;
            while q.batches.front().is_some_and(|(_, left)| *left == 0) {
                q.batches.pop_front();
                q.first += 1;
            }
        }
    }

    /// Encodes what it can of the waiting batches: every field no other worker holds, from
    /// `start` on (workers start at different fields). With `wait`, every field, waiting for
    /// the workers that hold one.
    pub(super) fn help(&self, start: usize, wait: bool) -> Result<()> {
        let n = self.fields.len();
        for k in 0..n {
            let i = (start + k) % n;
            let mut fw = match self.fields[i].try_lock() {
                Ok(fw) => fw,
                Err(std::sync::TryLockError::WouldBlock) if wait => {
                    self.fields[i].lock().expect("no writer panicked")
                }
                Err(std::sync::TryLockError::WouldBlock) => continue,
                Err(std::sync::TryLockError::Poisoned(_)) => panic!("a writer panicked"),
            };
            self.drain(i, &mut fw)?;
        }
        Ok(())
    }

    pub(super) fn queued(&self) -> usize {
        self.queue.lock().expect("no writer panicked").batches.len()
    }

    pub(super) fn rows(&self) -> usize {
        self.queue.lock().expect("no writer panicked").rows
    }

    /// Encodes every waiting batch and closes the column writers: the row group's chunks, in
    /// the order of the shape's leaves.
    pub(super) fn close(&self) -> Result<Vec<ArrowColumnChunk>> {
        let mut chunks = Vec::new();
        for (i, f) in self.fields.iter().enumerate() {
            let mut fw = f.lock().expect("no writer panicked");
            self.drain(i, &mut fw)?;
            for w in std::mem::take(&mut fw.writers) {
                let mut chunk = w.close()?;
                trim_empty(&mut chunk)?;
                chunks.push(chunk);
            }
        }
        Ok(chunks)
    }
}
