//! `export`: a FHIR Bulk Data `$export` client (Bulk Data Access IG 2.0) that streams the
//! server's files straight into the convert pipeline: kick-off, status polling, the manifest,
//! downloads as [`Source`]s (several at once), then the job deleted. The job URL and the
//! finished downloads are kept in `OUT/_export/` (see [`spool`]), so `--resume` continues a job
//! after a crash and fetches only the files it does not have.

pub mod auth;
mod download;
mod event_log;
mod http;
mod kickoff;
mod manifest;
mod options;
mod outcome;
mod spool;
mod state;
mod status;

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::Method;
use serde_json::Value;

use crate::convert::{ConvertOptions, RunRecord};
use crate::dataset::layout;
use crate::input::Source;
use crate::schema::FhirVersion;
use crate::store::block_on;
pub use spool::ExportDir;

use download::*;
use event_log::*;
pub use http::retry_after;
use http::*;
use kickoff::*;
use manifest::*;
pub use options::{ExportOptions, Level};
use outcome::*;
use state::*;
pub use state::{last_transaction_time, resumable, SignIn};

/// What an export did.
#[derive(Debug)]
pub enum Exported {
    /// The files were converted and published: the run record.
    Published(Box<RunRecord>),
    /// `--resume` of a job OUT's run record already names as published (the process was
    /// stopped after its commit): only the job's leftovers were cleaned up.
    AlreadyPublished { job: String, run_id: String },
}

/// Runs an export into `convert.out`.
///
/// A stop asked for with [`crate::interrupt::request`] (the binary's Ctrl-C) ends it at the
/// next download or before its commit, with an error that says how to resume.
pub fn run(o: ExportOptions, convert: &ConvertOptions) -> Result<Exported> {
    let dir = ExportDir::under(&convert.out, layout::EXPORT_DIR);
    let log = EventLog::new(dir.clone());
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .user_agent(concat!("fhir2parquet/", env!("CARGO_PKG_VERSION")))
            .build()?,
        auth: o.auth,
        max_poll: o.max_poll,
        log: log.clone(),
        quiet: o.quiet,
    });
    let o = ExportOptions { auth: None, ..o };
    let kept = dir.read(STATE)?;
    let state = match (o.resume, kept) {
        (true, kept) => {
            let kept = kept
                .ok_or_else(|| anyhow!("no export to resume: {} is missing", dir.display(STATE)))?;
            let state = serde_json::from_slice::<State>(&kept)
                .with_context(|| format!("{} is damaged", dir.display(STATE)))?;
            *log.export_id.lock().expect("no panic") = strip(&state.job);
            if let Some(run_id) = published_run(&convert.out, &strip(&state.job)) {
                // Committed, then stopped before the job's leftovers went: only clean up.
                log.log(
                    "resume",
                    serde_json::json!({"alreadyPublished": true, "runId": run_id}),
                );
                log.flush();
                finish(&client, &o, &dir, &state.job, convert);
                return Ok(Exported::AlreadyPublished {
                    job: strip(&state.job),
                    run_id,
                });
            }
            state
        }
        (false, Some(kept)) => {
            let old: Option<State> = serde_json::from_slice(&kept).ok();
            let what = old
                .as_ref()
                .map(|s| format!(" ({}, kicked off {})", strip(&s.job), s.kicked_off))
                .unwrap_or_default();
            if !o.restart {
                bail!(
                    "{} holds an unfinished export{what}: `{}` goes on with it; --restart \
                     deletes it (on the server too) and starts a new one",
                    convert.out.display(),
                    resume_command(&convert.out)
                );
            }
            if let Some(old) = old {
                if !o.quiet {
                    eprintln!(
                        "fhir2parquet: deleting the unfinished export {} and starting anew",
                        strip(&old.job)
                    );
                }
                let _ = block_on(client.send(Method::DELETE, &old.job, true, &|r| r));
            }
            dir.remove(STATE);
            ExportDir::under(&convert.out, layout::EXPORT_FILES_DIR).remove_all();
            new_job(&client, &o)?
        }
        (false, None) => new_job(&client, &o)?,
    };
    let job = state.job.clone();
    let progress = Arc::new(Progress {
        dir: dir.clone(),
        state: std::sync::Mutex::new(state),
    });
    progress.save(&progress.state.lock().expect("no panic"))?;
    let result = download_and_convert(&client, &o, convert, &dir, &job, progress.clone());
    match result {
        Ok(record) => {
            crate::dataset::commit::failpoint("export-committed");
            finish(&client, &o, &dir, &job, convert);
            Ok(Exported::Published(Box::new(record)))
        }
        Err(e) => {
            log.log(
                "export_error",
                serde_json::json!({"message": format!("{e:#}")}),
            );
            log.flush();
            Err(e)
        }
    }
}

