//! Resource tables as Delta Lake tables: `OUT/<Type>/_delta_log/` is the one truth of which
//! Parquet files a table holds, locally and on object stores alike.
//!
//! A run writes its Parquet files beside the table's (no reader sees a file the log does not
//! name), then [`commit`]s them: an overwrite commit (its files added, every file of the
//! current version removed) or an append commit. A run that dies before its commit leaves
//! files no version names, which [`vacuum`] removes. Readers take the files of the current
//! version, or of an earlier one ([`AsOf`]), from [`snapshot`].
//!
//! The table's schema in the log is the full typed schema of the resource type (plus its
//! partition columns, strings); a data file holds the columns that have values, and every
//! Delta reader gives NULL for a column a file lacks. Commits go through delta-rs
//! (`deltalake-core`): optimistic concurrency, a commit file put only if absent (a conditional
//! put on S3, GCS and Azure, a hard link locally), so writers on many machines can commit to
//! one table.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Once, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::CommitBuilder;
use deltalake_core::kernel::{
    Action, Add, CommitInfo, DeletionVectorDescriptor, Protocol, StructType,
};
use deltalake_core::logstore::{
    default_logstore, logstore_factories, LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig,
};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::TryStreamExt;
use url::Url;

use crate::schema::FhirVersion;
use crate::store::{block_on, Location};

/// Versions between two checkpoints (Delta's default `delta.checkpointInterval`).
const CHECKPOINT_INTERVAL: u64 = 100;

/// The folder of a table's log.
pub const LOG_DIR: &str = "_delta_log";
/// The partition value of rows without one (Hive's spelling, in folder names).
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// A file a run wrote into a table's folder, to be committed.
#[derive(Debug, Clone)]
pub struct NewFile {
    /// Relative to the table's folder, `/`-separated (`effective_year=2019/part-....parquet`).
    pub path: String,
    pub bytes: u64,
    /// Its rows, where known (recorded as the file's `numRecords`).
    pub rows: Option<u64>,
    /// The rows of the file that the table does not hold (an upload of a merged table).
    pub deletion_vector: Option<DeletionVectorDescriptor>,
}

/// How a commit treats the files of the current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// They stay beside the new ones.
    Append,
    /// Those not among the new ones are removed in the same commit: the new version holds
    /// exactly the given files.
    Overwrite,
    /// Those named in the table's [`TableCommit::remove`] are removed, and those of its
    /// [`TableCommit::deletions`] get new deletion vectors (a merge); the others stay.
    Merge,
    /// Those named in the table's [`TableCommit::remove`] are removed: the new files hold their
    /// rows but the deleted ones (`vacuum --purge`, see [`super::purge`]).
    Purge,
}

/// Which version of a table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Version(u64),
    /// The last version committed at or before this time.
    Time(DateTime<Utc>),
}

impl AsOf {
    /// `3` (a version) or an RFC 3339 time or date (`2026-12-01T10:00:00Z`, `2026-12-01`).
    pub fn parse(s: &str) -> Result<AsOf> {
        let s = s.trim();
        if let Ok(v) = s.parse::<u64>() {
            return Ok(AsOf::Version(v));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(AsOf::Time(t.with_timezone(&Utc)));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            let t = d.and_hms_opt(23, 59, 59).expect("a valid time");
            return Ok(AsOf::Time(t.and_utc()));
        }
        bail!(
            "--as-of {s:?}: give a table version (0, 1, ...; `fhir2parquet history` lists them) \
             or a time such as 2026-12-01T10:00:00Z or a date such as 2026-12-01"
        )
    }
}

/// What a reader needs of one version of a table.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub partition_columns: Vec<String>,
    /// The table's properties (`fhir2parquet.fhirVersion`, ...).
    pub properties: BTreeMap<String, String>,
    /// The table's files: path relative to its folder, size, partition values (in the order
    /// of `partition_columns`).
    pub files: Vec<SnapshotFile>,
}

#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub path: String,
    pub bytes: u64,
    pub rows: Option<u64>,
    pub partition_values: Vec<Option<String>>,
    /// The rows of the file this version no longer holds (see [`super::deletion`]): where
    /// its vector is, and the rows (positions in the file).
    pub deletion_vector: Option<DeletionVectorDescriptor>,
    pub deleted: Option<Arc<roaring::RoaringTreemap>>,
}

impl SnapshotFile {
    /// The rows of the file the table holds (all of them without a deletion vector), where
    /// its row count is recorded.
    pub fn selection(&self) -> Option<parquet::arrow::arrow_reader::RowSelection> {
        let deleted = self.deleted.as_ref()?;
        Some(super::deletion::selection(deleted, self.rows?))
    }
}

