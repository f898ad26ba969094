//! The interactive shell: history, multi-line statements, completion and meta-commands.

use std::borrow::Cow;
use std::io::{BufRead, Write};

use anyhow::Result;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use super::Shell;
use crate::output::PrintFormat;
use crate::session::functions;

const HELP: &str = "\
Statements end with ';' and may span lines. Meta-commands:
  \\d TABLE        columns of TABLE with their types
  \\dt             tables with their row counts
  \\timing         toggle timing of statements
  \\format FORMAT  table, csv, json or ndjson
  \\?              this help
  \\q              quit
FHIR functions: reference_id(ref), reference_type(ref), has_code(cc, system, code),
  code_of(cc, system), extension_value(ext, url, ...), fhir_date_start(text), fhir_date_end(text),
  fhirpath('expression' [, 'table or alias']): FHIRPath on each row, typed columns and _overflow
";

/// What one line of input asks for.
enum Action {
    Quit,
    Continue,
}

/// Handles a meta-command line (starting with `\`).
fn meta(shell: &mut Shell, line: &str, out: &mut dyn Write) -> Result<Action> {
    let mut words = line.split_whitespace();
    match words.next().unwrap_or("") {
        "\\q" | "\\quit" => return Ok(Action::Quit),
        "\\?" | "\\h" | "\\help" => write!(out, "{HELP}")?,
        "\\timing" => {
            shell.timing = !shell.timing;
            writeln!(out, "timing is {}", if shell.timing { "on" } else { "off" })?;
        }
        "\\dt" => super::print_batches(&shell.list_tables()?, shell.format, out)?,
        "\\d" => match words.next() {
            Some(t) => super::print_batches(&shell.describe(t)?, shell.format, out)?,
            None => super::print_batches(&shell.list_tables()?, shell.format, out)?,
        },
        "\\format" => {
            shell.format = match words.next() {
                Some("table") => PrintFormat::Table,
                Some("csv") => PrintFormat::Csv,
                Some("json") => PrintFormat::Json,
                Some("ndjson") => PrintFormat::Ndjson,
                _ => anyhow::bail!("\\format takes table, csv, json or ndjson"),
            }
        }
        "\\view" => {
            let Some(file) = words.next() else {
                anyhow::bail!("\\view takes a ViewDefinition file, and a table name if you like");
            };
            let path = std::path::Path::new(file);
            let view = crate::view::load(path)?;
            let name = match words.next() {
                Some(n) => n.to_string(),
                None => crate::view::table_name(&view, path),
            };
            crate::view::register(shell, &name, &view)?;
            writeln!(out, "view {name} registered: SELECT * FROM \"{name}\"")?;
        }
        other => anyhow::bail!("unknown meta-command {other}: \\? lists them"),
    }
    Ok(Action::Continue)
}

/// Reads statements (and meta-commands) from a script or pipe.
pub fn run_script(shell: &mut Shell, input: impl BufRead, out: &mut dyn Write) -> Result<i32> {
    let mut buf = String::new();
    let mut failed = false;
    for line in input.lines() {
        let line = line?;
        if buf.trim().is_empty() && line.trim_start().starts_with('\\') {
            match meta(shell, line.trim(), out) {
                Ok(Action::Quit) => break,
                Ok(Action::Continue) => {}
                Err(e) => {
                    eprintln!("error: {e:#}");
                    failed = true;
                }
            }
            continue;
        }
        buf.push_str(&line);
        buf.push('\n');
        if line.trim_end().ends_with(';') {
            if let Err(e) = shell.run_and_print(&buf, out) {
                eprintln!("error: {e:#}");
                failed = true;
            }
            buf.clear();
        }
    }
    if !buf.trim().is_empty() {
        if let Err(e) = shell.run_and_print(&buf, out) {
            eprintln!("error: {e:#}");
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

struct ShellHelper {
    words: Vec<String>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = word_start(line, pos);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((start, Vec::new()));
        }
        let found = self
            .words
            .iter()
            .filter(|w| w.starts_with(word))
            .map(|w| Pair {
                display: w.clone(),
                replacement: w.clone(),
            })
            .collect();
        Ok((start, found))
    }
}

/// Where the word that ends at byte `pos` of `line` begins: after the last character before
/// `pos` that is not a letter, digit or `_` (a char boundary, whatever that character's width).
fn word_start(line: &str, pos: usize) -> usize {
    line[..pos]
        .char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8())
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {
    fn highlight<'l>(&self, line: &'l str, _: usize) -> Cow<'l, str> {
        Cow::Borrowed(line)
    }
}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".fhir2parquet_history"))
}

/// The interactive loop on a terminal.
pub fn run_interactive(shell: &mut Shell, quiet: bool) -> Result<i32> {
    let mut words: Vec<String> = shell.tables.clone();
    words.extend(shell.column_names());
    words.extend(functions::NAMES.iter().map(|s| s.to_string()));
    for kw in [
        "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "LIMIT", "JOIN", "unnest", "COUNT",
        "COPY",
    ] {
        words.push(kw.to_string());
    }
    if let Ok(batches) =
        shell.run_sql("SELECT DISTINCT routine_name FROM information_schema.routines")
    {
        for b in batches {
            let col = arrow::array::cast::as_string_array(b.column(0));
            words.extend(col.iter().flatten().map(str::to_string));
        }
    }
    words.sort();
    words.dedup();
    let mut rl: Editor<ShellHelper, FileHistory> = Editor::new()?;
    rl.set_helper(Some(ShellHelper { words }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    if !quiet {
        println!(
            "fhir2parquet sql: tables {}. \\? for help, \\q to quit.",
            shell.tables.join(", ")
        );
    }
    let mut buf = String::new();
    let mut out = std::io::stdout();
    loop {
        let prompt = if buf.is_empty() { "fhir> " } else { "  ... " };
        match rl.readline(prompt) {
            Ok(line) => {
                if buf.is_empty() && line.trim_start().starts_with('\\') {
                    let _ = rl.add_history_entry(line.as_str());
                    match meta(shell, line.trim(), &mut out) {
                        Ok(Action::Quit) => break,
                        Ok(Action::Continue) => {}
                        Err(e) => eprintln!("error: {e:#}"),
                    }
                    continue;
                }
                buf.push_str(&line);
                buf.push('\n');
                if line.trim_end().ends_with(';') {
                    let _ = rl.add_history_entry(buf.trim_end());
                    if let Err(e) = shell.run_and_print(&buf, &mut out) {
                        eprintln!("error: {e:#}");
                    }
                    buf.clear();
                }
            }
            Err(ReadlineError::Interrupted) => buf.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_finds_words_after_any_character() {
        // A pasted curly quote (3 bytes) or an accented letter before the word.
        for (line, word) in [
            ("SELECT \u{201c}Pat", "Pat"),
            ("SELECT gend", "gend"),
            ("\u{201c}", ""),
            ("WHERE name = 'Jos\u{e9}' AND bir", "bir"),
            ("x\u{e9}y", "x\u{e9}y"),
        ] {
            let start = word_start(line, line.len());
            assert_eq!(&line[start..], word, "{line}");
        }
        let h = ShellHelper {
            words: vec!["Patient".into()],
        };
        let history = rustyline::history::DefaultHistory::new();
        let ctx = Context::new(&history);
        let line = "SELECT \u{201c}Pat";
        let (start, found) = h.complete(line, line.len(), &ctx).unwrap();
        assert_eq!(&line[start..], "Pat");
        assert_eq!(found[0].replacement, "Patient");
    }
}