/// Kicks off a new job; its state.
fn new_job(client: &Client, o: &ExportOptions) -> Result<State> {
    // The server's FHIR version first: the data is converted as it.
    let fhir_version = match block_on(server_fhir_version(client, &o.base)) {
        Ok(v) => Some(v),
        Err(why) => {
            client.log.log(
                "capability_statement",
                serde_json::json!({"error": crate::store::redact(&why)}),
            );
            None
        }
    };
    let job = block_on(kick_off(client, o))?;
    Ok(State {
        base: o.base.clone(),
        job,
        kicked_off: chrono::Utc::now().to_rfc3339(),
        done: Default::default(),
        sign_in: o.sign_in.clone(),
        fhir_version,
    })
}

/// The FHIR version the export's data is converted as: `--fhir-version` when given, else the
/// one the server's CapabilityStatement names, else the dataset's or R4 (said on stderr).
fn data_version(
    o: &ExportOptions,
    convert: &ConvertOptions,
    server: Option<&str>,
) -> Result<Option<FhirVersion>> {
    let said = server.map(|r| (r, FhirVersion::from_release(r)));
    match (convert.fhir_version, said) {
        (Some(asked), Some((r, Some(v)))) if asked != v => {
            if !o.quiet {
                eprintln!(
                    "note: the server says its FHIR version is {r}; converting as {asked} ({}), \
                     as --fhir-version asks",
                    asked.release()
                );
            }
            Ok(Some(asked))
        }
        (Some(asked), _) => Ok(Some(asked)),
        (None, Some((_, Some(v)))) => Ok(Some(v)),
        (None, Some((r, None))) => bail!(
            "the server's FHIR version is {r}, which fhir2parquet does not convert (it converts \
             4.0.1, 4.3.0 and 5.0.0); give --fhir-version to convert the data as one of them"
        ),
        (None, None) => {
            if !o.quiet {
                eprintln!(
                    "note: the server named no FHIR version (GET {}/metadata gave no \
                     CapabilityStatement.fhirVersion): converting as the dataset's version, or \
                     r4; give --fhir-version to choose",
                    strip(&o.base).trim_end_matches('/')
                );
            }
            Ok(None)
        }
    }
}

/// After the commit: the job deleted on the server (unless kept), the state and the copies
/// of the downloads removed (unless kept).
fn finish(client: &Client, o: &ExportOptions, dir: &ExportDir, job: &str, c: &ConvertOptions) {
    if !o.keep_job {
        let _ = block_on(client.send(Method::DELETE, job, true, &|r| r));
    }
    dir.remove(STATE);
    if o.keep_ndjson.is_none() {
        ExportDir::under(&c.out, layout::EXPORT_FILES_DIR).remove_all();
    }
}

/// Polls, reads the manifest, downloads and converts; the run record.
fn download_and_convert(
    client: &Arc<Client>,
    o: &ExportOptions,
    convert: &ConvertOptions,
    dir: &ExportDir,
    job: &str,
    progress: Arc<Progress>,
) -> Result<RunRecord> {
    let log = &client.log;
    let (manifest, pages) = read_manifest(client, o, job)?;
    // Downloads are copied here while they stream, so a resumed export need not fetch them
    // again; without --keep-ndjson the copies go once the export is published.
    let copies = match &o.keep_ndjson {
        Some(d) => ExportDir::Local(d.clone()),
        None => ExportDir::under(&convert.out, layout::EXPORT_FILES_DIR),
    };
    let listed = list_files(client, job, &manifest, &pages, &copies, &progress)?;
    if o.resume {
        let reused = listed.reused;
        log.log(
            "resume",
            serde_json::json!({"filesKept": reused, "filesToDownload": listed.sources.len() - reused}),
        );
    }
    let Listed {
        mut sources,
        extra,
        types,
        ..
    } = listed;
    let (extra_lines, deleted) = block_on(save_extra(client, &extra, dir))?;
    let outcome_files = extra.iter().filter(|e| e.0 == "outcome").count();
    // The server's own report of what it could not export: a partial dataset is not
    // published as whole.
    let (failures, incomplete) = server_failures(dir, outcome_files, &types);
    if !failures.is_empty() && !o.allow_partial {
        let which = match incomplete.is_empty() {
            true => "it names no type, so any may be incomplete".to_string(),
            false => format!("incomplete: {}", incomplete.join(", ")),
        };
        bail!(
            "the server reports {} failure(s) in this export's error files ({which}): {}; \
             nothing was published. The error files are in {}. `{} --allow-partial` publishes \
             what came (exit code 3), or export again",
            failures.len(),
            failures
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
            dir.display(""),
            resume_command(&convert.out),
        );
    }

    // The FHIR version the server named at kick-off (kept with the job for --resume).
    let server = progress
        .state
        .lock()
        .expect("no panic")
        .fhir_version
        .clone();
    let mut convert = run_options(o, convert, &manifest, server.as_deref())?;
    convert.export = Some(serde_json::json!({
        "server": o.base,
        "server_fhir_version": server,
        "job": strip(job),
        "request": manifest["request"],
        "transactionTime": manifest["transactionTime"],
        "files": sources.len(),
        "outcome_and_deleted_lines": extra_lines,
        "deleted_resources": deleted.len(),
        "server_failures": failures,
        "incomplete_types": incomplete,
    }));
    if convert.merge {
        download_first(&mut sources, &copies, &progress)?;
    }
    let deletes: Vec<crate::convert::merge::Delete> = deleted
        .iter()
        .map(|(t, id)| crate::convert::merge::Delete {
            resource_type: t.clone(),
            id: id.clone(),
            when: None,
        })
        .collect();
    let record = crate::convert::run_merge(&sources, &convert, &deletes).map_err(|e| {
        let kept = progress.state.lock().expect("no panic").done.len();
        // Files the server no longer has: a resume would meet the same.
        if format!("{e:#}").contains(GONE) {
            return e.context(format!(
                "the export stopped with {kept} of {} files downloaded",
                sources.len()
            ));
        }
        e.context(format!(
            "the export stopped; {kept} of {} files are kept: run `{}` to go on",
            sources.len(),
            resume_command(&convert.out)
        ))
    })?;
    // Published: the server's deleted resources recorded beside the data.
    if let Err(e) = write_deleted(
        &ExportDir::under(&convert.out, layout::DELETED_DIR),
        &deleted,
        manifest["transactionTime"].as_str().unwrap_or_default(),
    ) {
        eprintln!("warning: the list of deleted resources was not written: {e:#}");
    }
    let rows: u64 = record.types.values().map(|t| t.rows).sum();
    log.log(
        "export_complete",
        serde_json::json!({
            "files": sources.len(),
            "resources": rows,
            "bytes": record.inputs.iter().map(|i| i.size).sum::<u64>(),
            "attachments": null,
            "duration": (record.seconds * 1000.0) as u64,
        }),
    );
    log.flush();
    Ok(record)
}