/// One commit of a table, for `history`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Commit {
    pub version: u64,
    /// Milliseconds since 1970.
    pub timestamp: Option<i64>,
    pub operation: String,
    pub mode: Option<String>,
    pub rows_added: Option<u64>,
    pub rows_removed: Option<u64>,
    pub files_added: Option<u64>,
    pub files_removed: Option<u64>,
}

/// The stores' schemes get delta-rs's default log store (a commit is a put-if-absent): delta-rs
/// knows only local files and memory by itself, the rest comes from crates we do not use.
struct PutIfAbsent;

impl LogStoreFactory for PutIfAbsent {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake_core::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

fn register_schemes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let factories = logstore_factories();
        for scheme in ["s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "adl"] {
            let url = Url::parse(&format!("{scheme}://")).expect("a valid scheme");
            factories.insert(url, Arc::new(PutIfAbsent));
        }
    });
}

/// The URL of a table's folder (with a trailing `/`).
pub fn table_url(dataset: &Location, name: &str) -> Result<Url> {
    match dataset {
        Location::Local(dir) => {
            let dir = std::path::absolute(dir.join(name))
                .with_context(|| format!("cannot resolve {}", dir.display()))?;
            Url::from_directory_path(&dir)
                .map_err(|()| anyhow!("{} cannot be a table's folder", dir.display()))
        }
        Location::Remote(remote) => Ok(Url::parse(&remote.url(&format!("{name}/")))?),
    }
}

fn builder(dataset: &Location, name: &str) -> Result<DeltaTableBuilder> {
    register_schemes();
    let url = table_url(dataset, name)?;
    let b = DeltaTableBuilder::from_url(url.clone())?;
    Ok(match dataset {
        Location::Local(_) => b,
        Location::Remote(remote) => {
            let store = crate::store::offset::ListAfter(remote.store.clone());
            b.with_storage_backend(Arc::new(store), url)
        }
    })
}

/// Whether the type's folder holds a Delta table (a log with a commit).
pub fn is_table(dataset: &Location, name: &str) -> Result<bool> {
    match dataset {
        Location::Local(dir) => Ok(local_has_version(&dir.join(name))),
        Location::Remote(remote) => Ok(!remote.list(&format!("{name}/{LOG_DIR}"))?.is_empty()),
    }
}

/// Whether a local table folder's log holds a version: a commit or a checkpoint (whose names
/// start with the version's digits).
pub fn local_has_version(table: &std::path::Path) -> bool {
    std::fs::read_dir(table.join(LOG_DIR)).is_ok_and(|mut entries| {
        entries.any(|e| {
            e.is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(|c: char| c.is_ascii_digit())
            })
        })
    })
}

/// The table at its current version, or `None` where there is no table yet.
async fn open(dataset: &Location, name: &str) -> Result<Option<DeltaTable>> {
    let mut table = builder(dataset, name)?.build()?;
    match table.load().await {
        Ok(()) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(explain(e, dataset, name)),
    }
}

async fn open_as_of(dataset: &Location, name: &str, as_of: Option<AsOf>) -> Result<DeltaTable> {
    let mut table = builder(dataset, name)?.build()?;
    let loaded = match as_of {
        None => table.load().await,
        Some(AsOf::Version(v)) => table.load_version(v).await,
        Some(AsOf::Time(t)) => table.load_with_datetime(t).await,
    };
    loaded.map_err(|e| match (as_of, &e) {
        (Some(AsOf::Version(v)), _) => anyhow!(
            "{name} has no version {v} ({e}): `fhir2parquet history {}` lists its versions",
            dataset.display()
        ),
        (Some(AsOf::Time(t)), _) => anyhow!(
            "{name} has no version at {t} ({e}): `fhir2parquet history {}` lists its versions",
            dataset.display()
        ),
        _ => explain(e, dataset, name),
    })?;
    Ok(table)
}

fn explain(e: DeltaTableError, dataset: &Location, name: &str) -> anyhow::Error {
    anyhow!(
        "cannot read the Delta log of {name} in {}: {}",
        dataset.display(),
        crate::store::redact(&e.to_string())
    )
}

/// The fields of a resource type's table: the typed schema and the partition columns.
fn table_fields(
    version: FhirVersion,
    name: &str,
    partition_columns: &[String],
) -> Result<Vec<arrow::datatypes::FieldRef>> {
    let mut fields: Vec<arrow::datatypes::FieldRef> =
        crate::schema::node::arrow_schema(version, name)
            .with_context(|| format!("{name} is not a resource type of FHIR {version}"))?
            .fields()
            .iter()
            .cloned()
            .collect();
    for p in partition_columns {
        fields.push(Arc::new(arrow::datatypes::Field::new(
            p,
            arrow::datatypes::DataType::Utf8,
            true,
        )));
    }
    Ok(fields)
}

