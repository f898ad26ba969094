//! Deletion vectors: the rows of a table file that a later version no longer holds, kept beside
//! the file instead of rewriting it (Delta's `deletionVectors` table feature).
//!
//! A merge ([`crate::convert::merge`]) that replaces or deletes a few ids of a file marks their
//! rows here rather than writing the file again without them: a change set of 1% of the
//! resources then writes about 1% of the table's bytes. A table gets the feature with its first
//! merge; tables that were never merged keep Delta's first protocol, which every reader reads.
//!
//! The bitmaps are written in Delta's on-disk format by the Delta kernel's writer: one file
//! `deletion_vector_<uuid>.bin` per table and commit in the table's folder, named in the log by
//! its UUID (storage type `u`). Every reader of a table (DataFusion's scan, `to-ndjson`, the
//! merge itself) skips the rows a file's vector names; [`selection`] gives the rows to read.
//!
//! ```
//! use fhir2parquet::dataset::deletion::selection;
//! use roaring::RoaringTreemap;
//!
//! // Rows 1 and 2 of a five-row file are deleted: read row 0, skip two, read two.
//! let deleted: RoaringTreemap = [1u64, 2].into_iter().collect();
//! let s = selection(&deleted, 5);
//! assert_eq!(s.row_count(), 3);
//! assert_eq!(s.skipped_row_count(), 2);
//! ```

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use delta_kernel::actions::deletion_vector_writer::{
    KernelDeletionVector, StreamingDeletionVectorWriter,
};
use deltalake_core::kernel::{DeletionVectorDescriptor, StorageType};
use parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::file::reader::ChunkReader;
use roaring::RoaringTreemap;

use crate::store::Location;

/// The magic number before a bitmap in Delta's format (`RoaringBitmapArray`, portable).
const PORTABLE_MAGIC: u32 = 1681511377;

/// The name of a deletion vector file, from its UUID.
fn file_name(uuid: &uuid::Uuid) -> String {
    format!("deletion_vector_{uuid}.bin")
}

/// Where a descriptor's bitmap is: a file relative to the table's folder (its prefix folders
/// and the UUID encoded in the descriptor), or `None` for a bitmap inline in the log. `upload`
/// copies the file with the table's files.
pub fn file_of(dv: &DeletionVectorDescriptor) -> Result<Option<String>> {
    match dv.storage_type {
        StorageType::Inline => Ok(None),
        StorageType::UuidRelativePath => {
            let encoded = &dv.path_or_inline_dv;
            if encoded.len() < 20 {
                bail!("deletion vector path {encoded:?} is too short for a UUID");
            }
            let (prefix, id) = encoded.split_at(encoded.len() - 20);
            let bytes = z85::decode(id).context("deletion vector UUID is not Z85")?;
            let uuid = uuid::Uuid::from_slice(&bytes).context("deletion vector UUID")?;
            Ok(Some(match prefix.is_empty() {
                true => file_name(&uuid),
                false => format!("{prefix}/{}", file_name(&uuid)),
            }))
        }
        StorageType::AbsolutePath => bail!(
            "a deletion vector at an absolute path ({}) is not read by fhir2parquet",
            dv.path_or_inline_dv
        ),
    }
}

/// The rows each of several deletion vectors of a table names (positions in their files, from
/// 0), each vector file read once.
pub fn read_all(
    dataset: &Location,
    table: &str,
    dvs: &[&DeletionVectorDescriptor],
) -> Result<Vec<RoaringTreemap>> {
    let what = || {
        format!(
            "cannot read a deletion vector of {table} in {}",
            dataset.display()
        )
    };
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(dvs.len());
    for dv in dvs {
        let Some(rel) = file_of(dv).with_context(what)? else {
            let bytes = z85::decode(&dv.path_or_inline_dv)
                .map_err(|_| anyhow::anyhow!("an inline deletion vector is not Z85"))
                .with_context(what)?;
            out.push(bitmap(&bytes).with_context(what)?);
            continue;
        };
        if !files.contains_key(&rel) {
            let bytes = dataset
                .read_file(&format!("{table}/{rel}"))
                .with_context(what)?;
            files.insert(rel.clone(), bytes);
        }
        out.push(from_file(&files[&rel], dv).with_context(what)?);
    }
    Ok(out)
}

/// The bitmap at a descriptor's offset in a deletion vector file: a size (big-endian), the
/// magic number and bitmap, a CRC-32 of both (big-endian).
fn from_file(bytes: &[u8], dv: &DeletionVectorDescriptor) -> Result<RoaringTreemap> {
    if bytes.first() != Some(&1) {
        bail!("not a deletion vector file of format version 1");
    }
    let start = dv.offset.unwrap_or(1) as usize;
    let size = dv.size_in_bytes as usize;
    let Some(data) = bytes.get(start + 4..start + 4 + size) else {
        bail!("the file ends before the deletion vector at byte {start}");
    };
    let stated = u32::from_be_bytes(bytes[start..start + 4].try_into().expect("4 bytes"));
    if stated as usize != size {
        bail!("the file gives {stated} bytes where the log gives {size}");
    }
    let crc = bytes
        .get(start + 4 + size..start + 8 + size)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
    if crc != Some(crc32fast::hash(data)) {
        bail!("its checksum does not match (a damaged file)");
    }
    bitmap(data)
}

