//! The command line: flags ([`args`], clap) turned into the library's option structs, each
//! command run, its outcome printed and given an exit code ([`crate::exit`]). The binary is
//! `main` with the allocator; the Python package's `fhir2parquet` command calls [`main`] too.

pub mod args;

use std::ffi::OsString;
use std::io::IsTerminal;

use clap::Parser;

use crate::convert::{self, ConvertOptions, PartitionSpec, WriteOptions};
use crate::exit;
use crate::store::{redact, Location, StoreOptions};
use args::{Cli, Command};

/// Runs the command line `args` (the program's name first, as `std::env::args_os` gives it):
/// its exit code. Usage errors and `--help` print as clap prints them.
pub fn main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`| head`): not an error of ours.
        Err(e) if is_broken_pipe(&e) => exit::OK,
        Err(e) if crate::interrupt::is_interrupt(&e) => {
            eprintln!("error: {}", redact(&message(&e)));
            exit::INTERRUPTED
        }
        Err(e) => {
            // Store errors can quote request URLs: never with their signatures or tokens.
            eprintln!("error: {}", redact(&message(&e)));
            exit::FATAL
        }
    }
}

/// The error and its causes, each once: store errors repeat their cause in their own text.
pub fn message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            // Arrow's writers carry the I/O error as text.
            || c.to_string().contains("Broken pipe (os error 32)")
    })
}

/// The library's defaults for OUT, with `-j` when given.
fn convert_options(out: Location, threads: Option<usize>) -> ConvertOptions {
    let opts = ConvertOptions::new(out);
    match threads {
        Some(t) => opts.with_threads(t),
        None => opts,
    }
}

/// The summary table and the problems of a run; its exit code.
fn report(record: &convert::RunRecord, quiet: bool) -> anyhow::Result<i32> {
    if !quiet {
        record.print_table(&mut std::io::stderr())?;
    }
    let problems = record.problems();
    for p in &problems {
        eprintln!("warning: {p}");
    }
    if let Some(hint) = &record.version_hint {
        eprintln!("note: {hint}");
    }
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::WITH_REJECTS
    })
}

fn export(a: args::ExportArgs, stores: &StoreOptions) -> anyhow::Result<i32> {
    let (out, quiet) = (a.out.clone(), a.quiet);
    // Ctrl-C asks the export to stop at its next download or before its commit (what was
    // fetched is kept for --resume, the dataset lock released); a second one exits at once.
    on_interrupt_request_stop();
    match export_run(a, stores)? {
        crate::export::Exported::Published(record) => report(&record, quiet),
        crate::export::Exported::AlreadyPublished { job, run_id } => {
            eprintln!(
                "the export {job} is already published in {out} (run {run_id}); its leftovers \
                 are cleaned up"
            );
            Ok(exit::OK)
        }
    }
}