/// The Delta schema of a resource type's table, as the kernel makes it from
/// [`table_fields`].
fn delta_schema(
    version: FhirVersion,
    name: &str,
    partition_columns: &[String],
) -> Result<StructType> {
    let schema = arrow::datatypes::Schema::new(table_fields(version, name, partition_columns)?);
    let kernel: StructType = (&schema)
        .try_into_kernel()
        .map_err(|e| anyhow!("the schema of {name} has no Delta form: {e}"))?;
    Ok(kernel)
}

/// A new table's schema as its metadata holds it (`schemaString`): the JSON of
/// [`delta_schema`], written straight from the fields where [`super::schema_json`] can.
fn schema_string(
    version: FhirVersion,
    name: &str,
    partition_columns: &[String],
) -> std::result::Result<Arc<str>, String> {
    let fields = table_fields(version, name, partition_columns).map_err(|e| format!("{e:#}"))?;
    if let Some(text) = super::schema_json::write(&fields) {
        return Ok(text.into());
    }
    let schema = delta_schema(version, name, partition_columns).map_err(|e| format!("{e:#}"))?;
    let text = serde_json::to_string(&schema)
        .map_err(|e| format!("the schema of {name} has no JSON form: {e}"))?;
    Ok(text.into())
}

/// What a schema string is made for: FHIR version, type, partition columns.
type SchemaKey = (FhirVersion, String, Vec<String>);
/// A schema string, made once by whoever comes first: [`prepare`]'s thread or the commit.
type SchemaCell = Arc<OnceLock<std::result::Result<Arc<str>, String>>>;

/// The schema strings [`prepare`] started, until a table's creation takes its own.
static PREPARED: Mutex<Option<HashMap<SchemaKey, SchemaCell>>> = Mutex::new(None);

/// Starts making the schema of a table a run will create (version 0), on a thread of its
/// own, while the run converts: the typed schema of a wide type is hundreds of kilobytes of
/// JSON, made in milliseconds that would otherwise all fall on the run's last step, its
/// commits. Asked for again (another worker met the type too), it does nothing. Where the
/// table is not created after all, the string stays unused until the process ends.
pub fn prepare(version: FhirVersion, name: &str, partition_columns: &[String]) {
    let key = (version, name.to_string(), partition_columns.to_vec());
    let cell = {
        let mut prepared = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
        match prepared.get_or_insert_with(HashMap::new).entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => return,
            std::collections::hash_map::Entry::Vacant(v) => v.insert(SchemaCell::default()).clone(),
        }
    };
    crate::background::run("delta schema", move || {
        let (version, name, partition_columns) = key;
        cell.get_or_init(|| schema_string(version, &name, &partition_columns));
    });
}

/// The schema string of a table being created: [`prepare`]'s, waiting for it where its thread
/// is still at work, else made here.
fn prepared_schema(
    version: FhirVersion,
    name: &str,
    partition_columns: &[String],
) -> Result<Arc<str>> {
    let key = (version, name.to_string(), partition_columns.to_vec());
    let cell = PREPARED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|p| p.remove(&key))
        .unwrap_or_default();
    cell.get_or_init(|| schema_string(version, name, partition_columns))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The partition values of a file from its folders (`effective_year=2019/part-1.parquet`).
fn partition_values(path: &str) -> HashMap<String, Option<String>> {
    let parts: Vec<&str> = path.split('/').collect();
    parts[..parts.len().saturating_sub(1)]
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            let v = (v != NULL_PARTITION).then(|| v.to_string());
            (k.to_string(), v)
        })
        .collect()
}

fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

fn add_action(f: &NewFile) -> Action {
    Action::Add(Add {
        path: f.path.clone(),
        partition_values: partition_values(&f.path),
        size: f.bytes as i64,
        modification_time: now_millis(),
        data_change: true,
        stats: num_records_stats(f.rows),
        deletion_vector: f.deletion_vector.clone(),
        ..Default::default()
    })
}

/// An add action's `stats`: the file's row count, where known (what readers of a file with a
/// deletion vector need).
fn num_records_stats(rows: Option<u64>) -> Option<String> {
    rows.map(|n| format!("{{\"numRecords\":{n}}}"))
}

/// The protocol of a table that holds deletion vectors: reader 3, writer 7, the feature named
/// for both (beside the features `current` names).
fn protocol_with_deletion_vectors(current: Option<&Protocol>) -> Result<Protocol> {
    let mut v = match current {
        Some(p) => serde_json::to_value(p)?,
        None => serde_json::json!({}),
    };
    for (version, want) in [("minReaderVersion", 3), ("minWriterVersion", 7)] {
        let now = v[version].as_i64().unwrap_or(0);
        v[version] = now.max(want).into();
    }
    for list in ["readerFeatures", "writerFeatures"] {
        let mut names: Vec<String> = v[list]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !names.iter().any(|n| n == "deletionVectors") {
            names.push("deletionVectors".into());
        }
        v[list] = names.into();
    }
    Ok(serde_json::from_value(v)?)
}

