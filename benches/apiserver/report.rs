//! The measurements, their quantiles, and the Markdown tables the benchmark prints (the
//! ones BENCHMARKS.md carries).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::setup::{SETUPS, Setup, WEBHOOKS};
use crate::workload::{KINDS, Path, Phase, Write};

/// Concurrent clients measured.
pub const CLIENTS: [usize; 3] = [1, 10, 50];

/// One setup, number of clients and kind of write.
pub type Key = (Setup, usize, Write, Path);

/// Every latency of one key, over all measured rounds, in ascending order.
#[derive(Default)]
pub struct Cell {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Cell {
    fn add(&mut self, phase: Phase) {
        self.latencies.extend(phase.latencies);
        self.latencies.sort();
        self.wall += phase.wall;
    }

    /// The `q` quantile (nearest rank) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let rank =
            ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1].as_secs_f64() * 1e3
    }

    pub fn mean_ms(&self) -> f64 {
        let total: Duration = self.latencies.iter().sum();
        total.as_secs_f64() * 1e3 / self.latencies.len() as f64
    }

    /// Writes answered per second of wall time.
    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// CPU time and memory of one webhook process in one of its setups.
#[derive(Default, Clone, Copy)]
pub struct ProcessUse {
    /// CPU time while its own setup was measured.
    pub cpu_in_own_setup: Duration,
    /// Writes measured in its own setup.
    pub writes_in_own_setup: usize,
    /// Resident memory right after its setup's writes in the last round.
    pub resident_mib: f64,
    /// The process's peak resident memory at the end of the measured writes.
    pub peak_resident_mib: f64,
}

#[derive(Default)]
pub struct Results {
    cells: BTreeMap<Key, Cell>,
}

impl Results {
    pub fn add(&mut self, key: Key, phase: Phase) {
        self.cells.entry(key).or_default().add(phase);
    }

    pub fn cell(&self, key: Key) -> Option<&Cell> {
        self.cells.get(&key).filter(|c| !c.latencies.is_empty())
    }

    /// Latency quantiles and throughput of every setup, one row per clients and kind.
    pub fn latency_table(&self) -> String {
        let mut out = String::from("| clients | write | path |");
        for setup in SETUPS {
            let _ = write!(out, " {} p50 / p95 / p99 |", setup.label());
        }
        let _ = writeln!(
            out,
            " writes/s ({}) |\n|---|---|---|{}---|",
            SETUPS.map(Setup::label).join(" / "),
            "---|".repeat(SETUPS.len())
        );
        for clients in CLIENTS {
            for (write, path) in KINDS {
                let mut row = format!("| {clients} | {} | {} |", write.label(), path.label());
                let mut rates = Vec::new();
                for setup in SETUPS {
                    match self.cell((setup, clients, write, path)) {
                        Some(c) => {
                            let _ = write!(
                                row,
                                " {:.2} / {:.2} / {:.2} ms |",
                                c.quantile_ms(0.5),
                                c.quantile_ms(0.95),
                                c.quantile_ms(0.99)
                            );
                            rates.push(format!("{:.0}", c.throughput()));
                        }
                        None => {
                            row.push_str(" – |");
                            rates.push("–".into());
                        }
                    }
                }
                let _ = writeln!(row, " {} |", rates.join(" / "));
                out.push_str(&row);
            }
        }
        out
    }

    /// What each webhook adds to a write (with it minus without it) and how many times
    /// each Kyverno setup's addition is countersign's.
    pub fn added_table(&self) -> String {
        let mut out = String::from("| clients | write | path |");
        for setup in WEBHOOKS {
            let _ = write!(out, " {} adds p50 / p99 / mean |", setup.label());
        }
        for setup in KYVERNO {
            let _ = write!(out, " {} ÷ countersign (mean) |", setup.label());
        }
        let _ = writeln!(
            out,
            "\n|---|---|---|{}",
            "---|".repeat(WEBHOOKS.len() + KYVERNO.len())
        );
        for clients in CLIENTS {
            for (write, path) in KINDS {
                let mut row = format!("| {clients} | {} | {} |", write.label(), path.label());
                for setup in WEBHOOKS {
                    match self.added((setup, clients, write, path)) {
                        Some(added) => {
                            let _ = write!(
                                row,
                                " {:+.2} / {:+.2} / {:+.2} ms |",
                                added[0], added[1], added[2]
                            );
                        }
                        None => row.push_str(" – |"),
                    }
                }
                let countersign = self.added((Setup::Countersign, clients, write, path));
                for setup in KYVERNO {
                    let cell = match (self.added((setup, clients, write, path)), countersign) {
                        (Some(kyverno), Some(countersign)) => {
                            ratio(setup, kyverno[2], countersign[2])
                        }
                        _ => "–".to_string(),
                    };
                    let _ = write!(row, " {cell} |");
                }
                let _ = writeln!(out, "{row}");
            }
        }
        out
    }

    /// The mean added latency of `setup` over every cell (each cell weighing the same);
    /// none unless every cell was measured.
    pub fn overall_added_mean(&self, setup: Setup) -> Option<f64> {
        let mut sum = 0.0;
        let mut cells = 0;
        for clients in CLIENTS {
            for (write, path) in KINDS {
                sum += self.added((setup, clients, write, path))?[2];
                cells += 1;
            }
        }
        Some(sum / cells as f64)
    }

    /// Added milliseconds of one webhook's cell at p50, p99 and on average.
    fn added(&self, key: Key) -> Option<[f64; 3]> {
        let (_, clients, write, path) = key;
        let bare = self.cell((Setup::Bare, clients, write, path))?;
        let cell = self.cell(key)?;
        Some([
            cell.quantile_ms(0.5) - bare.quantile_ms(0.5),
            cell.quantile_ms(0.99) - bare.quantile_ms(0.99),
            cell.mean_ms() - bare.mean_ms(),
        ])
    }
}

/// The Kyverno setups, each compared with countersign.
pub const KYVERNO: [Setup; 2] = [Setup::KyvernoCpol, Setup::KyvernoVpol];

/// `kyverno ÷ countersign`, or why there is none: an addition within the noise (at or
/// under zero) has no meaningful ratio.
pub fn ratio(setup: Setup, kyverno: f64, countersign: f64) -> String {
    if countersign <= 0.0 {
        "– (countersign within noise)".to_string()
    } else if kyverno <= 0.0 {
        format!("– ({} within noise)", setup.label())
    } else {
        format!("{:.1}×", kyverno / countersign)
    }
}

/// One row of the processes table: a webhook process in one of its setups.
pub struct ProcessRow {
    pub setup: Setup,
    pub process: String,
    pub used: ProcessUse,
}

/// The processes table: memory after the setup's writes and the process's peak, CPU per
/// thousand writes in the setup (one Kyverno process serves both of its setups).
pub fn resources_table(rows: &[ProcessRow]) -> String {
    let mut out = String::from(
        "| setup | process | resident memory after its writes | peak resident memory of the process | CPU per 1,000 writes in its setup |\n|---|---|---|---|---|\n",
    );
    for row in rows {
        let used = row.used;
        let per_thousand = if used.writes_in_own_setup == 0 {
            "–".to_string()
        } else {
            format!(
                "{:.0} ms",
                used.cpu_in_own_setup.as_secs_f64() * 1e3 * 1000.0
                    / used.writes_in_own_setup as f64
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} MiB | {:.0} MiB | {per_thousand} |",
            row.setup.label(),
            row.process,
            used.resident_mib,
            used.peak_resident_mib
        );
    }
    out
}