/// Runs `export` with its flags turned into the library's options: what it published. A stop
/// asked for with [`crate::interrupt::request`] ends it as Ctrl-C does the command's.
pub fn export_run(
    a: args::ExportArgs,
    stores: &StoreOptions,
) -> anyhow::Result<crate::export::Exported> {
    use crate::export::{self, auth, ExportOptions, Level};
    let out = Location::parse(&a.out, stores)?;
    // Resuming: the server and the sign-in are in the kept state; what is given wins.
    let (base, kept) = match (&a.base, a.resume) {
        (Some(b), false) => (b.clone(), export::SignIn::default()),
        (b, true) => {
            let (base, kept) = export::resumable(&out)?;
            (b.clone().unwrap_or(base), kept)
        }
        (None, false) => anyhow::bail!("export needs the server's base URL (or --resume)"),
    };
    let sign_in = export::SignIn {
        client_id: a.client_id.clone().or(kept.client_id),
        key: match &a.key {
            // Kept absolute, so a resume works from any folder.
            Some(k) => Some(std::path::absolute(k).unwrap_or_else(|_| k.clone())),
            None => kept.key,
        },
        kid: a.kid.clone().or(kept.kid),
        scope: a.scope.clone().or(kept.scope),
        client_secret_env: a.client_secret_env.clone().or(kept.client_secret_env),
    };
    let http = reqwest::Client::new();
    let credentials = match (&sign_in.key, &sign_in.client_secret_env) {
        (Some(k), _) => Some(auth::Credentials::from_key_file(k, sign_in.kid.clone())?),
        (None, Some(var)) => Some(auth::Credentials::Secret(std::env::var(var).map_err(
            |_| anyhow::anyhow!("--client-secret-env {var}: the variable is not set"),
        )?)),
        (None, None) => None,
    };
    let auth = match (sign_in.client_id.clone(), credentials) {
        (Some(id), Some(c)) => Some(crate::store::block_on(auth::Auth::discover(
            &http,
            &base,
            id,
            c,
            sign_in.scope.clone(),
        ))?),
        (Some(_), None) => anyhow::bail!("--client-id needs --key or --client-secret-env"),
        _ => None,
    };
    let params = a
        .params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--param {p}: give NAME=VALUE"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let progress = !a.quiet && std::io::stderr().is_terminal();
    let opts = ExportOptions {
        base,
        level: match (&a.group, a.patients) {
            (Some(g), _) => Level::Group(g.clone()),
            (None, true) => Level::Patient,
            (None, false) => Level::System,
        },
        types: a.types.clone(),
        since: match a.since.as_deref() {
            Some("auto") => Some(export::last_transaction_time(&out)?),
            other => other.map(str::to_string),
        },
        until: a.until.clone(),
        type_filters: a.type_filters.clone(),
        elements: a.elements.clone(),
        params,
        post: a.post,
        type_repeat: a.type_repeat,
        auth,
        keep_job: a.keep_job,
        resume: a.resume,
        max_poll: std::time::Duration::from_secs(a.max_poll.max(1)),
        progress,
        keep_ndjson: a.keep_ndjson.clone(),
        allow_partial: a.allow_partial,
        restart: a.restart,
        sign_in,
        quiet: a.quiet,
    };
    let convert = ConvertOptions {
        format: a.format,
        // A `_since` export is a change set: merged into Delta tables by id.
        merge: a.since.is_some() && a.format == crate::dataset::Format::Delta,
        append: a.append,
        fhir_version: a.fhir_version,
        write: WriteOptions {
            columns: a.columns,
            ..WriteOptions::default()
        },
        readers: a.parallel.max(1),
        strict_inputs: true,
        progress,
        ..convert_options(out, a.threads)
    };
    export::run(opts, &convert)
}