/// Whether a table's protocol lets a writer write deletion vectors: it names the feature. The
/// protocol is all Delta asks (`delta.enableDeletionVectors` is Spark's switch for its own
/// DELETE and MERGE, not a reader's or writer's requirement), so a table's first merge records
/// a protocol action only, not its metadata (the full typed schema) again.
fn has_deletion_vectors(protocol: &Protocol) -> bool {
    serde_json::to_value(protocol).is_ok_and(|p| {
        p["writerFeatures"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "deletionVectors"))
    })
}

/// The add and remove actions that give files of the table new deletion vectors: each file
/// removed as it was (with its old vector) and added again, the same file, with the new one.
fn deletion_actions(
    snapshot: &deltalake_core::table::state::DeltaTableState,
    deletions: &[(SnapshotFile, DeletionVectorDescriptor)],
) -> (Vec<Action>, u64) {
    let by_path: HashMap<&str, &DeletionVectorDescriptor> = deletions
        .iter()
        .map(|(f, dv)| (f.path.as_str(), dv))
        .collect();
    let (mut actions, mut rows) = (Vec::new(), 0);
    for f in snapshot.log_data().iter() {
        let Some(dv) = by_path.get(f.path().as_ref()) else {
            continue;
        };
        let old = f.deletion_vector_descriptor().map_or(0, |d| d.cardinality);
        rows += (dv.cardinality - old).max(0) as u64;
        // The file as it was, its old vector with it.
        actions.push(Action::Remove(f.remove_action(true)));
        actions.push(Action::Add(Add {
            path: f.path().into_owned(),
            partition_values: f.partition_values_map(),
            size: f.size(),
            modification_time: f.modification_time(),
            data_change: true,
            stats: num_records_stats(f.num_records().map(|n| n as u64)),
            deletion_vector: Some((*dv).clone()),
            ..Default::default()
        }));
    }
    (actions, rows)
}

/// Commits files of one table: creates the table with them (version 0) where there is none,
/// else adds them in a new version; with [`Mode::Overwrite`] the current version's other files
/// are removed, with [`Mode::Merge`] those of [`TableCommit::remove`]. `properties` become table
/// properties at creation. Returns the version committed, or the current one where an overwrite
/// or a merge changes nothing.
pub fn commit(
    dataset: &Location,
    table: &TableCommit,
    mode: Mode,
    properties: &BTreeMap<String, String>,
) -> Result<u64> {
    block_on(commit_async(dataset, table, mode, properties))
}

/// One table's part of [`commit_all`].
#[derive(Debug, Clone)]
pub struct TableCommit {
    pub name: String,
    pub files: Vec<NewFile>,
    pub partition_columns: Vec<String>,
    /// With [`Mode::Merge`]: the files of the table this commit removes.
    pub remove: Vec<String>,
    /// With [`Mode::Merge`]: files of the table that get a new deletion vector (rows deleted).
    pub deletions: Vec<(SnapshotFile, DeletionVectorDescriptor)>,
    /// The table as the writer read it, where it did (a merge decides from the version it
    /// read): the commit starts from that version instead of reading the log again, and
    /// delta-rs checks what was committed since for conflicts.
    pub base: Option<Base>,
    /// Where the table will live, where it is made elsewhere and then moved there whole (a
    /// new local table made in the run's folder): the location its creation records.
    pub home: Option<Url>,
}

/// [`commit`]s of several tables at once (each table's commit is its own: one may fail while
/// the others succeed). The results in the order given.
pub fn commit_all(
    dataset: &Location,
    tables: &[TableCommit],
    mode: Mode,
    properties: &BTreeMap<String, String>,
) -> Vec<Result<u64>> {
    on_threads(tables, |t| commit(dataset, t, mode, properties))
}

/// `f` of each item, on a thread per core: a table's log is parsed and written on the thread
/// that drives its future, and a wide table's schema is megabytes of JSON.
pub(crate) fn on_threads<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<R>>> =
        std::sync::Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().expect("no commit panicked")[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("no commit panicked")
        .into_iter()
        .map(|r| r.expect("every item was done"))
        .collect()
}

