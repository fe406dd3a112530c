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
}

impl CsvLogger {
    /// Opens (appending) `path`; writes the header when the file is new.
    pub fn open(path: &Path, columns: &[&str]) -> std::io::Result<Self> {
        let new = !path.exists() || std::fs::metadata(path)?.len() == 0;
        let mut file = BufWriter::new(OpenOptions::new().create(true).append(true).open(path)?);
        if new {
            writeln!(file, "seconds,epoch,split,iteration,{}", columns.join(","))?;
            file.flush()?;
        }
        Ok(Self {
            file,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            names: HashMap::new(),
            iterations: HashMap::new(),
            start: Instant::now(),
        })
    }
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
            self.start.elapsed().as_secs_f64(),
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
