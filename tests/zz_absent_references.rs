//! Runs after every other test binary (cargo runs them in name order) and lists, on the terminal, the
//! reference sets that tests of this run needed and could not find (recorded by `common::reference`), with
//! how to get each; then clears the records. Not a test: a report (`harness = false`).

mod common;

use std::collections::BTreeMap;
use std::io::Write;

fn main() {
    let dir = common::absence_dir();
    // set name -> (how to get it, test binaries that needed it)
    let mut absent: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        let mut lines = text.lines();
        let (Some(name), Some(binary), Some(how)) = (lines.next(), lines.next(), lines.next()) else { continue };
        let entry = absent.entry(name.to_string()).or_insert_with(|| (how.to_string(), Vec::new()));
        entry.1.push(binary.to_string());
        let _ = std::fs::remove_file(e.path());
    }
    let mut err = std::io::stderr().lock();
    if absent.is_empty() {
        let _ = writeln!(err, "reference sets: every set the tests looked for was found");
        return;
    }
    let _ = writeln!(err, "\n==== {} optional reference set(s) absent: the checks that need them did not run ====", absent.len());
    for (name, (how, mut binaries)) in absent {
        binaries.sort();
        binaries.dedup();
        let _ = writeln!(err, "  {name}  (needed by tests/{}.rs)\n      get it: {how}", binaries.join(".rs, tests/"));
    }
    let _ = writeln!(err, "Reference roots searched: tests/fixtures, ../shared/fixtures, $MAXTEXT_RS_REFERENCES.\n");
}