async fn commit_async(
    dataset: &Location,
    table: &TableCommit,
    mode: Mode,
    properties: &BTreeMap<String, String>,
) -> Result<u64> {
    let (name, files) = (table.name.as_str(), &table.files);
    let (partition_columns, remove) = (table.partition_columns.as_slice(), &table.remove);
    let deletions = &table.deletions;
    let adds: Vec<Action> = files.iter().map(add_action).collect();
    let added_rows: u64 = files.iter().filter_map(|f| f.rows).sum();
    let what = || format!("cannot commit {name} to {}", dataset.display());
    let opened = match &table.base {
        Some(base) => Some(base.0.clone()),
        None => open(dataset, name).await?,
    };
    let Some(table) = opened else {
        let created = create(dataset, table, adds, added_rows, properties).await;
        return match created {
            Ok(v) => Ok(v),
            // Another writer created it first: commit into theirs.
            Err(_) if open(dataset, name).await?.is_some() => {
                Box::pin(commit_async(dataset, table, mode, properties)).await
            }
            Err(e) => Err(anyhow!(
                "{}: {}",
                what(),
                crate::store::redact(&e.to_string())
            )),
        };
    };
    let snapshot = table.snapshot().map_err(|e| explain(e, dataset, name))?;
    let existing = snapshot.metadata().partition_columns().to_vec();
    if existing != partition_columns && !(files.is_empty() && partition_columns.is_empty()) {
        bail!(
            "{name} in {} is partitioned by [{}], this run by [{}]: convert with the same \
             --partition-by, or without --append into a new folder",
            dataset.display(),
            existing.join(", "),
            partition_columns.join(", ")
        );
    }
    let mut actions = adds;
    let (mut removed_files, mut removed_rows) = (0, 0);
    if mode == Mode::Overwrite {
        let wanted: HashMap<&str, Option<&DeletionVectorDescriptor>> = files
            .iter()
            .map(|f| (f.path.as_str(), f.deletion_vector.as_ref()))
            .collect();
        let current: HashMap<String, Option<DeletionVectorDescriptor>> = snapshot
            .log_data()
            .iter()
            .map(|f| (f.path().into_owned(), f.deletion_vector_descriptor()))
            .collect();
        // Files already in the table as they are stay (an upload of an unchanged table); a file
        // there with other deleted rows is removed and added again.
        actions.retain(|a| {
            !matches!(a, Action::Add(add)
                if current.get(&add.path).is_some_and(|dv| *dv == add.deletion_vector))
        });
        for f in snapshot.log_data().iter() {
            let same = wanted
                .get(f.path().as_ref())
                .is_some_and(|dv| dv.cloned() == f.deletion_vector_descriptor());
            if !same {
                removed_files += 1;
                removed_rows += f.num_records().unwrap_or(0) as u64;
                actions.push(Action::Remove(f.remove_action(true)));
            }
        }
        if actions.is_empty() {
            return Ok(snapshot.version());
        }
    }
    if matches!(mode, Mode::Merge | Mode::Purge) {
        let gone: std::collections::HashSet<&str> = remove.iter().map(String::as_str).collect();
        for f in snapshot.log_data().iter() {
            if gone.contains(f.path().as_ref()) {
                removed_files += 1;
                removed_rows += f.num_records().unwrap_or(0) as u64;
                actions.push(Action::Remove(f.remove_action(true)));
            }
        }
        let (changed, deleted_rows) = deletion_actions(snapshot, deletions);
        removed_rows += deleted_rows;
        actions.extend(changed);
        if actions.is_empty() {
            return Ok(snapshot.version());
        }
    }
    // Deletion vectors need a protocol that names them.
    let vectors = !deletions.is_empty() || files.iter().any(|f| f.deletion_vector.is_some());
    if vectors && !has_deletion_vectors(snapshot.protocol()) {
        actions.push(Action::Protocol(protocol_with_deletion_vectors(Some(
            snapshot.protocol(),
        ))?));
    }
    let operation = match mode {
        Mode::Merge => DeltaOperation::Merge {
            predicate: None,
            merge_predicate: Some("same id; the latest meta.lastUpdated wins".into()),
            matched_predicates: Vec::new(),
            not_matched_predicates: Vec::new(),
            not_matched_by_source_predicates: Vec::new(),
        },
        Mode::Purge => DeltaOperation::Optimize {
            predicate: None,
            target_size: 0,
        },
        Mode::Append | Mode::Overwrite => DeltaOperation::Write {
            mode: match mode {
                Mode::Overwrite => SaveMode::Overwrite,
                _ => SaveMode::Append,
            },
            partition_by: (!partition_columns.is_empty()).then(|| partition_columns.to_vec()),
            predicate: None,
        },
    };
    let added: Vec<&Add> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Add(add) => Some(add),
            _ => None,
        })
        .collect();
    let added_rows: u64 = files
        .iter()
        .filter(|f| added.iter().any(|a| a.path == f.path))
        .filter_map(|f| f.rows)
        .sum();
    let metadata = metrics(added.len(), added_rows, removed_files, removed_rows);
    let fail = |e: DeltaTableError| anyhow!("{}: {}", what(), crate::store::redact(&e.to_string()));
    let prepared = CommitBuilder::default()
        .with_actions(actions)
        .with_app_metadata(HashMap::from([metadata]))
        .build(Some(snapshot), table.log_store(), operation)
        .into_prepared_commit_future()
        .await
        .map_err(fail)?;
    // Committed once the version's file is written. What follows (the new snapshot, and every
    // CHECKPOINT_INTERVAL versions a checkpoint) is worth its cost only for the checkpoint.
    let post = prepared.await.map_err(fail)?;
    let version = post.version;
    if version % CHECKPOINT_INTERVAL == 0 {
        post.await.map_err(fail)?;
    }
    Ok(version)
}

