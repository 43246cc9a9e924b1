//! The SVG plot of `segpool bench`: ns per pair by size, log scale, one panel per pattern.

use std::path::Path;

use plotters::prelude::*;

use super::alloc::Pattern;
use super::report::Report;
use super::table::size_text;

/// A fixed color per allocator, so the panels and runs read alike.
fn color(name: &str) -> RGBColor {
    match name {
        "segpool" => RGBColor(214, 39, 40),
        "floor" => RGBColor(127, 127, 127),
        "glibc" => RGBColor(31, 119, 180),
        "mimalloc" => RGBColor(44, 160, 44),
        "jemalloc" => RGBColor(148, 103, 189),
        "mmap" => RGBColor(140, 86, 75),
        _ => RGBColor(23, 190, 207),
    }
}

pub fn svg(report: &Report, path: &Path) -> Result<(), crate::Error> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let all: Vec<f64> = report
        .rows
        .iter()
        .flat_map(|r| r.cells.0.iter().map(|c| c.median_ns))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = all.iter().copied().fold(f64::MAX, f64::min).max(0.1) * 0.7;
    let hi = all.iter().copied().fold(f64::MIN, f64::max) * 1.5;
    if all.is_empty() {
        return Err("nothing to plot".into());
    }

    let root = SVGBackend::new(path, (1500, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (title, rest) = root.split_vertically(40);
    let (body, legend) = rest.split_vertically(440);
    title
        .titled(
            "segpool vs peers: ns per allocate+release pair (median, log scale; lower is better)",
            ("sans-serif", 20),
        )
        .map_err(|e| fail(&e))?;
    let panels = body.split_evenly((1, Pattern::ALL.len()));
    for (panel, pattern) in panels.iter().zip(Pattern::ALL) {
        let rows: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.pattern == pattern)
            .collect();
        // x is the row's index: one tick per size, evenly spaced.
        let sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
        let x_hi = sizes.len().saturating_sub(1) as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(pattern.label(), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.3..(x_hi + 0.3), (lo..hi).log_scale())
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_labels(2 * sizes.len() + 2)
            .x_label_formatter(&|x| {
                let r = x.round();
                match sizes.get(r as usize) {
                    Some(&s) if (x - r).abs() < 0.01 && r >= 0.0 => size_text(s),
                    _ => String::new(),
                }
            })
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.1}")
                }
            })
            .x_desc("size")
            .y_desc("ns per pair")
            .draw()
            .map_err(|e| fail(&e))?;
        for name in &report.allocators {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .enumerate()
                .filter_map(|(i, r)| Some((i as f64, r.ns(name)?)))
                .filter(|(_, v)| *v > 0.0)
                .collect();
            if points.is_empty() {
                continue;
            }
            let c = color(name);
            let width = if name == "segpool" { 3 } else { 1 };
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(width)))
                .map_err(|e| fail(&e))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| fail(&e))?;
        }
    }
    // One legend for all panels, below them, so it never hides a line.
    for (i, name) in report.allocators.iter().enumerate() {
        let x = 80 + 170 * i as i32;
        let c = color(name);
        legend
            .draw(&PathElement::new(
                vec![(x, 20), (x + 30, 20)],
                c.stroke_width(3),
            ))
            .map_err(|e| fail(&e))?;
        legend
            .draw(&Text::new(name.as_str(), (x + 38, 13), ("sans-serif", 16)))
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
