//! Charts drawn as SVG on the server: lines over time with their axes and
//! units, sparklines, and heatmaps of a distribution over time.
//!
//! Written with `maud` rather than a charting crate: the pages need three
//! shapes, each point a `<circle>` with a `<title>` (the hover read-out, no
//! script needed) and `data-` attributes the browser tests count, which a
//! plotting library's SVG back end does not give.

use maud::{Markup, html};
use serde_json::Value;

/// Okabe and Ito's palette, told apart by every kind of colour vision.
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

/// The colour of the `index`th line.
pub fn colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// What a chart's values are, for its axis and read-outs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    PerSecond,
    /// A share, shown as a percentage.
    Ratio,
    Millis,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::PerSecond => "requests/s",
            Unit::Ratio => "%",
            Unit::Millis => "ms",
        }
    }

    /// A figure of the API's answer in this unit; `–` when it has none.
    pub fn read(self, value: &Value) -> String {
        self.maybe(value.as_f64())
    }

    /// `value` in this unit; `–` when there is none.
    pub fn maybe(self, value: Option<f64>) -> String {
        value.map_or_else(|| MISSING.to_owned(), |v| self.format(v))
    }

    /// `value` as the axis and read-outs show it.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Ratio => format!("{}%", significant(value * 100.0)),
            Unit::PerSecond => format!("{}/s", significant(value)),
            Unit::Millis => format!("{} ms", significant(value)),
        }
    }
}

/// What a table shows where the API answered no figure.
const MISSING: &str = "–";

/// A figure of the API's answer without a unit; `–` when it has none.
pub fn figure(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| MISSING.to_owned(), significant)
}

/// Three significant digits at most, without trailing zeros.
pub fn significant(value: f64) -> String {
    if !value.is_finite() {
        return MISSING.to_owned();
    }
    let magnitude = value.abs();
    let decimals = if magnitude >= 100.0 || magnitude == 0.0 {
        0
    } else if magnitude >= 10.0 {
        1
    } else if magnitude >= 1.0 {
        2
    } else {
        (2 - magnitude.log10().floor() as i32).clamp(0, 6) as usize
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// One line: its name and its points (unix ms, value; `None` is a gap).
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub points: Vec<(u64, Option<f64>)>,
}

const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 28.0;

/// The time axis of a range: where `t` (unix ms) is drawn.
#[derive(Debug, Clone, Copy)]
struct Time {
    from_ms: u64,
    to_ms: u64,
}

impl Time {
    fn x(self, t: u64) -> f64 {
        let span = (self.to_ms.saturating_sub(self.from_ms)).max(1) as f64;
        LEFT + (t.saturating_sub(self.from_ms) as f64 / span).min(1.0) * (WIDTH - LEFT - RIGHT)
    }

    /// Five ticks with their labels (UTC) and how each is anchored: the
    /// first and last inside the chart.
    fn ticks(self) -> Vec<(f64, String, &'static str)> {
        let span = self.to_ms.saturating_sub(self.from_ms);
        (0..5)
            .map(|i| {
                let t = self.from_ms + span * i / 4;
                let anchor = match i {
                    0 => "start",
                    4 => "end",
                    _ => "middle",
                };
                (self.x(t), clock(t, span), anchor)
            })
            .collect()
    }
}

/// `t` as a tick reads it: the time of day, and the date for ranges over
/// a day.
pub fn clock(t_ms: u64, span_ms: u64) -> String {
    let Some(at) = i64::try_from(t_ms / 1000)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
    else {
        return String::new();
    };
    if span_ms > 86_400_000 {
        at.format("%m-%d %H:%M").to_string()
    } else {
        at.format("%H:%M").to_string()
    }
}

/// A round top for an axis holding `max`.
fn nice_top(max: f64) -> f64 {
    if max.is_nan() || max <= 0.0 || max.is_infinite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|&top| top >= max)
        .unwrap_or(10.0 * magnitude)
}

/// A chart of `lines` over `[from_ms, to_ms)`, titled, with a legend; each
/// point is a circle holding its read-out.
pub fn lines(title: &str, unit: Unit, from_ms: u64, to_ms: u64, lines: &[Line]) -> Markup {
    let time = Time { from_ms, to_ms };
    let max = lines
        .iter()
        .flat_map(|line| line.points.iter().filter_map(|(_, v)| *v))
        .fold(0.0, f64::max);
    let top = nice_top(max);
    let y = |v: f64| TOP + (1.0 - (v / top).clamp(0.0, 1.0)) * (HEIGHT - TOP - BOTTOM);
    let span = to_ms.saturating_sub(from_ms);
    html! {
        figure.chart {
            figcaption { (title) " (" (unit.label()) ")" }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(format!("{title}, {}", unit.label())) data-chart=(title) {
                @for i in 0..=4 {
                    @let value = top * f64::from(i) / 4.0;
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(value)) y2=(y(value)) {}
                    text.axis x=(LEFT - 6.0) y=(y(value) + 4.0) text-anchor="end" { (unit.format(value)) }
                }
                @for (x, label, anchor) in time.ticks() {
                    text.axis x=(x) y=(HEIGHT - 8.0) text-anchor=(anchor) { (label) }
                }
                @if lines.is_empty() {
                    text.empty x=(WIDTH / 2.0) y=(HEIGHT / 2.0) text-anchor="middle" { "no data in this range" }
                }
                @for (index, line) in lines.iter().enumerate() {
                    g.series data-series=(line.name) stroke=(colour(index)) fill=(colour(index)) {
                        @for segment in segments(&line.points) {
                            polyline fill="none" points=(segment.iter().map(|&(t, v)| format!("{:.1},{:.1}", time.x(t), y(v))).collect::<Vec<_>>().join(" ")) {}
                        }
                        @for &(t, value) in &line.points {
                            @if let Some(value) = value {
                                circle cx=(format!("{:.1}", time.x(t))) cy=(format!("{:.1}", y(value))) r="2.5" data-t=(t) data-value=(value) {
                                    title { (line.name) " · " (clock(t, span)) " · " (unit.format(value)) }
                                }
                            }
                        }
                    }
                }
            }
            @if !lines.is_empty() {
                ul.legend {
                    @for (index, line) in lines.iter().enumerate() {
                        li { span.swatch style=(format!("background:{}", colour(index))) {} (line.name) }
                    }
                }
            }
        }
    }
}