/// Version 0 of a new table: its protocol, its metadata (schema, partition columns,
/// properties) and its first files, in one commit put only if absent.
async fn create(
    dataset: &Location,
    table: &TableCommit,
    adds: Vec<Action>,
    added_rows: u64,
    properties: &BTreeMap<String, String>,
) -> Result<u64> {
    let (name, partition_columns) = (table.name.as_str(), table.partition_columns.as_slice());
    let (home, added_files) = (table.home.as_ref(), table.files.len());
    // The table's version is the one its properties name (the run's).
    let version = properties
        .get(super::FHIR_VERSION_PROPERTY)
        .and_then(|r| FhirVersion::from_release(r))
        .unwrap_or_default();
    let schema = prepared_schema(version, name, partition_columns)?;
    // Delta's first protocol (no table features needed), unless the files come with deletion
    // vectors (an upload of a merged table).
    let vectors = adds
        .iter()
        .any(|a| matches!(a, Action::Add(add) if add.deletion_vector.is_some()));
    let protocol: Protocol = match vectors {
        false => serde_json::from_value(
            serde_json::json!({"minReaderVersion": 1, "minWriterVersion": 2}),
        )?,
        true => protocol_with_deletion_vectors(None)?,
    };
    let metadata = table_metadata(&schema, name, partition_columns, properties)?;
    let made = builder(dataset, name)?.build()?;
    let location = home.unwrap_or(made.table_url()).clone();
    let info = create_info(&location, &protocol, partition_columns, properties)?;
    let operation = DeltaOperation::Create {
        mode: SaveMode::ErrorIfExists,
        metadata: metadata.clone(),
        location,
        protocol: protocol.clone(),
    };
    let mut actions = vec![info, Action::Protocol(protocol), Action::Metadata(metadata)];
    actions.extend(adds);
    let prepared = CommitBuilder::default()
        .with_actions(actions)
        .with_app_metadata(HashMap::from([
            metrics(added_files, added_rows, 0, 0),
            (
                "clientVersion".into(),
                format!("delta-rs.{}", deltalake_core::crate_version()).into(),
            ),
        ]))
        .build(None, made.log_store(), operation)
        .into_prepared_commit_future()
        .await?;
    // Written: the new snapshot that follows is not needed here.
    let post = prepared.await?;
    Ok(post.version)
}

/// The `commitInfo` of a table's creation. delta-rs's own would repeat the whole metadata
/// action, typed schema and all, among its `operationParameters`: half of version 0's bytes,
/// which every reader of the log reads. This one names the partition columns and properties
/// instead, as Spark's does.
fn create_info(
    location: &Url,
    protocol: &Protocol,
    partition_columns: &[String],
    properties: &BTreeMap<String, String>,
) -> Result<Action> {
    let parameters = HashMap::from([
        ("mode".to_string(), "ErrorIfExists".into()),
        ("location".to_string(), location.as_str().into()),
        (
            "protocol".to_string(),
            serde_json::to_string(protocol)?.into(),
        ),
        (
            "partitionBy".to_string(),
            serde_json::to_string(partition_columns)?.into(),
        ),
        (
            "properties".to_string(),
            serde_json::to_string(properties)?.into(),
        ),
    ]);
    Ok(Action::CommitInfo(CommitInfo {
        timestamp: Some(now_millis()),
        operation: Some("CREATE TABLE".into()),
        operation_parameters: Some(parameters),
        engine_info: Some(format!("delta-rs:{}", deltalake_core::crate_version())),
        ..Default::default()
    }))
}

/// A new table's metadata action: its schema, name, partition columns and properties. Made
/// in one step: delta-rs's `new_metadata(..).with_name(..)` parses the schema back and writes
/// it again to set the name, and the full typed schema of a wide type is large.
fn table_metadata(
    schema: &str,
    name: &str,
    partition_columns: &[String],
    properties: &BTreeMap<String, String>,
) -> Result<deltalake_core::kernel::Metadata> {
    let value = serde_json::json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": name,
        "description": None::<String>,
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema,
        "partitionColumns": partition_columns,
        "configuration": properties,
        "createdTime": chrono::Utc::now().timestamp_millis(),
    });
    Ok(serde_json::from_value(value)?)
}

