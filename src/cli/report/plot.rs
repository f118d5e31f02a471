//! The report's plots: line plots with intervals as bands, small multiples (one figure, a panel per metric), one
//! colour per estimator everywhere, axes named with their units; SVG (plotters) with a PNG beside it (resvg).

use anyhow::Context;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::Path;

/// A named series of (x, mean, error half-width) points.
pub type Series = (String, Vec<(f64, f64, f64)>);

/// A plot's x axis: its label, and whether its values are drawn on a log2 scale (K, which doubles from point to
/// point).
pub struct XAxis<'a> {
    pub label: &'a str,
    pub log2: bool,
}

impl<'a> From<&'a str> for XAxis<'a> {
    fn from(label: &'a str) -> Self {
        XAxis { label, log2: false }
    }
}

/// One panel of a figure: its title, its y axis's label and its series.
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// A metric's axis label, with its unit (docs/PROTOCOL.md §4 defines each).
pub fn metric_label(metric: &str) -> String {
    match metric {
        "dead_codes" => "dead codes (count, of K)",
        "dead_fraction" => "dead codes / K",
        "usage" => "usage (fraction of K)",
        "entropy" => "entropy (nats)",
        "perplexity" => "perplexity (codes)",
        "recon_mse" => "recon. MSE (per input dim)",
        "quant_err" => "quant. error (per latent dim)",
        "purity" => "cluster purity (fraction)",
        "subspace_err" => "subspace error (0 = recovered)",
        "batch_usage" => "batch usage (fraction of K)",
        "lloyd_dist" => "Lloyd distance (per code dim)",
        "loss" => "training loss (MSE units)",
        "steps_per_sec" => "steps per second",
        "wall_s" => "wall time (s)",
        other => other,
    }
    .to_string()
}

/// A metric's name as a panel's title.
pub fn metric_title(metric: &str) -> &str {
    match metric {
        "dead_codes" => "Dead codes",
        "dead_fraction" => "Dead codes as a fraction of K",
        "entropy" => "Code entropy",
        "perplexity" => "Perplexity",
        "recon_mse" => "Reconstruction error",
        "quant_err" => "Quantization error",
        "loss" => "Training loss",
        "lloyd_dist" => "Distance to the Lloyd fixed point",
        other => other,
    }
}

/// One colour per series name in every plot: the estimators (and variants named after them, "ste + adaptive
/// beta") in a fixed order from a colour-blind-safe palette (Okabe and Ito), other names hashed into plotters'
/// 99 colours.
pub fn series_color(name: &str) -> RGBColor {
    const OKABE_ITO: [RGBColor; 7] = [
        RGBColor(0, 114, 178),   // blue
        RGBColor(213, 94, 0),    // vermillion
        RGBColor(0, 158, 115),   // green
        RGBColor(204, 121, 167), // purple
        RGBColor(230, 159, 0),   // orange
        RGBColor(86, 180, 233),  // sky blue
        RGBColor(0, 0, 0),       // black
    ];
    let estimator = |name: &str| vqgrad::Estimator::ALL.iter().position(|e| e.name() == name);
    if let Some(i) = estimator(name) {
        return OKABE_ITO[i % OKABE_ITO.len()];
    }
    // An estimator with a codebook-collapse remedy ("ste + orthogonality 10"): the estimator's hue, lighter or
    // darker by the remedy, so that a plot groups each estimator's variants.
    const TINTS: [(&str, (u8, f64)); 9] = [
        ("stochastic", (255, 0.55)),
        ("orthogonality", (0, 0.45)),
        ("simvq", (255, 0.3)),
        ("sync", (0, 0.25)),
        ("affine", (255, 0.75)),
        ("alternate", (0, 0.65)),
        ("fsq", (128, 0.6)),
        ("cosine", (128, 0.3)),
        ("lookup", (0, 0.8)),
    ];
    if let Some((base, rest)) = name.split_once(" + ")
        && let (Some(i), Some((_, (to, amount)))) = (estimator(base), TINTS.iter().find(|(k, _)| rest.contains(k)))
    {
        let RGBColor(r, g, b) = OKABE_ITO[i % OKABE_ITO.len()];
        let mix = |c: u8| (c as f64 + (*to as f64 - c as f64) * amount).round() as u8;
        return RGBColor(mix(r), mix(g), mix(b));
    }
    // FNV-1a: the same name gets the same colour in every plot and every run of the tool.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let c = Palette99::pick(hash as usize % 99).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

/// The series with x moved to log2 where the axis asks for it.
fn on_axis(series: &[Series], x_axis: &XAxis<'_>) -> Vec<Series> {
    if !x_axis.log2 {
        return series.to_vec();
    }
    series.iter().map(|(n, p)| (n.clone(), p.iter().map(|&(x, y, e)| (x.log2(), y, e)).collect())).collect()
}

/// The padded x and y ranges of every finite point with its interval; None when nothing is finite.
fn ranges(series: &[Series]) -> Option<(std::ops::Range<f64>, std::ops::Range<f64>)> {
    let points = series.iter().flat_map(|(_, p)| p.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, e) in points {
        let e = if e.is_finite() { e } else { 0.0 };
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y - e), y1.max(y + e));
    }
    if x0 > x1 {
        return None;
    }
    let pad = |a: f64, b: f64| if b > a { (b - a) * 0.05 } else { a.abs().max(1.0) * 0.05 };
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    Some(((x0 - px)..(x1 + px), (y0 - py)..(y1 + py)))
}

