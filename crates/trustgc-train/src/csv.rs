//! A metric logger that appends every iteration's metrics to a CSV file:
//! `seconds,epoch,split,iteration,<metric>...`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use burn::train::logger::MetricLogger;
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};

/// Appends metrics to a CSV file, one row per iteration and split.
pub struct CsvLogger {
    file: BufWriter<File>,
    columns: Vec<String>,
    names: HashMap<MetricId, String>,
    iterations: HashMap<String, usize>,
    start: Instant,
    /// Seconds already spent before this process (a resumed run).
    offset: f64,
}

/// The largest metrics file read back on resume (1 GiB: hundreds of epochs of rows).
const CSV_CAP: trustgc_io::Cap = trustgc_io::Cap {
    bytes: 1 << 30,
    what: "a metrics CSV file",
};

impl CsvLogger {
    /// Opens `path` for a run that continues after epoch `resumed_after` (0: a fresh run).
    ///
    /// Rows of later epochs (written by an interrupted run, which will be redone) and a torn
    /// last line are dropped first, so a resumed run's CSV reads like an uninterrupted one's;
    /// the `seconds` column continues from the last kept row. The cleaned file replaces the old
    /// one atomically. A file whose header names other columns is an `InvalidData` error.
    pub fn open(path: &Path, columns: &[&str], resumed_after: usize) -> std::io::Result<Self> {
        let header = format!("seconds,epoch,split,iteration,{}", columns.join(","));
        let existing = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            _ => trustgc_io::read_text_capped(path, CSV_CAP)
                .map_err(trustgc_io::ReadError::into_io)?,
        };
        let (kept, seconds) = kept_rows(&existing, &header, columns.len() + 4, resumed_after)?;
        trustgc_io::write_file_with(path, &[], |out| {
            writeln!(out, "{header}")?;
            for row in &kept {
                writeln!(out, "{row}")?;
            }
            Ok(())
        })
        .map_err(std::io::Error::other)?;
        let file = BufWriter::new(OpenOptions::new().append(true).open(path)?);
        Ok(Self {
            file,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            names: HashMap::new(),
            iterations: HashMap::new(),
            start: Instant::now(),
            offset: seconds,
        })
    }
}

/// The complete rows of `text` from epochs up to `resumed_after`, and the last kept row's time.
fn kept_rows<'a>(
    text: &'a str,
    header: &str,
    fields: usize,
    resumed_after: usize,
) -> std::io::Result<(Vec<&'a str>, f64)> {
    let mut lines = text.split_inclusive('\n');
    match lines.next() {
        None => return Ok((Vec::new(), 0.0)),
        Some(first) if first.trim_end() == header => {}
        Some(first) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "its header is `{}`, expected `{header}`; move it away to start a new log",
                    first.trim_end()
                ),
            ));
        }
    }
    let mut kept = Vec::new();
    let mut seconds = 0.0;
    for line in lines {
        // A line without its newline was torn by an interrupted write.
        let Some(row) = line.strip_suffix('\n') else {
            break;
        };
        let cells: Vec<&str> = row.split(',').collect();
        if cells.len() != fields {
            continue;
        }
        let (Ok(t), Ok(epoch)) = (cells[0].parse::<f64>(), cells[1].parse::<usize>()) else {
            continue;
        };
        if epoch <= resumed_after {
            kept.push(row);
            seconds = t;
        }
    }
    Ok((kept, seconds))
}

fn split_name(split: &Split) -> String {
    match split {
        Split::Train => "train".into(),
        Split::Valid => "valid".into(),
        Split::Test(Some(tag)) => format!("test:{tag}"),
        Split::Test(None) => "test".into(),
    }
}

impl MetricLogger for CsvLogger {
    fn log(&mut self, update: MetricsUpdate, epoch: usize, split: &Split) {
        let mut values: HashMap<&str, f64> = HashMap::new();
        for numeric in &update.entries_numeric {
            if let Some(name) = self.names.get(&numeric.entry.metric_id) {
                let value = match numeric.numeric_entry {
                    NumericEntry::Value(v) => v,
                    NumericEntry::Aggregated {
                        aggregated_value, ..
                    } => aggregated_value,
                };
                values.insert(name.as_str(), value);
            }
        }
        if values.is_empty() {
            return;
        }
        let split = split_name(split);
        let iteration = self
            .iterations
            .entry(format!("{split}/{epoch}"))
            .or_insert(0);
        *iteration += 1;
        let cells: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                values
                    .get(c.as_str())
                    .map(|v| format!("{v}"))
                    .unwrap_or_default()
            })
            .collect();
        let _ = writeln!(
            self.file,
            "{:.1},{epoch},{split},{},{}",
            self.offset + self.start.elapsed().as_secs_f64(),
            iteration,
            cells.join(",")
        );
    }

    fn read_numeric(
        &mut self,
        name: &str,
        _epoch: usize,
        _split: &Split,
    ) -> Result<Vec<burn::train::metric::NumericEntry>, String> {
        Err(format!(
            "the CSV logger does not read metrics back ({name})"
        ))
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }

    fn log_epoch_summary(&mut self, _summary: EpochSummary) {
        let _ = self.file.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "seconds,epoch,split,iteration,a,b";

    #[test]
    fn resuming_drops_redone_epochs_and_a_torn_line() {
        let text = format!(
            "{HEADER}\n1.0,1,train,1,0.5,0.6\n2.0,1,valid,1,0.4,0.5\n3.0,2,train,1,0.3,0.4\n3.5,2,train,2,"
        );
        let (kept, seconds) = kept_rows(&text, HEADER, 6, 1).unwrap();
        assert_eq!(kept, ["1.0,1,train,1,0.5,0.6", "2.0,1,valid,1,0.4,0.5"]);
        assert_eq!(seconds, 2.0);
        let (kept, seconds) = kept_rows(&text, HEADER, 6, 2).unwrap();
        assert_eq!(kept.len(), 3, "the torn row is dropped: {kept:?}");
        assert_eq!(seconds, 3.0);
        let (kept, _) = kept_rows(&text, HEADER, 6, 0).unwrap();
        assert!(kept.is_empty());
    }

    #[test]
    fn a_log_with_other_columns_is_refused() {
        let error = kept_rows("seconds,epoch,split,iteration,x\n", HEADER, 6, 1).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            error
                .to_string()
                .contains("seconds,epoch,split,iteration,x")
        );
    }

    #[test]
    fn open_rewrites_the_file_and_continues_the_clock() {
        let dir = std::env::temp_dir().join(format!("trustgc-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.csv");
        std::fs::write(
            &path,
            format!("{HEADER}\n7.5,1,train,1,1,2\n9.0,2,train,1,3,"),
        )
        .unwrap();
        let logger = CsvLogger::open(&path, &["a", "b"], 1).unwrap();
        assert_eq!(logger.offset, 7.5);
        drop(logger);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{HEADER}\n7.5,1,train,1,1,2\n"));
        assert!(!path.with_extension("csv.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