/// A commit's `operationMetrics`, as Spark writes them (numbers as strings).
fn metrics(
    added_files: usize,
    added_rows: u64,
    removed_files: usize,
    removed_rows: u64,
) -> (String, serde_json::Value) {
    let metrics = serde_json::json!({
        "numAddedFiles": added_files.to_string(),
        "numOutputRows": added_rows.to_string(),
        "numRemovedFiles": removed_files.to_string(),
        "numRemovedRows": removed_rows.to_string(),
    });
    ("operationMetrics".into(), metrics)
}

/// The files of a table at its current version or `as_of`.
pub fn snapshot(dataset: &Location, name: &str, as_of: Option<AsOf>) -> Result<Snapshot> {
    block_on(snapshot_async(dataset, name, as_of))
}

/// [`snapshot`]s of several tables, read at once.
pub fn snapshots(
    dataset: &Location,
    names: &[String],
    as_of: Option<AsOf>,
) -> Vec<Result<Snapshot>> {
    on_threads(names, |n| block_on(snapshot_async(dataset, n, as_of)))
}

/// A table as a reader loaded it: a later commit can start from it instead of reading the log
/// again (see [`TableCommit::base`]).
#[derive(Clone, Debug)]
pub struct Base(DeltaTable);

/// The current version's [`snapshot`] of a table, and the table as loaded for it.
pub fn snapshot_and_base(dataset: &Location, name: &str) -> Result<(Snapshot, Base)> {
    block_on(async {
        let table = open_as_of(dataset, name, None).await?;
        let snap = snapshot_of(dataset, name, &table).await?;
        Ok((snap, Base(table)))
    })
}

async fn snapshot_async(dataset: &Location, name: &str, as_of: Option<AsOf>) -> Result<Snapshot> {
    let table = open_as_of(dataset, name, as_of).await?;
    snapshot_of(dataset, name, &table).await
}

async fn snapshot_of(dataset: &Location, name: &str, table: &DeltaTable) -> Result<Snapshot> {
    {
        let state = table.snapshot().map_err(|e| explain(e, dataset, name))?;
        let partition_columns = state.metadata().partition_columns().to_vec();
        let mut files: Vec<SnapshotFile> = state
            .log_data()
            .iter()
            .map(|f| {
                let values = f.partition_values_map();
                SnapshotFile {
                    path: f.path().into_owned(),
                    bytes: f.size() as u64,
                    rows: f.num_records().map(|n| n as u64),
                    partition_values: partition_columns
                        .iter()
                        .map(|c| values.get(c).cloned().flatten())
                        .collect(),
                    deletion_vector: f.deletion_vector_descriptor(),
                    deleted: None,
                }
            })
            .collect();
        let (with, dvs): (Vec<usize>, Vec<&DeletionVectorDescriptor>) = files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.deletion_vector.as_ref().map(|dv| (i, dv)))
            .unzip();
        let read = super::deletion::read_all(dataset, name, &dvs)?;
        for (i, rows) in with.into_iter().zip(read) {
            if files[i].rows.is_none() {
                bail!(
                    "{name}/{} in {} has a deletion vector but its log entry records no row \
                     count (numRecords), which fhir2parquet needs to read it",
                    files[i].path,
                    dataset.display()
                );
            }
            files[i].deleted = Some(Arc::new(rows));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let properties = state
            .metadata()
            .configuration()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Snapshot {
            version: state.version(),
            partition_columns,
            properties,
            files,
        })
    }
}

/// The commits of a table, newest first.
pub fn history(dataset: &Location, name: &str) -> Result<Vec<Commit>> {
    block_on(async {
        let table = open_as_of(dataset, name, None).await?;
        let latest = table.version().unwrap_or(0);
        let infos: Vec<_> = table
            .history(None)
            .try_collect()
            .await
            .map_err(|e| explain(e, dataset, name))?;
        // Newest first; versions count down from the latest.
        Ok(infos
            .into_iter()
            .enumerate()
            .map(|(i, info)| {
                let params = info.operation_parameters.unwrap_or_default();
                let metric = |k: &str| {
                    info.info.get("operationMetrics").and_then(|m| {
                        m.get(k).and_then(|v| {
                            v.as_u64()
                                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        })
                    })
                };
                Commit {
                    version: latest.saturating_sub(i as u64),
                    timestamp: info.timestamp,
                    operation: info.operation.unwrap_or_default(),
                    mode: params
                        .get("mode")
                        .and_then(|m| m.as_str())
                        .map(str::to_string),
                    rows_added: metric("numOutputRows"),
                    rows_removed: metric("numRemovedRows"),
                    files_added: metric("numAddedFiles"),
                    files_removed: metric("numRemovedFiles"),
                }
            })
            .collect())
    })
}