/// The conversion's options for this export: the data's FHIR version, downloads that must
/// complete, patient-block headers skipped.
fn run_options(
    o: &ExportOptions,
    convert: &ConvertOptions,
    manifest: &Value,
    server: Option<&str>,
) -> Result<ConvertOptions> {
    let mut convert = convert.clone();
    convert.fhir_version = data_version(o, &convert, server)?;
    // A download that fails stops the run before anything is published: what was fetched is
    // kept for --resume.
    convert.strict_inputs = true;
    // An export organized by patient (asked now, or by the job resumed, as its manifest's
    // request says) starts each patient's block with a Parameters header: not data.
    let organized = o.params.iter().any(|(k, _)| k == "organizeOutputBy")
        || manifest["request"]
            .as_str()
            .is_some_and(|r| r.contains("organizeOutputBy="));
    if organized {
        convert.header_type = Some("Parameters".into());
    }
    Ok(convert)
}

/// A merge reads its input twice (its plan, then the conversion): every file is downloaded
/// (and kept, as for --resume) first, then read from its copy.
fn download_first(sources: &mut [Source], copies: &ExportDir, progress: &Progress) -> Result<()> {
    for s in sources.iter() {
        if let Some(open) = &s.opener {
            let mut r = (open.0)().with_context(|| format!("cannot download {}", s.display()))?;
            std::io::copy(&mut r, &mut std::io::sink())
                .with_context(|| format!("cannot download {}", s.display()))?;
        }
    }
    let done = progress.state.lock().expect("no panic").done.clone();
    for (entry, s) in sources.iter_mut().enumerate() {
        if let Some(copy) = done.get(&entry) {
            s.opener = Some(kept(copies.clone(), copy.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retry_after_forms_are_clamped() {
        let max = Duration::from_secs(60);
        assert_eq!(retry_after(Some("5"), max), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(Some("0"), max), Some(MIN_POLL));
        // A millisecond epoch, as a server has sent.
        assert_eq!(retry_after(Some("1700000000000"), max), Some(max));
        assert_eq!(retry_after(Some("7200"), max), Some(max));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc2822();
        let d = retry_after(Some(&soon), max).unwrap();
        assert!(
            d >= Duration::from_secs(1) && d <= Duration::from_secs(3),
            "{d:?}"
        );
        assert_eq!(retry_after(Some("soon"), max), None);
    }

    #[test]
    fn parameters_joined_or_repeated() {
        let mut o = ExportOptions {
            base: "http://x/fhir".into(),
            level: Level::Group("g1".into()),
            types: vec!["Patient".into(), "Observation".into()],
            since: Some("2020-01-01T00:00:00Z".into()),
            until: None,
            type_filters: vec![],
            elements: vec![],
            params: vec![],
            post: false,
            type_repeat: false,
            auth: None,
            keep_job: false,
            resume: false,
            max_poll: Duration::from_secs(60),
            progress: false,
            keep_ndjson: None,
            allow_partial: false,
            restart: false,
            sign_in: SignIn::default(),
            quiet: true,
        };
        assert_eq!(kickoff_url(&o), "http://x/fhir/Group/g1/$export");
        let p = parameters(&o);
        assert!(p.contains(&("_type".into(), "Patient,Observation".into())));
        o.type_repeat = true;
        let p = parameters(&o);
        assert_eq!(p.iter().filter(|(k, _)| k == "_type").count(), 2);
        let r = parameters_resource(&p);
        assert_eq!(r["resourceType"], "Parameters");
        assert!(r["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["valueInstant"] == "2020-01-01T00:00:00Z"));
    }
}