/// Draws one panel on `area`: axes with `x_axis` and `y_label`, each series as a line with its interval as a band
/// (an error bar where a series has one point), and with `legend` the series' names inside the panel.
fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    x_axis: &XAxis<'_>,
    y_label: &str,
    series: &[Series],
    legend: bool,
) -> anyhow::Result<()> {
    let series = on_axis(series, x_axis);
    let Some((x, y)) = ranges(&series) else {
        return Ok(()); // nothing finite to draw
    };
    let (x0, x1) = (x.start, x.end);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 19))
        .margin(12)
        .x_label_area_size(46)
        .y_label_area_size(74)
        .build_cartesian_2d(x, y)?;
    let x_ticks = |v: &f64| if x_axis.log2 { format!("{}", 2f64.powf(*v).round()) } else { format!("{v}") };
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_axis.label).y_desc(y_label);
    mesh.label_style(("sans-serif", 14)).axis_desc_style(("sans-serif", 15));
    mesh.bold_line_style(RGBColor(205, 205, 205)).light_line_style(RGBColor(240, 240, 240));
    if x_axis.log2 {
        mesh.x_label_formatter(&x_ticks).x_labels(((x1 - x0).round() as usize + 1).clamp(2, 12));
    }
    mesh.draw()?;
    draw_series(&mut chart, &series)?;
    if legend {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Each series in its colour: the interval as a translucent band under the line, the line, and its points.
fn draw_series(chart: &mut Chart<'_, '_>, series: &[Series]) -> anyhow::Result<()> {
    for (name, pts) in series {
        let color = series_color(name).to_rgba();
        let pts: Vec<(f64, f64, f64)> = pts.iter().copied().filter(|p| p.1.is_finite()).collect();
        let err = |p: &(f64, f64, f64)| if p.2.is_finite() && p.2 > 0.0 { p.2 } else { 0.0 };
        if pts.len() > 1 && pts.iter().any(|p| err(p) > 0.0) {
            // The interval as a band under the line: upper edge left to right, lower edge back.
            let edge = pts.iter().map(|p| (p.0, p.1 + err(p))).chain(pts.iter().rev().map(|p| (p.0, p.1 - err(p))));
            chart.draw_series(std::iter::once(Polygon::new(edge.collect::<Vec<_>>(), color.mix(0.18).filled())))?;
        } else {
            let bars = pts.iter().filter(|p| err(p) > 0.0);
            chart.draw_series(bars.map(|&(x, y, e)| ErrorBar::new_vertical(x, y - e, y, y + e, color.filled(), 6)))?;
        }
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&(x, y, _)| Circle::new((x, y), 3, color.filled())))?;
    }
    Ok(())
}