/// A bitmap in Delta's format: the magic number (little-endian), then the 64-bit roaring
/// bitmap's portable serialisation.
fn bitmap(data: &[u8]) -> Result<RoaringTreemap> {
    if data.len() < 4
        || u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) != PORTABLE_MAGIC
    {
        bail!("not a bitmap in Delta's portable format");
    }
    RoaringTreemap::deserialize_from(&data[4..]).context("a damaged bitmap")
}

/// Writes the bitmaps of one commit to a new file in the table's folder; returns their
/// descriptors, in the order given. No reader sees the file before the commit that names it.
pub fn write(
    dataset: &Location,
    table: &str,
    bitmaps: &[RoaringTreemap],
) -> Result<Vec<DeletionVectorDescriptor>> {
    let uuid = uuid::Uuid::new_v4();
    let mut buf = Vec::new();
    let mut writer = StreamingDeletionVectorWriter::new(&mut buf);
    let mut written = Vec::with_capacity(bitmaps.len());
    for b in bitmaps {
        let mut dv = KernelDeletionVector::new();
        dv.add_deleted_row_indexes(b.iter());
        written.push(writer.write_deletion_vector(dv)?);
    }
    writer.finalize()?;
    let rel = format!("{table}/{}", file_name(&uuid));
    dataset
        .write_file(&rel, buf)
        .with_context(|| format!("cannot write {rel} in {}", dataset.display()))?;
    let encoded = z85::encode(uuid.as_bytes());
    Ok(written
        .into_iter()
        .map(|w| DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: encoded.clone(),
            offset: Some(w.offset),
            size_in_bytes: w.size_in_bytes,
            cardinality: w.cardinality,
        })
        .collect())
}

/// A reader of the rows of a Parquet file a table version holds: `selection` is the file's
/// [`super::delta::SnapshotFile::selection`] (every row where it has none).
pub fn reader<R: ChunkReader + 'static>(
    file: R,
    selection: Option<RowSelection>,
) -> parquet::errors::Result<ParquetRecordBatchReader> {
    let b = ParquetRecordBatchReaderBuilder::try_new(file)?;
    match selection {
        Some(s) => b.with_row_selection(s),
        None => b,
    }
    .build()
}

/// The rows of a file of `rows` rows to read: every row but the deleted ones.
pub fn selection(deleted: &RoaringTreemap, rows: u64) -> RowSelection {
    let mut selectors = Vec::new();
    let mut next = 0u64;
    for d in deleted.iter().take_while(|&d| d < rows) {
        if d > next {
            selectors.push(RowSelector::select((d - next) as usize));
        }
        selectors.push(RowSelector::skip(1));
        next = d + 1;
    }
    if rows > next {
        selectors.push(RowSelector::select((rows - next) as usize));
    }
    // Adjacent skips are merged.
    RowSelection::from(selectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_vector_reads_back_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("Patient")).unwrap();
        let dataset = Location::Local(dir.path().to_path_buf());
        let a: RoaringTreemap = [0u64, 7, 8, 100_000].into_iter().collect();
        let b: RoaringTreemap = (0u64..5000).step_by(3).collect();
        let dvs = write(&dataset, "Patient", &[a.clone(), b.clone()]).unwrap();
        assert_eq!(dvs.len(), 2);
        assert_eq!(dvs[0].cardinality, 4);
        let back = read_all(&dataset, "Patient", &[&dvs[0], &dvs[1]]).unwrap();
        assert_eq!(back, vec![a, b]);
        let file = file_of(&dvs[0]).unwrap().unwrap();
        assert!(dir.path().join("Patient").join(&file).is_file(), "{file}");
        // A damaged byte is an error, not other rows.
        let p = dir.path().join("Patient").join(&file);
        let mut bytes = std::fs::read(&p).unwrap();
        let at = dvs[1].offset.unwrap() as usize + 10;
        bytes[at] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
        let e = read_all(&dataset, "Patient", &[&dvs[1]]).unwrap_err();
        assert!(format!("{e:#}").contains("checksum"), "{e:#}");
    }

    #[test]
    fn selections_skip_exactly_the_deleted_rows() {
        let deleted: RoaringTreemap = [0u64, 1, 4, 9].into_iter().collect();
        let s = selection(&deleted, 10);
        assert_eq!(s.row_count(), 6);
        let kept: Vec<usize> = s
            .iter()
            .scan(0usize, |at, sel| {
                let range = *at..*at + sel.row_count;
                *at += sel.row_count;
                Some((sel.skip, range))
            })
            .filter(|(skip, _)| !skip)
            .flat_map(|(_, r)| r)
            .collect();
        assert_eq!(kept, vec![2, 3, 5, 6, 7, 8]);
        assert_eq!(selection(&RoaringTreemap::new(), 3).row_count(), 3);
    }
}
