//! The SVG in BENCHMARKS.md: write latency against concurrent clients for the four
//! setups, one panel per kind of write, p50 as solid lines and p99 as dashed ones.

use std::path::Path as FilePath;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::report::{CLIENTS, Results};
use crate::setup::{SETUPS, Setup};
use crate::workload::KINDS;

fn color(setup: Setup) -> RGBColor {
    match setup {
        Setup::Bare => RGBColor(110, 110, 110),
        Setup::Countersign => RGBColor(31, 119, 180),
        Setup::KyvernoCpol => RGBColor(230, 120, 20),
        Setup::KyvernoVpol => RGBColor(148, 70, 180),
    }
}

pub fn write_svg(path: &FilePath, results: &Results, title: &str) -> Result<()> {
    let root = SVGBackend::new(path, (1200, 860)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| anyhow!("{e}"))?;
    let (low, high) = bounds(results);
    for (area, (write, path)) in root.split_evenly((2, 2)).iter().zip(KINDS) {
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("Deployment {} ({} path)", write.label(), path.label()),
                ("sans-serif", 17),
            )
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(60)
            .build_cartesian_2d((0.8f64..65f64).log_scale(), (low..high).log_scale())
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("concurrent clients")
            .y_desc("latency (ms)")
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y}"))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for setup in SETUPS {
            let points = |q: f64| -> Vec<(f64, f64)> {
                CLIENTS
                    .iter()
                    .filter_map(|&c| {
                        results
                            .cell((setup, c, write, path))
                            .map(|cell| (c as f64, cell.quantile_ms(q)))
                    })
                    .collect()
            };
            if points(0.5).is_empty() {
                continue;
            }
            let style = color(setup);
            chart
                .draw_series(LineSeries::new(points(0.5), style.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(format!("{} p50", setup.label()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], style.stroke_width(2))
                });
            chart
                .draw_series(
                    points(0.5)
                        .into_iter()
                        .map(|p| Circle::new(p, 3, style.filled())),
                )
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .draw_series(DashedLineSeries::new(
                    points(0.99),
                    6,
                    4,
                    style.stroke_width(1),
                ))
                .map_err(|e| anyhow!("{e}"))?
                .label(format!("{} p99", setup.label()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], style.stroke_width(1))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// The latency axis: the decades from the fastest p50 to the slowest p99.
fn bounds(results: &Results) -> (f64, f64) {
    let mut low = f64::MAX;
    let mut high = f64::MIN;
    for setup in SETUPS {
        for clients in CLIENTS {
            for (write, path) in KINDS {
                if let Some(cell) = results.cell((setup, clients, write, path)) {
                    low = low.min(cell.quantile_ms(0.5));
                    high = high.max(cell.quantile_ms(0.99));
                }
            }
        }
    }
    if low > high {
        return (0.1, 100.0);
    }
    // Whole decades, so that the log axis is labelled at 1, 10, 100 … ms.
    (
        10f64.powf(low.log10().floor()),
        10f64.powf(high.log10().ceil()),
    )
}