/// A line plot: one series per name of (x, mean, error half-width), each in its [`series_color`], the interval
/// drawn as a band (an error bar where a series has one point). Writes `stem.svg` and `stem.png`; returns the
/// markdown that shows it, or says that nothing was finite to draw (and writes nothing).
pub fn line_plot<'a>(
    stem: &Path,
    title: &str,
    x_axis: impl Into<XAxis<'a>>,
    y_label: &str,
    series: &[Series],
) -> anyhow::Result<String> {
    let x_axis = x_axis.into();
    if ranges(&on_axis(series, &x_axis)).is_none() {
        return Ok(nothing_to_draw(title));
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        draw_panel(&root, title, &x_axis, y_label, series, true)?;
        root.present()?;
    }
    write_svg_and_png(stem, &svg, title)
}

/// Small multiples: one figure titled `title` with a panel per [`Panel`] (two columns), sharing `x_axis` and one
/// legend of every series name above the panels, so that a setting's curves read at one glance. Writes `stem.svg`
/// and `stem.png`; returns the markdown that shows it, or says that nothing was finite to draw (and writes
/// nothing). A panel with nothing finite is left out.
pub fn panels_plot(stem: &Path, title: &str, x_axis: XAxis<'_>, panels: &[Panel]) -> anyhow::Result<String> {
    let panels: Vec<&Panel> = panels.iter().filter(|p| ranges(&on_axis(&p.series, &x_axis)).is_some()).collect();
    if panels.is_empty() {
        return Ok(nothing_to_draw(title));
    }
    let names = first_seen(panels.iter().flat_map(|p| p.series.iter().map(|(n, _)| n.as_str())));
    let svg = figure(title, &names, panels.len(), |area, i| {
        let p = panels[i];
        draw_panel(area, &p.title, &x_axis, &p.y_label, &p.series, false)
    })?;
    write_svg_and_png(stem, &svg, title)
}

/// A named point: its name, (x, its interval's half-width) and (y, likewise).
pub type Point = (String, (f64, f64), (f64, f64));

/// One panel of points: its title and its points.
pub struct PointPanel {
    pub title: String,
    pub points: Vec<Point>,
}

/// Small multiples of points with their intervals in x and y (a cross per point, in its name's colour), one panel
/// per [`PointPanel`] with `labels` (x, y) and one legend above: a comparison at one glance. Writes `stem.svg` and
/// `stem.png`; returns the markdown that shows it, or says that nothing was finite to draw.
pub fn points_plot(stem: &Path, title: &str, labels: (&str, &str), panels: &[PointPanel]) -> anyhow::Result<String> {
    let finite = |p: &&PointPanel| p.points.iter().any(|(_, x, y)| x.0.is_finite() && y.0.is_finite());
    let panels: Vec<&PointPanel> = panels.iter().filter(finite).collect();
    if panels.is_empty() {
        return Ok(nothing_to_draw(title));
    }
    let names = first_seen(panels.iter().flat_map(|p| p.points.iter().map(|(n, ..)| n.as_str())));
    let svg = figure(title, &names, panels.len(), |area, i| draw_points(area, panels[i], labels))?;
    write_svg_and_png(stem, &svg, title)
}

/// One panel of [`points_plot`].
fn draw_points(area: &DrawingArea<SVGBackend<'_>, Shift>, panel: &PointPanel, labels: (&str, &str)) -> Plot {
    let err = |e: f64| if e.is_finite() { e } else { 0.0 };
    // The points' extents, as series for `ranges`: each point's x interval at its y with its y interval.
    let series: Vec<Series> = panel
        .points
        .iter()
        .map(|(n, x, y)| (n.clone(), vec![(x.0 - err(x.1), y.0, err(y.1)), (x.0 + err(x.1), y.0, err(y.1))]))
        .collect();
    let Some((xr, yr)) = ranges(&series) else { return Ok(()) };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 19))
        .margin(12)
        .x_label_area_size(46)
        .y_label_area_size(74)
        .build_cartesian_2d(xr, yr)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(labels.0).y_desc(labels.1).label_style(("sans-serif", 14)).axis_desc_style(("sans-serif", 15));
    mesh.bold_line_style(RGBColor(205, 205, 205)).light_line_style(RGBColor(240, 240, 240)).draw()?;
    for (name, (x, ex), (y, ey)) in panel.points.iter().filter(|(_, x, y)| x.0.is_finite() && y.0.is_finite()) {
        let color = series_color(name).to_rgba();
        let (ex, ey) = (err(*ex), err(*ey));
        let style = color.stroke_width(2);
        chart.draw_series([ErrorBar::new_vertical(*x, y - ey, *y, y + ey, style, 8)])?;
        chart.draw_series([ErrorBar::new_horizontal(*y, x - ex, *x, x + ex, style, 8)])?;
        chart.draw_series([Circle::new((*x, *y), 5, color.filled())])?;
    }
    Ok(())
}

