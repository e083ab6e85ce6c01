//! What a run reports: medians, Markdown tables and SVG charts, written
//! into docs/BENCHMARKS.md between a scenario's markers together with the
//! machine and the exact command.

use std::io::Write;
use std::path::Path;

use crate::load::{LoadResult, Target};

/// The median of one figure over several runs (the upper middle one of an
/// even count).
pub fn median<T>(runs: &[T], figure: impl Fn(&T) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(figure).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Bars of memory per idle connection, as SVG.
pub fn memory_svg(rows: &[(Target, f64, f64, f64)], connections: usize) -> String {
    let max = rows.iter().map(|r| r.1).fold(1.0_f64, f64::max);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"{}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"20\" font-size=\"14\">Server memory per idle connection at {connections} connections (RSS)</text>\n",
        50 + rows.len() * 36
    );
    for (i, (target, rss, ..)) in rows.iter().enumerate() {
        let y = 40 + i * 36;
        let width = 420.0 * rss / max;
        let color = if target.is_ssehub() {
            "#4f46e5"
        } else {
            "#98a2b3"
        };
        svg.push_str(&format!(
            "<text x=\"10\" y=\"{}\">{}</text><rect x=\"80\" y=\"{y}\" width=\"{width:.1}\" height=\"24\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{}\">{:.2} KiB</text>\n",
            y + 17,
            target.name(),
            86.0 + width,
            y + 17,
            rss / 1024.0
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Per-target figures, as a Markdown table.
pub fn load_table(results: &[LoadResult], resume: bool) -> String {
    let mut out = String::from(
        "| target | subscribers | events published | deliveries | deliveries/s | CPU s per million deliveries | of which kernel | p50 ms | p99 ms | p99.9 ms | lost | duplicated | out of order |",
    );
    if resume {
        out.push_str(" reconnected |");
    }
    out.push('\n');
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if resume {
        out.push_str("---:|");
    }
    out.push('\n');
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.0}% | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            r.target.name(),
            r.subscribers,
            r.published,
            r.delivered,
            r.deliveries_per_second,
            r.cpu_seconds_per_million,
            r.kernel_share * 100.0,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.lost,
            r.duplicated,
            r.out_of_order
        ));
        if resume {
            out.push_str(&format!(" {} |", r.reconnected));
        }
        out.push('\n');
    }
    out
}

/// A latency-distribution chart (percentile on a log scale) as SVG.
pub fn latency_svg(results: &[LoadResult], title: &str) -> String {
    let (w, h, left, bottom) = (760.0, 360.0, 100.0, 40.0);
    let colors = ["#98a2b3", "#4f46e5", "#f79009", "#12b76a"];
    let quantiles: Vec<f64> = (0..=60)
        .map(|i| 1.0 - 10f64.powf(-(i as f64) / 15.0))
        .collect();
    let curves: Vec<Vec<(f64, f64)>> = results
        .iter()
        .map(|r| {
            let total: u64 = r.buckets.iter().map(|(_, c)| c).sum();
            quantiles
                .iter()
                .map(|&q| {
                    let mut seen = 0;
                    let target = (q * total as f64).ceil() as u64;
                    let value = r
                        .buckets
                        .iter()
                        .find(|(_, c)| {
                            seen += c;
                            seen >= target.max(1)
                        })
                        .map_or(0, |(v, _)| *v);
                    (q, value as f64 / 1000.0)
                })
                .collect()
        })
        .collect();
    let max_ms = curves
        .iter()
        .flatten()
        .map(|(_, v)| *v)
        .fold(1.0_f64, f64::max);
    let x = |q: f64| left + (-(1.0 - q).max(1e-4).log10() / 4.0) * (w - left - 20.0);
    let y = |ms: f64| h - bottom - (ms / max_ms) * (h - bottom - 30.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"14\">{title}</text>\n"
    );
    for (label, q) in [
        ("p50", 0.5),
        ("p90", 0.9),
        ("p99", 0.99),
        ("p99.9", 0.999),
        ("p99.99", 0.9999),
    ] {
        let px = x(q);
        svg.push_str(&format!(
            "<line x1=\"{px:.1}\" y1=\"30\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n",
            h - bottom,
            h - bottom + 16.0
        ));
    }
    for i in 0..=4 {
        let ms = max_ms * i as f64 / 4.0;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{ms:.0} ms</text>\n",
            left - 6.0,
            y(ms) + 4.0
        ));
    }
    for (i, (curve, result)) in curves.iter().zip(results).enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<String> = curve
            .iter()
            .map(|(q, v)| format!("{:.1},{:.1}", x(*q), y(*v)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{}</text>\n",
            points.join(" "),
            left + 10.0,
            44.0 + 16.0 * i as f64,
            result.target.name()
        ));
    }
    svg.push_str("</svg>\n");
    svg
}
/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`
/// with the results, the machine and the exact command.
pub fn write_section(path: &Path, name: &str, results: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (open, close) = (
        format!("<!-- bench:{name} -->"),
        format!("<!-- /bench:{name} -->"),
    );
    let command: Vec<String> = std::env::args().collect();
    let body = format!(
        "{open}\nMeasured {} on {}.\n\nCommand: `{}`\n\n{results}{close}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        machine(),
        command.join(" ").replace(
            &std::env::current_exe()?.display().to_string(),
            "ssehub-bench"
        ),
    );
    let updated = match (text.find(&open), text.find(&close)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{body}{}", &text[..start], &text[end + close.len()..])
        }
        _ => format!("{text}\n{body}\n"),
    };
    let mut file = std::fs::File::create(path)?;
    file.write_all(updated.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}

/// CPU model, cores, memory and kernel, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = status_kib(&meminfo, "MemTotal:").unwrap_or(0) as f64 / (1024.0 * 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {memory_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}
/// A `KEY: N kB` line of a /proc status or meminfo file, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