/// Removes the files of a table that no version within `retain_hours` needs (and files of
/// runs that died before their commit). Returns the files removed (relative paths).
pub fn vacuum(
    dataset: &Location,
    name: &str,
    retain_hours: u64,
    dry_run: bool,
) -> Result<Vec<String>> {
    let fail = |e: &dyn std::fmt::Display| {
        anyhow!(
            "cannot vacuum {name} in {}: {}",
            dataset.display(),
            crate::store::redact(&e.to_string())
        )
    };
    block_on(async {
        let table = open_as_of(dataset, name, None).await?;
        let store = table.log_store().object_store(None);
        // delta-rs plans (which files no retained version needs); the files are then removed
        // through the table's own store. Its VACUUM START/END commits, optional in the Delta
        // protocol, are left out: on Azure (azurite) their commit failed ("Invalid table
        // version"), and a vacuum changes no version's content.
        let (_, plan) = table
            .vacuum()
            .with_retention_period(chrono::Duration::hours(retain_hours as i64))
            .with_enforce_retention_duration(false)
            // Full: files no version names (of runs killed before their commit) too, not only
            // those removed by a commit.
            .with_mode(deltalake_core::operations::vacuum::VacuumMode::Full)
            .with_dry_run(true)
            .await
            .map_err(|e| fail(&e))?;
        // The plan names the files of removed entries whether or not an earlier vacuum took
        // them: only those still there count.
        let mut removed = Vec::with_capacity(plan.files_deleted.len());
        for f in plan.files_deleted {
            use object_store::ObjectStoreExt;
            let path = object_store::path::Path::parse(&f).map_err(|e| fail(&e))?;
            let there = match dry_run {
                true => store.head(&path).await.map(|_| ()),
                false => store.delete(&path).await,
            };
            match there {
                Ok(()) => removed.push(f),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(fail(&e)),
            }
        }
        Ok(removed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_from_paths() {
        let v = partition_values("effective_year=2019/part-1.parquet");
        assert_eq!(v.get("effective_year"), Some(&Some("2019".to_string())));
        let v = partition_values(&format!("effective_year={NULL_PARTITION}/part-1.parquet"));
        assert_eq!(v.get("effective_year"), Some(&None));
        assert!(partition_values("part-1.parquet").is_empty());
    }

    #[test]
    fn as_of_forms() {
        assert_eq!(AsOf::parse("3").unwrap(), AsOf::Version(3));
        assert!(matches!(AsOf::parse("2026-12-01").unwrap(), AsOf::Time(_)));
        assert!(matches!(
            AsOf::parse("2026-12-01T10:00:00Z").unwrap(),
            AsOf::Time(_)
        ));
        let e = AsOf::parse("yesterday").unwrap_err().to_string();
        assert!(e.contains("history"), "{e}");
        assert!(AsOf::parse("-1").is_err());
    }

    #[test]
    fn every_resource_type_has_a_delta_schema_written_as_the_kernel_writes_it() {
        let parts = ["effective_year".to_string()];
        for v in FhirVersion::ALL {
            for name in v.model().resource_types() {
                for partition_columns in [&[][..], &parts[..]] {
                    let kernel = delta_schema(v, name, partition_columns).unwrap();
                    let expected = serde_json::to_string(&kernel).unwrap();
                    let fields = table_fields(v, name, partition_columns).unwrap();
                    let ours = crate::dataset::schema_json::write(&fields)
                        .unwrap_or_else(|| panic!("{v} {name}: not written straight"));
                    assert!(ours == expected, "{v} {name}: differs from the kernel's");
                }
            }
        }
    }

    #[test]
    fn a_prepared_schema_is_the_schema_and_is_taken_once() {
        let parts = vec!["effective_year".to_string()];
        let key = (FhirVersion::R4b, "Observation".to_string(), parts.clone());
        // Made from the kernel's own StructType, not by the code under test.
        let expected =
            serde_json::to_string(&delta_schema(FhirVersion::R4b, "Observation", &parts).unwrap())
                .unwrap();
        let parsed: StructType = serde_json::from_str(&expected).unwrap();
        assert!(parsed.field("effective_year").is_some());
        prepare(FhirVersion::R4b, "Observation", &parts);
        prepare(FhirVersion::R4b, "Observation", &parts);
        let held = |k: &SchemaKey| {
            let prepared = PREPARED.lock().unwrap();
            prepared.as_ref().is_some_and(|p| p.contains_key(k))
        };
        assert!(held(&key));
        let got = prepared_schema(FhirVersion::R4b, "Observation", &parts).unwrap();
        assert_eq!(&*got, expected.as_str());
        assert!(!held(&key), "taken by the table it was made for");
        // Not prepared: made at once, the same.
        let again = prepared_schema(FhirVersion::R4b, "Observation", &parts).unwrap();
        assert_eq!(&*again, expected.as_str());
        assert!(prepared_schema(FhirVersion::R4b, "NoSuchType", &[])
            .unwrap_err()
            .to_string()
            .contains("NoSuchType"));
    }
}