type Plot = anyhow::Result<()>;

/// The distinct names in the order they first appear: a figure's legend.
fn first_seen<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for name in names {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// A figure of `count` panels (two columns) under a title and one legend of `names` in their colours; `panel`
/// draws panel `i` on its area. Returns the SVG.
fn figure(
    title: &str,
    names: &[&str],
    count: usize,
    panel: impl Fn(&DrawingArea<SVGBackend<'_>, Shift>, usize) -> Plot,
) -> anyhow::Result<String> {
    let cols = if count > 1 { 2 } else { 1 };
    let rows = count.div_ceil(cols);
    let width = 1000i32;
    // The legend: a line in each name's colour and the name, in rows that wrap at the figure's width (text widths
    // estimated per character).
    let (mut x, mut y, mut at) = (16i32, 52i32, Vec::new());
    for name in names {
        let step = 60 + name.chars().count() as i32 * 8;
        if x + step > width && x > 16 {
            (x, y) = (16, y + 26);
        }
        at.push((x, y));
        x += step;
    }
    let (header, row_height) = ((y + 22) as u32, 340u32);
    let mut svg = String::new();
    {
        let size = (width as u32, header + rows as u32 * row_height);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, body) = root.split_vertically(header);
        top.draw(&Text::new(title.to_string(), (16, 10), ("sans-serif", 21).into_font()))?;
        for (name, &(x, y)) in names.iter().zip(&at) {
            let color = series_color(name);
            top.draw(&PathElement::new(vec![(x, y), (x + 26, y)], color.stroke_width(4)))?;
            top.draw(&Text::new(name.to_string(), (x + 32, y - 8), ("sans-serif", 16).into_font()))?;
        }
        let areas = body.split_evenly((rows, cols));
        for (i, area) in areas.iter().enumerate().take(count) {
            panel(area, i)?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// Writes `stem.svg` and `stem.png`; returns the markdown image of the SVG, `title` its alt text.
fn write_svg_and_png(stem: &Path, svg: &str, title: &str) -> anyhow::Result<String> {
    let file = stem.with_extension("svg");
    std::fs::write(&file, svg)?;
    svg_to_png(svg, &stem.with_extension("png"))?;
    let name = file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(format!("![{}]({name})", title.replace(['[', ']'], "")))
}

/// What the report says in place of a plot whose series have no finite point (every run diverged, say).
fn nothing_to_draw(title: &str) -> String {
    format!("*{title}: no finite values to plot.*")
}

/// A chart with a caption, axes named `labels` (x, y) and no mesh on `area`, for panels drawn by hand.
pub fn chart_on<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    labels: (&str, &str),
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> anyhow::Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(48)
        .build_cartesian_2d(x, y)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_mesh().label_style(("sans-serif", 13)).axis_desc_style(("sans-serif", 14));
    mesh.x_desc(labels.0).y_desc(labels.1).draw()?;
    Ok(chart)
}

/// Renders SVG text to a PNG with resvg (system fonts for the labels; without any, the text is left out).
pub fn svg_to_png(svg: &str, path: &Path) -> anyhow::Result<()> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // The plots ask for "sans-serif": map it to a face this machine has (DejaVu Sans where present).
    let families: Vec<String> =
        fonts.faces().filter_map(|f| f.families.first().map(|(name, _)| name.clone())).collect();
    if let Some(family) = families.iter().find(|f| f.as_str() == "DejaVu Sans").or(families.first()) {
        fonts.set_sans_serif_family(family.clone());
    }
    let tree = usvg::Tree::from_str(svg, &options)?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).context("allocating the PNG's pixels")?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.save_png(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
