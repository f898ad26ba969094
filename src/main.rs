use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use fhir2parquet::cli::{exit, Cli, Command};
use fhir2parquet::convert::{self, ConvertOptions, PartitionSpec, WriteOptions};
use fhir2parquet::store::{redact, Location, StoreOptions};

/// mimalloc: convert allocates and frees Arrow and Parquet buffers on every thread for every
/// batch, and the system allocator spent ~10% of a conversion's CPU time on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`| head`): not an error of ours.
        Err(e) if is_broken_pipe(&e) => exit::OK,
        Err(e) => {
            // Store errors can quote request URLs: never with their signatures or tokens.
            eprintln!("error: {}", redact(&message(&e)));
            exit::FATAL
        }
    };
    ExitCode::from(code as u8)
}

/// The error and its causes, each once: store errors repeat their cause in their own text.
fn message(e: &anyhow::Error) -> String {
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

fn run(cli: Cli) -> anyhow::Result<i32> {
    let stores = StoreOptions {
        endpoint: cli.endpoint.clone(),
        retries: Some(cli.retries),
    };
    match cli.command {
        Command::Convert(a) => {
            let opts = ConvertOptions {
                out: Location::parse(&a.out, &stores)?,
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
                },
                threads: a
                    .threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                batch_rows: a.batch_rows.max(1),
                progress: !a.quiet && std::io::stderr().is_terminal(),
            };
            let inputs = a
                .inputs
                .iter()
                .map(|i| Location::parse(i, &stores))
                .collect::<Result<Vec<_>, _>>()?;
            let record = convert::run(&inputs, &opts)?;
            if !a.quiet {
                record.print_table(&mut std::io::stderr())?;
            }
            let problems = record.problems();
            for p in &problems {
                eprintln!("warning: {p}");
            }
            Ok(if problems.is_empty() {
                exit::OK
            } else {
                exit::WITH_REJECTS
            })
        }
        Command::ToNdjson(a) => {
            let dataset = Location::parse(&a.dataset, &stores)?;
            let counts = fhir2parquet::encode::to_ndjson(dataset, &a.out)?;
            for (t, n) in counts {
                eprintln!("{t}: {n} resources");
            }
            Ok(exit::OK)
        }
        Command::Schema(a) => {
            fhir2parquet::schema::print::run(&a, &mut std::io::stdout())?;
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
            let summary = fhir2parquet::upload::run(&a.dataset, &dest, progress)?;
            if !a.quiet {
                summary.print(&dest.url(""), &mut std::io::stderr())?;
            }
            Ok(exit::OK)
        }
        Command::Warehouse(a) => {
            let dataset = Location::parse(&a.dataset, &stores)?;
            let tables = fhir2parquet::dataset::tables(&dataset)?;
            let opts = fhir2parquet::warehouse::Options {
                schema: a.schema,
                load: a.load,
                endpoint: stores.endpoint.clone(),
            };
            let script = fhir2parquet::warehouse::generate(a.engine, &tables, &opts)?;
            for n in &script.notes {
                eprintln!("note: {n}");
            }
            match &a.out {
                Some(p) => std::fs::write(p, script.sql())
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?,
                None => print!("{}", script.sql()),
            }
            if let Some(dir) = &a.schema_json {
                std::fs::create_dir_all(dir)?;
                for (name, schema) in &script.schemas {
                    let path = dir.join(format!("{name}.json"));
                    std::fs::write(&path, serde_json::to_string_pretty(schema)?)?;
                }
            }
            Ok(exit::OK)
        }
        Command::Sql(a) => fhir2parquet::sql::run(a, &stores),
        Command::View(a) => fhir2parquet::view::run(a, &stores),
    }
}
