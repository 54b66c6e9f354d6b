//! The measurements, their quantiles, and the Markdown tables the benchmark prints (the
//! ones BENCHMARKS.md carries).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::setup::{SETUPS, Setup};
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

/// CPU time and memory of one webhook process.
#[derive(Default, Clone, Copy)]
pub struct ProcessUse {
    /// CPU time while its own setup was measured.
    pub cpu_in_own_setup: Duration,
    /// Writes measured in its own setup.
    pub writes_in_own_setup: usize,
    pub resident_mib: f64,
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
        let mut out = String::from(
            "| clients | write | path | no webhook p50 / p95 / p99 | countersign p50 / p95 / p99 | Kyverno p50 / p95 / p99 | writes/s (none / countersign / Kyverno) |\n|---|---|---|---|---|---|---|\n",
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
    /// Kyverno's addition is countersign's.
    pub fn added_table(&self) -> String {
        let mut out = String::from(
            "| clients | write | path | countersign adds p50 / p99 / mean | Kyverno adds p50 / p99 / mean | Kyverno ÷ countersign (mean) |\n|---|---|---|---|---|---|\n",
        );
        for clients in CLIENTS {
            for (write, path) in KINDS {
                let Some(added) = self.added(clients, write, path) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "| {clients} | {} | {} | {:+.2} / {:+.2} / {:+.2} ms | {:+.2} / {:+.2} / {:+.2} ms | {} |",
                    write.label(),
                    path.label(),
                    added.countersign[0],
                    added.countersign[1],
                    added.countersign[2],
                    added.kyverno[0],
                    added.kyverno[1],
                    added.kyverno[2],
                    ratio(added.kyverno[2], added.countersign[2]),
                );
            }
        }
        out
    }

    /// The mean added latency over every cell (each cell weighing the same), per webhook.
    pub fn overall_added_mean(&self) -> Option<(f64, f64)> {
        let mut sums = (0.0, 0.0);
        let mut cells = 0;
        for clients in CLIENTS {
            for (write, path) in KINDS {
                let added = self.added(clients, write, path)?;
                sums.0 += added.countersign[2];
                sums.1 += added.kyverno[2];
                cells += 1;
            }
        }
        Some((sums.0 / cells as f64, sums.1 / cells as f64))
    }

    fn added(&self, clients: usize, write: Write, path: Path) -> Option<Added> {
        let bare = self.cell((Setup::Bare, clients, write, path))?;
        let countersign = self.cell((Setup::Countersign, clients, write, path))?;
        let kyverno = self.cell((Setup::Kyverno, clients, write, path))?;
        let minus = |cell: &Cell| {
            [
                cell.quantile_ms(0.5) - bare.quantile_ms(0.5),
                cell.quantile_ms(0.99) - bare.quantile_ms(0.99),
                cell.mean_ms() - bare.mean_ms(),
            ]
        };
        Some(Added {
            countersign: minus(countersign),
            kyverno: minus(kyverno),
        })
    }
}

/// Added milliseconds at p50, p99 and on average.
struct Added {
    countersign: [f64; 3],
    kyverno: [f64; 3],
}

/// `a ÷ b`, or why there is none: an addition within the noise (at or under zero) has no
/// meaningful ratio.
pub fn ratio(kyverno: f64, countersign: f64) -> String {
    if countersign <= 0.0 {
        "– (countersign within noise)".to_string()
    } else if kyverno <= 0.0 {
        "– (Kyverno within noise)".to_string()
    } else {
        format!("{:.1}×", kyverno / countersign)
    }
}

/// The resources table: memory now and at peak, CPU per thousand writes in its own setup.
pub fn resources_table(uses: &[(&str, ProcessUse)]) -> String {
    let mut out = String::from(
        "| process | resident memory | peak resident memory | CPU per 1,000 writes in its setup |\n|---|---|---|---|\n",
    );
    for (name, used) in uses {
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
            "| {name} | {:.0} MiB | {:.0} MiB | {per_thousand} |",
            used.resident_mib, used.peak_resident_mib
        );
    }
    out
}