/// Installs the export's Ctrl-C handler: the first asks running work to stop
/// ([`crate::interrupt`]), a second exits with 130 at once.
fn on_interrupt_request_stop() {
    extern "C" fn on_interrupt(_: libc::c_int) {
        if crate::interrupt::requested() {
            // SAFETY: _exit(2) is async-signal-safe.
            unsafe { libc::_exit(130) }
        }
        let msg = b"\nstopping: the finished downloads are kept (Ctrl-C again to quit now)\n";
        // SAFETY: write(2) is async-signal-safe; request() is one atomic store.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
        }
        crate::interrupt::request();
    }
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let stores = StoreOptions {
        endpoint: cli.endpoint.clone(),
        retries: Some(cli.retries),
    };
    match cli.command {
        Command::Convert(a) => {
            let base = convert_options(Location::parse(&a.out, &stores)?, a.threads);
            let opts = ConvertOptions {
                format: a.format,
                shard: a.shard.as_deref().map(convert::Shard::parse).transpose()?,
                merge: a.merge,
                fhir_version: a.fhir_version,
                append: a.append,
                wait: a.wait,
                partition_by: a
                    .partition_by
                    .iter()
                    .map(|s| PartitionSpec::parse(s))
                    .collect::<Result<_, _>>()?,
                write: WriteOptions {
                    codec: a.compression,
                    zstd_level: a.zstd_level,
                    target_file_bytes: a.target_file_mb.max(1) << 20,
                    row_group_rows: a.row_group_rows.max(1),
                    columns: a.columns,
                },
                readers: a.readers.map_or(base.readers, |r| r.max(1)),
                batch_rows: a.batch_rows.max(1),
                progress: !a.quiet && std::io::stderr().is_terminal(),
                ..base
            };
            let inputs = a
                .inputs
                .iter()
                .map(|i| Location::parse(i, &stores))
                .collect::<Result<Vec<_>, _>>()?;
            let record = convert::run(&inputs, &opts)?;
            report(&record, a.quiet)
        }
        Command::Export(a) => export(*a, &stores),
        Command::ToNdjson(a) => {
            let dataset = Location::parse(&a.dataset, &stores)?;
            let counts = crate::encode::to_ndjson(dataset, &a.out)?;
            for (t, n) in counts {
                eprintln!("{t}: {n} resources");
            }
            Ok(exit::OK)
        }
        Command::Schema(a) => {
            crate::schema::print::run(&a.into(), &mut std::io::stdout())?;
            Ok(exit::OK)
        }
        Command::Upload(a) => {
            let Location::Remote(dest) = Location::parse(&a.dest, &stores)? else {
                anyhow::bail!(
                    "{}: upload sends a dataset to an s3://, gs:// or az:// URL; to copy it to \
                     another folder, use cp -r",
                    a.dest
                );
            };
            let progress = !a.quiet && std::io::stderr().is_terminal();
            let summary = crate::upload::run(&a.dataset, &dest, progress)?;
            if !a.quiet {
                summary.print(&dest.url(""), &mut std::io::stderr())?;
            }
            Ok(exit::OK)
        }
        Command::Warehouse(a) => {
            let dataset = Location::parse(&a.dataset, &stores)?;
            let tables = crate::dataset::tables(&dataset)?;
            let opts = crate::warehouse::Options {
                schema: a.schema,
                load: a.load,
                endpoint: stores.endpoint.clone(),
                connection: Some(a.connection),
            };
            let script = crate::warehouse::generate(a.engine, &tables, &opts)?;
            for n in &script.notes {
                eprintln!("note: {n}");
            }
            match &a.out {
                Some(p) => fs_err::write(p, script.sql())
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?,
                // Written, not printed: a reader gone (`| head`) is an error to return, not a
                // panic.
                None => std::io::Write::write_all(
                    &mut std::io::stdout().lock(),
                    script.sql().as_bytes(),
                )?,
            }
            if let Some(dir) = &a.schema_json {
                fs_err::create_dir_all(dir)?;
                for (name, schema) in &script.schemas {
                    let path = dir.join(format!("{name}.json"));
                    fs_err::write(&path, serde_json::to_string_pretty(schema)?)?;
                }
            }
            Ok(exit::OK)
        }
        Command::History(a) => {
            let dataset = Location::parse(&a.dataset, &stores)?;
            let out = &mut std::io::stdout();
            crate::dataset::history::print(&dataset, a.resource_type.as_deref(), a.json, out)?;
            Ok(exit::OK)
        }
        Command::Vacuum(a) => {
            let dataset = Location::parse(&a.dataset, &stores)?;
            if a.purge {
                // Compression and encodings as convert chooses them by default.
                let write = crate::convert::WriteOptions::default();
                let props = |rt: &str, release: &str, schema: &arrow::datatypes::Schema| {
                    write.properties(rt, release, schema)
                };
                let purged = crate::dataset::history::purge(&dataset, &props, a.dry_run)?;
                let verb = if a.dry_run {
                    "would rewrite"
                } else {
                    "rewrote"
                };
                for (t, p) in &purged {
                    eprintln!(
                        "{t}: {verb} {} file(s) without {} deleted row(s)",
                        p.files, p.rows
                    );
                }
            }
            let removed = crate::dataset::history::vacuum(&dataset, a.retain, a.dry_run)?;
            let verb = if a.dry_run { "would remove" } else { "removed" };
            for (t, files) in &removed {
                eprintln!("{t}: {verb} {} file(s)", files.len());
            }
            Ok(exit::OK)
        }
        Command::Sql(a) => crate::sql::run(a.into(), &stores),
        Command::View(a) => crate::view::run(a.into(), &stores),
    }
}
