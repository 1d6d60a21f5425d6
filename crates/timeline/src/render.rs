//! Timeline → self-contained SVG.

use std::fmt::Write;

use crate::model::{Attempt, Mark, MarkKind, Micros, Outcome, Timeline, Wait};

const WIDTH: f64 = 1400.0;
const LEFT: f64 = 170.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 64.0;
const ROW: f64 = 12.0;
const LANE_PAD: f64 = 10.0;
const WAIT_ROW: f64 = 5.0;
/// Beyond this many rows the waiting lane summarises instead of drawing: a
/// picture of 10,000 overlapping waits says nothing a count does not.
const MAX_WAIT_ROWS: usize = 60;

/// Renders the timeline as an SVG document. The output depends only on the
/// input, so the same run always gives the same bytes.
pub fn render_svg(timeline: &Timeline) -> String {
    let scale = Scale::new(timeline.start, timeline.end.max(timeline.start + 1));
    let mut body = String::new();
    let mut y = TOP;
    let mut lane_spans = Vec::new();

    for lane in &timeline.lanes {
        let mut attempts: Vec<&Attempt> = timeline.attempts.iter().filter(|a| &a.lane == lane).collect();
        attempts.sort_by_key(|a| (a.start, a.job_id, a.epoch));
        let rows = pack(attempts.iter().map(|a| (a.start, a.end)));
        let height = rows.iter().copied().max().map_or(1, |r| r + 1) as f64 * ROW + LANE_PAD;
        lane_spans.push((lane.as_str(), y, height));
        lane_background(&mut body, lane, y, height);
        lane_marks(&mut body, timeline, lane, y, height, &scale);
        for (attempt, row) in attempts.iter().zip(rows) {
            attempt_bar(&mut body, attempt, y + LANE_PAD / 2.0 + row as f64 * ROW, &scale);
        }
        y += height;
    }
    let waits_top = y;
    y += waits_lane(&mut body, &timeline.waits, y, &scale);
    let plot_bottom = y;
    global_marks(&mut body, timeline, plot_bottom, &scale);

    let mut svg = String::new();
    let total_height = plot_bottom + 90.0;
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total_height:.0}" viewBox="0 0 {WIDTH} {total_height:.0}" font-family="sans-serif" font-size="11">"#
    );
    svg.push('\n');
    let _ = writeln!(
        svg,
        r##"<style>.bar{{stroke:#222;stroke-width:0.4}} .lane-label{{font-weight:bold}} .axis{{stroke:#999;stroke-width:0.5}} .wait{{fill:#e6b0aa}}</style>"##
    );
    let _ = writeln!(
        svg,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{total_height:.0}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        escape(&timeline.title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="38" fill="#555">{} attempts on {} workers, {} waits, {} marks; hover for details</text>"##,
        timeline.attempts.len(),
        timeline.lanes.len(),
        timeline.waits.len(),
        timeline.marks.len()
    );
    axis(&mut svg, &scale, TOP - 8.0, plot_bottom);
    svg.push_str(&body);
    let _ = writeln!(
        svg,
        r#"<text class="lane-label" x="8" y="{:.1}">waiting (due, not running)</text>"#,
        waits_top + 12.0
    );
    legend(&mut svg, plot_bottom + 20.0);
    svg.push_str("</svg>\n");
    svg
}

struct Scale {
    start: Micros,
    span: f64,
}

impl Scale {
    fn new(start: Micros, end: Micros) -> Self {
        Scale {
            start,
            span: (end - start) as f64,
        }
    }

    fn x(&self, t: Micros) -> f64 {
        let fraction = ((t - self.start) as f64 / self.span).clamp(0.0, 1.0);
        LEFT + fraction * (WIDTH - LEFT - RIGHT)
    }
}

/// Greedy interval packing: each interval takes the first row free at its start.
fn pack(intervals: impl Iterator<Item = (Micros, Micros)>) -> Vec<usize> {
    let mut row_ends: Vec<Micros> = Vec::new();
    intervals
        .map(|(start, end)| match row_ends.iter().position(|&e| e <= start) {
            Some(row) => {
                row_ends[row] = end;
                row
            }
            None => {
                row_ends.push(end);
                row_ends.len() - 1
            }
        })
        .collect()
}

fn lane_background(out: &mut String, lane: &str, y: f64, height: f64) {
    let _ = writeln!(
        out,
        r##"<g class="lane" data-lane="{lane}"><rect x="{LEFT}" y="{y:.1}" width="{:.1}" height="{height:.1}" fill="#f7f7f7" stroke="#ddd"/><text class="lane-label" x="8" y="{:.1}">{lane}</text></g>"##,
        WIDTH - LEFT - RIGHT,
        y + 14.0,
        lane = escape(lane)
    );
}