/// The runs of consecutive present points of a line.
fn segments(points: &[(u64, Option<f64>)]) -> Vec<Vec<(u64, f64)>> {
    let mut runs = vec![Vec::new()];
    for &(t, value) in points {
        match value {
            Some(v) => runs.last_mut().expect("never empty").push((t, v)),
            None if runs.last().is_some_and(|run| !run.is_empty()) => runs.push(Vec::new()),
            None => {}
        }
    }
    runs.retain(|run| run.len() > 1);
    runs
}

/// A small chart without axes: one line per series, for a table cell.
pub fn sparkline(label: &str, unit: Unit, from_ms: u64, to_ms: u64, lines: &[Line]) -> Markup {
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    let max = lines
        .iter()
        .flat_map(|line| line.points.iter().filter_map(|(_, v)| *v))
        .fold(0.0, f64::max);
    let top = nice_top(max);
    let span = to_ms.saturating_sub(from_ms).max(1) as f64;
    let x = |t: u64| (t.saturating_sub(from_ms) as f64 / span).min(1.0) * W;
    let y = |v: f64| 2.0 + (1.0 - (v / top).clamp(0.0, 1.0)) * (H - 4.0);
    html! {
        svg.spark viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(label) data-chart=(label) {
            title { (label) ", up to " (unit.format(max)) }
            @for (index, line) in lines.iter().enumerate() {
                g.series data-series=(line.name) stroke=(colour(index)) fill=(colour(index)) {
                    title { (line.name) }
                    @for segment in segments(&line.points) {
                        polyline fill="none" points=(segment.iter().map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v))).collect::<Vec<_>>().join(" ")) {}
                    }
                    @for &(t, value) in &line.points {
                        @if let Some(value) = value {
                            circle cx=(format!("{:.1}", x(t))) cy=(format!("{:.1}", y(value))) r="1.5" stroke="none" {}
                        }
                    }
                }
            }
        }
    }
}

/// A heatmap: for each step (unix ms), the count of values in each bucket
/// `(lower, upper]` of `bounds`; darker where more fell.
pub fn heatmap(
    title: &str,
    from_ms: u64,
    to_ms: u64,
    step_ms: u64,
    bounds: &[f64],
    columns: &[(u64, Vec<f64>)],
) -> Markup {
    let time = Time { from_ms, to_ms };
    let rows = bounds.len().max(1) as f64;
    let band = (HEIGHT - TOP - BOTTOM) / rows;
    let most = columns
        .iter()
        .flat_map(|(_, counts)| counts.iter().copied())
        .fold(0.0, f64::max);
    let span = to_ms.saturating_sub(from_ms);
    let label_every = (bounds.len() / 6).max(1);
    html! {
        figure.chart {
            figcaption { (title) " (ms; colour: requests)" }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) data-chart=(title) {
                @for (row, bound) in bounds.iter().enumerate() {
                    @if row % label_every == 0 {
                        text.axis x=(LEFT - 6.0) y=(HEIGHT - BOTTOM - band * row as f64 - 2.0) text-anchor="end" { "≤" (significant(*bound)) }
                    }
                }
                @for (x, label, anchor) in time.ticks() {
                    text.axis x=(x) y=(HEIGHT - 8.0) text-anchor=(anchor) { (label) }
                }
                @for (t, counts) in columns {
                    @let x = time.x(*t);
                    @let w = (time.x(t + step_ms) - x).max(1.0);
                    @for (row, count) in counts.iter().enumerate() {
                        @if *count > 0.0 {
                            rect.cell x=(format!("{x:.1}")) y=(format!("{:.1}", HEIGHT - BOTTOM - band * (row + 1) as f64)) width=(format!("{w:.1}")) height=(format!("{band:.1}"))
                                fill="#0072B2" fill-opacity=(format!("{:.2}", 0.15 + 0.85 * count / most)) data-count=(count) {
                                title { (clock(*t, span)) " · ≤" (significant(bounds[row])) " ms · " (significant(*count)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_with_three_significant_digits() {
        assert_eq!(significant(0.0), "0");
        assert_eq!(significant(123.456), "123");
        assert_eq!(significant(12.345), "12.3");
        assert_eq!(significant(1.5), "1.5");
        assert_eq!(significant(0.012345), "0.0123");
        assert_eq!(Unit::Ratio.format(0.0525), "5.25%");
        assert_eq!(nice_top(0.0), 1.0);
        assert_eq!(nice_top(3.2), 5.0);
        assert_eq!(nice_top(120.0), 200.0);
    }

    #[test]
    fn each_point_is_drawn_once_and_gaps_break_the_line() {
        let line = Line {
            name: "u1".into(),
            points: vec![
                (0, Some(1.0)),
                (10_000, Some(2.0)),
                (20_000, None),
                (30_000, Some(3.0)),
                (40_000, Some(4.0)),
            ],
        };
        let svg = lines("rate", Unit::PerSecond, 0, 50_000, &[line]).into_string();
        assert_eq!(svg.matches("<circle").count(), 4);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("data-value=\"4\""), "{svg}");
    }
}