/// Where marks are drawn: one worker's lane, or across every lane.
struct MarkArea {
    /// Top and bottom of a span's wash.
    top: f64,
    bottom: f64,
    /// Wash opacity: lighter across every lane, where it covers other washes.
    span_opacity: &'static str,
    /// Where an instant's line starts, and where its glyph sits.
    line_top: f64,
    glyph_y: f64,
    /// Extra line attributes (dashed across lanes) and glyph size.
    line_style: &'static str,
    glyph_size: u8,
}

fn lane_marks(out: &mut String, timeline: &Timeline, lane: &str, y: f64, height: f64, scale: &Scale) {
    let area = MarkArea {
        top: y,
        bottom: y + height,
        span_opacity: "0.35",
        line_top: y,
        glyph_y: y + 10.0,
        line_style: "",
        glyph_size: 12,
    };
    for mark in timeline.marks.iter().filter(|m| m.lane.as_deref() == Some(lane)) {
        draw_mark(out, mark, &area, timeline.start, scale);
    }
}

fn global_marks(out: &mut String, timeline: &Timeline, bottom: f64, scale: &Scale) {
    let area = MarkArea {
        top: TOP,
        bottom,
        span_opacity: "0.18",
        line_top: TOP - 4.0,
        glyph_y: TOP - 6.0,
        line_style: r#" stroke-dasharray="4 3""#,
        glyph_size: 13,
    };
    for mark in timeline.marks.iter().filter(|m| m.lane.is_none()) {
        draw_mark(out, mark, &area, timeline.start, scale);
    }
}

/// A span as a wash over the area, an instant as a line with its glyph.
fn draw_mark(out: &mut String, mark: &Mark, area: &MarkArea, origin: Micros, scale: &Scale) {
    let x = scale.x(mark.at);
    let tip = tooltip(
        mark.kind.as_str(),
        mark.at,
        mark.end,
        mark.note.as_deref(),
        origin,
    );
    let kind = mark.kind.as_str();
    let colour = mark.kind.colour();
    match mark.end {
        Some(end) => {
            let _ = writeln!(
                out,
                r#"<rect class="mark {kind}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="{}"><title>{tip}</title></rect>"#,
                area.top,
                (scale.x(end) - x).max(1.0),
                area.bottom - area.top,
                area.span_opacity,
            );
        }
        None => {
            let _ = writeln!(
                out,
                r#"<g class="mark {kind}"><line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="{colour}"{} stroke-width="1.2"/><text x="{x:.1}" y="{:.1}" fill="{colour}" text-anchor="middle" font-size="{}">{}<title>{tip}</title></text></g>"#,
                area.line_top,
                area.bottom,
                area.line_style,
                area.glyph_y,
                area.glyph_size,
                mark.kind.glyph(),
            );
        }
    }
}

fn attempt_bar(out: &mut String, attempt: &Attempt, y: f64, scale: &Scale) {
    let x = scale.x(attempt.start);
    let width = (scale.x(attempt.end) - x).max(1.5);
    let note = attempt
        .note
        .as_deref()
        .map(|n| format!(" — {}", escape(n)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        r#"<rect class="bar {outcome}" data-job="{job}" data-epoch="{epoch}" x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{:.1}" fill="{colour}"><title>job {job} epoch {epoch} attempt {attempt}: {outcome} ({:.3}s){note}</title></rect>"#,
        ROW - 2.0,
        (attempt.end - attempt.start) as f64 / 1e6,
        outcome = attempt.outcome.as_str(),
        colour = attempt.outcome.colour(),
        job = attempt.job_id,
        epoch = attempt.epoch,
        attempt = attempt.attempt,
    );
}

/// Draws the waiting lane; returns its height.
fn waits_lane(out: &mut String, waits: &[Wait], y: f64, scale: &Scale) -> f64 {
    let mut sorted: Vec<&Wait> = waits.iter().collect();
    sorted.sort_by_key(|w| (w.start, w.job_id));
    let rows = pack(sorted.iter().map(|w| (w.start, w.end)));
    let used = rows.iter().copied().max().map_or(1, |r| r + 1).min(MAX_WAIT_ROWS);
    let height = used as f64 * WAIT_ROW + LANE_PAD * 2.0;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{y:.1}" width="{:.1}" height="{height:.1}" fill="#fdf2f0" stroke="#ddd"/>"##,
        WIDTH - LEFT - RIGHT
    );
    let mut hidden = 0;
    for (wait, row) in sorted.iter().zip(rows) {
        if row >= MAX_WAIT_ROWS {
            hidden += 1;
            continue;
        }
        let x = scale.x(wait.start);
        let _ = writeln!(
            out,
            r#"<rect class="wait" data-job="{job}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>job {job} waited {:.3}s: {}</title></rect>"#,
            y + LANE_PAD + row as f64 * WAIT_ROW,
            (scale.x(wait.end) - x).max(1.0),
            WAIT_ROW - 1.0,
            (wait.end - wait.start) as f64 / 1e6,
            escape(&wait.reason),
            job = wait.job_id
        );
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" fill="#555" text-anchor="end">+{hidden} more waits not drawn</text>"##,
            WIDTH - RIGHT - 4.0,
            y + height - 3.0
        );
    }
    height
}

fn axis(out: &mut String, scale: &Scale, y: f64, bottom: f64) {
    let span_secs = scale.span / 1e6;
    let step = nice_step(span_secs / 10.0);
    let mut t = 0.0;
    while t <= span_secs + 1e-9 {
        let x = scale.x(scale.start + (t * 1e6) as Micros);
        let _ = writeln!(
            out,
            r##"<line class="axis" x1="{x:.1}" x2="{x:.1}" y1="{y:.1}" y2="{bottom:.1}"/><text x="{x:.1}" y="{:.1}" fill="#555" text-anchor="middle">+{}</text>"##,
            y - 4.0,
            format_secs(t)
        );
        t += step;
    }
}

fn legend(out: &mut String, y: f64) {
    let mut x = LEFT;
    for outcome in Outcome::ALL {
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="10" fill="{}"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
            y - 9.0,
            outcome.colour(),
            x + 16.0,
            outcome.as_str()
        );
        x += 100.0;
    }
    let mut x = LEFT;
    let y = y + 20.0;
    for kind in [
        MarkKind::Crash,
        MarkKind::Restart,
        MarkKind::Pause,
        MarkKind::Partition,
        MarkKind::DatabaseRestart,
        MarkKind::Sigterm,
        MarkKind::Reap,
        MarkKind::StaleWriteRejected,
    ] {
        let glyph = if kind.glyph().is_empty() {
            "▇"
        } else {
            kind.glyph()
        };
        mark_key(out, x, y, glyph, kind);
        x += 125.0;
    }
    // The spans drawn as washes: without a key they read as unexplained colour.
    let y = y + 20.0;
    let mut x = LEFT;
    for kind in [MarkKind::ClockSkew, MarkKind::ApiOutage] {
        mark_key(out, x, y, "▇", kind);
        x += 125.0;
    }
}

/// One key entry of the legend: `glyph` in `kind`'s colour, then its name.
fn mark_key(out: &mut String, x: f64, y: f64, glyph: &str, kind: MarkKind) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" fill="{}">{glyph}</text><text x="{:.1}" y="{y:.1}">{}</text>"#,
        kind.colour(),
        x + 14.0,
        kind.as_str()
    );
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(1e-6);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn format_secs(secs: f64) -> String {
    if secs >= 120.0 {
        format!("{:.0}m{:02.0}s", (secs / 60.0).floor(), secs % 60.0)
    } else if secs.fract().abs() < 1e-9 {
        format!("{secs:.0}s")
    } else {
        format!("{secs:.2}s")
    }
}

fn tooltip(kind: &str, at: Micros, end: Option<Micros>, note: Option<&str>, origin: Micros) -> String {
    let mut tip = format!("{kind} at +{}", format_secs((at - origin) as f64 / 1e6));
    if let Some(end) = end {
        let _ = write!(tip, " until +{}", format_secs((end - origin) as f64 / 1e6));
    }
    if let Some(note) = note {
        let _ = write!(tip, ": {note}");
    }
    escape(&tip)
}

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_reuses_rows_that_are_free() {
        let rows = pack([(0, 10), (5, 15), (10, 20), (16, 30), (17, 18)].into_iter());
        assert_eq!(rows, [0, 1, 0, 1, 2]);
    }

    #[test]
    fn nice_steps_are_one_two_five() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.5), 2.0);
        assert_eq!(nice_step(33.0), 50.0);
        assert_eq!(nice_step(60.0), 100.0);
    }

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
        );
        assert_eq!(escape("a\u{0}b"), "ab");
    }
}
