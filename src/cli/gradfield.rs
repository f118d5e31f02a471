//! `vqgrad gradfield` (E2): a 2-D model (d = m = 2, K = 4), trained briefly; at a grid of latent points, the
//! descent direction -dL/dz of every estimator, drawn over the codebook's Voronoi cells.
//!
//! The target of a grid point z is the sample the encoder maps to it, x = W_e^{-1} (z - b_e), so each point is a
//! real (one-sample) training case: q = the nearest code, xhat = W_d q + b_d, g = dL_rec/dq~ = 2/d W_d^T (xhat - x),
//! and dL/dz = E(g, z, q) + 2 beta / m (z - q).

use super::report::chart_on;
use plotters::prelude::*;
use serde_json::json;
use std::path::PathBuf;
use vqgrad::Estimator;
use vqgrad::data::DataSpec;
use vqgrad::gpu::GpuOptions;
use vqgrad::reference::{assign_f64, estimator_row};
use vqgrad::train::Engine;
use vqgrad::train::TrainConfig;

#[derive(clap::Args, Debug)]
pub struct GradfieldArgs {
    /// Training steps before drawing (0: the model at initialization).
    #[arg(long, default_value_t = 200)]
    pub steps: u32,
    /// Grid points per side.
    #[arg(long, default_value_t = 21)]
    pub grid: u32,
    /// Commitment weight beta.
    #[arg(long, default_value_t = 0.25)]
    pub beta: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Directory for gradfield.svg, gradfield.png and gradfield.json.
    #[arg(long, default_value = "gradfield")]
    pub out: PathBuf,
    #[command(flatten)]
    pub engine: super::EngineArgs,
}

/// The field of one estimator: -dL/dz at every grid point.
pub struct Field {
    pub estimator: Estimator,
    pub directions: Vec<[f64; 2]>,
}

/// Everything the plot and the JSON hold.
pub struct GradField {
    pub w_enc: [f64; 4],
    pub b_enc: [f64; 2],
    pub w_dec: [f64; 4],
    pub b_dec: [f64; 2],
    pub codebook: Vec<[f64; 2]>,
    pub points: Vec<[f64; 2]>,
    pub targets: Vec<[f64; 2]>,
    pub index: Vec<u32>,
    pub fields: Vec<Field>,
    pub beta: f64,
}

fn mat_vec(w: &[f64; 4], v: [f64; 2]) -> [f64; 2] {
    [w[0] * v[0] + w[1] * v[1], w[2] * v[0] + w[3] * v[1]]
}

/// The most grid points a side (the field and its drawing hold side^2 arrows per estimator).
const MAX_GRID: u32 = 1000;

/// The field on a `side x side` grid spanning the codes (and a margin), from a linear 2-D model's parameters
/// (flat layout: W_e, b_e, W_d, b_d) and codebook.
pub fn compute(params: &[f64], codebook: &[f64], side: u32, beta: f64) -> anyhow::Result<GradField> {
    let w_enc = [params[0], params[1], params[2], params[3]];
    let b_enc = [params[4], params[5]];
    let w_dec = [params[6], params[7], params[8], params[9]];
    let b_dec = [params[10], params[11]];
    let det = w_enc[0] * w_enc[3] - w_enc[1] * w_enc[2];
    if det.abs() < 1e-12 {
        anyhow::bail!("the encoder is singular (det {det:e}): no sample maps to a given latent point");
    }
    let inv = [w_enc[3] / det, -w_enc[1] / det, -w_enc[2] / det, w_enc[0] / det];
    let codes: Vec<[f64; 2]> = codebook.chunks(2).map(|c| [c[0], c[1]]).collect();
    let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
    for c in &codes {
        for a in 0..2 {
            lo[a] = lo[a].min(c[a]);
            hi[a] = hi[a].max(c[a]);
        }
    }
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-3);
    let (lo, hi) = ([lo[0] - 0.5 * span, lo[1] - 0.5 * span], [hi[0] + 0.5 * span, hi[1] + 0.5 * span]);
    let side = side.max(2);
    let at = |a: usize, i: u32| lo[a] + (hi[a] - lo[a]) * i as f64 / (side - 1) as f64;
    let points: Vec<[f64; 2]> =
        (0..side).flat_map(|j| (0..side).map(move |i| (i, j))).map(|(i, j)| [at(0, i), at(1, j)]).collect();
    let flat: Vec<f64> = points.iter().flat_map(|p| p.to_vec()).collect();
    let index = assign_f64(&flat, codebook, 2).index;
    let targets: Vec<[f64; 2]> = points.iter().map(|z| mat_vec(&inv, [z[0] - b_enc[0], z[1] - b_enc[1]])).collect();
    let (d, m) = (2.0, 2.0);
    let fields = Estimator::ROW
        .into_iter()
        .map(|estimator| {
            let directions = points
                .iter()
                .zip(&targets)
                .zip(&index)
                .map(|((z, x), &a)| {
                    let q = codes[a as usize];
                    let xhat = {
                        let v = mat_vec(&w_dec, q);
                        [v[0] + b_dec[0], v[1] + b_dec[1]]
                    };
                    let r = [2.0 / d * (xhat[0] - x[0]), 2.0 / d * (xhat[1] - x[1])];
                    let g = [w_dec[0] * r[0] + w_dec[2] * r[1], w_dec[1] * r[0] + w_dec[3] * r[1]]; // W_d^T r
                    let e = estimator_row(estimator, &g, z, &q);
                    let c = 2.0 * beta / m;
                    [-(e[0] + c * (z[0] - q[0])), -(e[1] + c * (z[1] - q[1]))]
                })
                .collect();
            Field { estimator, directions }
        })
        .collect();
    Ok(GradField { w_enc, b_enc, w_dec, b_dec, codebook: codes, points, targets, index, fields, beta })
}

impl GradField {
    /// Per estimator: the mean cosine between -dL/dz and q - z, and the share of points whose arrow, followed for
    /// half a grid step, stays in its own Voronoi cell.
    pub fn summary(&self, step: f64) -> Vec<(Estimator, f64, f64)> {
        let flat: Vec<f64> = self.codebook.iter().flat_map(|c| c.to_vec()).collect();
        self.fields
            .iter()
            .map(|f| {
                let (mut cos_sum, mut n_cos, mut inside) = (0.0, 0usize, 0usize);
                for ((z, dir), &a) in self.points.iter().zip(&f.directions).zip(&self.index) {
                    let q = self.codebook[a as usize];
                    let v = [q[0] - z[0], q[1] - z[1]];
                    let (nd, nv) = (dir[0].hypot(dir[1]), v[0].hypot(v[1]));
                    if nd > 0.0 && nv > 0.0 {
                        cos_sum += (dir[0] * v[0] + dir[1] * v[1]) / (nd * nv);
                        n_cos += 1;
                    }
                    let moved = if nd > 0.0 { [z[0] + step * dir[0] / nd, z[1] + step * dir[1] / nd] } else { *z };
                    if assign_f64(&moved, &flat, 2).index[0] == a {
                        inside += 1;
                    }
                }
                (f.estimator, cos_sum / n_cos.max(1) as f64, inside as f64 / self.points.len() as f64)
            })
            .collect()
    }

    pub fn to_json(&self, config: &TrainConfig) -> serde_json::Value {
        json!({
            "description": "E2: -dL/dz per estimator at latent grid points; target x = W_e^-1 (z - b_e); \
                dL/dz = E(g, z, q) + 2 beta/m (z - q), g = 2/d W_d^T (W_d q + b_d - x); matrices row-major (out x in)",
            "config": config,
            "model": { "w_enc": self.w_enc, "b_enc": self.b_enc, "w_dec": self.w_dec, "b_dec": self.b_dec, "beta": self.beta },
            "codebook": self.codebook,
            "points": self.points,
            "targets": self.targets,
            "index": self.index,
            "neg_grad": self.fields.iter().map(|f| (f.estimator.name().to_string(), json!(f.directions))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// One panel per estimator: Voronoi cells coloured, arrows for the directions (scaled to the grid step), codes as
/// black dots.
fn draw(field: &GradField, svg_path: &std::path::Path) -> anyhow::Result<String> {
    let (x0, x1) = field.points.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p[0]), a.1.max(p[0])));
    let (y0, y1) = field.points.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p[1]), a.1.max(p[1])));
    let side = (field.points.len() as f64).sqrt().round().max(2.0);
    let step = (x1 - x0) / (side - 1.0);
    let flat: Vec<f64> = field.codebook.iter().flat_map(|c| c.to_vec()).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1200, 340)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, field.fields.len()));
        for (panel, f) in panels.iter().zip(&field.fields) {
            let (x, y) = ((x0 - step)..(x1 + step), (y0 - step)..(y1 + step));
            // The encoder's 2-D output, in the data's own (unitless) coordinates.
            let mut chart = chart_on(panel, f.estimator.name(), ("z1 (latent)", "z2 (latent)"), x, y)?;
            // Voronoi cells: a fine raster of the nearest code.
            let cells = 60;
            let (cw, ch) = ((x1 - x0 + 2.0 * step) / cells as f64, (y1 - y0 + 2.0 * step) / cells as f64);
            let raster: Vec<(f64, f64, u32)> = (0..cells * cells)
                .map(|e| {
                    let (cx, cy) = (x0 - step + (e % cells) as f64 * cw, y0 - step + (e / cells) as f64 * ch);
                    (cx, cy, assign_f64(&[cx + cw / 2.0, cy + ch / 2.0], &flat, 2).index[0])
                })
                .collect();
            chart.draw_series(raster.iter().map(|&(cx, cy, k)| {
                Rectangle::new([(cx, cy), (cx + cw, cy + ch)], Palette99::pick(k as usize).mix(0.25).filled())
            }))?;
            chart.draw_series(field.points.iter().zip(&f.directions).map(|(z, d)| {
                let n = d[0].hypot(d[1]);
                let (dx, dy) = if n > 0.0 { (0.8 * step * d[0] / n, 0.8 * step * d[1] / n) } else { (0.0, 0.0) };
                PathElement::new(vec![(z[0], z[1]), (z[0] + dx, z[1] + dy)], BLACK.stroke_width(1))
            }))?;
            chart.draw_series(field.points.iter().zip(&f.directions).map(|(z, d)| {
                let n = d[0].hypot(d[1]);
                let tip =
                    if n > 0.0 { (z[0] + 0.8 * step * d[0] / n, z[1] + 0.8 * step * d[1] / n) } else { (z[0], z[1]) };
                Circle::new(tip, 2, BLACK.filled())
            }))?;
            chart.draw_series(field.codebook.iter().map(|c| Circle::new((c[0], c[1]), 5, RED.filled())))?;
        }
        root.present()?;
    }
    std::fs::write(svg_path, &svg)?;
    Ok(svg)
}

/// Trains the 2-D model, computes the field and writes `gradfield.svg`, `.png` and `.json` into `args.out`.
/// Returns per estimator the mean cosine to q - z and the share of arrows that stay in their own cell.
pub fn generate(engine: &Engine, args: &GradfieldArgs) -> anyhow::Result<Vec<(Estimator, f64, f64)>> {
    if !(2..=MAX_GRID).contains(&args.grid) {
        return Err(
            vqgrad::Error::Input(format!("--grid must be 2 to {MAX_GRID} points a side, got {}", args.grid)).into()
        );
    }
    super::output::ensure_dir(&args.out, "--out")?;
    let config = TrainConfig {
        data: DataSpec::Gaussian { dim: 2 },
        latent: 2,
        codes: 4,
        beta: args.beta,
        steps: args.steps.max(1),
        eval_every: args.steps.max(1),
        seed: args.seed,
        ..TrainConfig::default()
    };
    config.validate()?;
    let data = engine.load_data(&config)?;
    let layout = config.shape(&data).layout();
    let (params, codebook) = if args.steps == 0 {
        let (p, c) = vqgrad::train::initial_state(&config, &layout);
        (vqgrad::reference::to_f64(&p), vqgrad::reference::to_f64(&c))
    } else {
        let mut trainer = engine.trainer(std::slice::from_ref(&config), std::slice::from_ref(&data))?;
        trainer.train_steps(args.steps)?;
        trainer.read_states_f64()?.swap_remove(0)
    };
    let field = compute(&params, &codebook, args.grid, args.beta)?;
    let step = (field.points[1][0] - field.points[0][0]).abs();
    let svg = draw(&field, &args.out.join("gradfield.svg"))?;
    super::report::svg_to_png(&svg, &args.out.join("gradfield.png"))?;
    let mut json = field.to_json(&config);
    let summary = field.summary(step / 2.0);
    json["summary"] = summary
        .iter()
        .map(|(e, cos, inside)| {
            (e.name().to_string(), json!({ "mean_cos_to_code": cos, "share_into_own_cell": inside }))
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    std::fs::write(args.out.join("gradfield.json"), serde_json::to_string_pretty(&json)? + "\n")?;
    Ok(summary)
}

pub fn run(options: &GpuOptions, args: &GradfieldArgs) -> anyhow::Result<()> {
    let summary = generate(&super::train::engine(options, &args.engine)?, args)?;
    println!("{:<16} {:>22} {:>26}", "estimator", "mean cos(-dL/dz, q-z)", "arrows into their own cell");
    for (e, cos, inside) in summary {
        println!("{:<16} {:>22.4} {:>26.4}", e.name(), cos, inside);
    }
    eprintln!("wrote {}", args.out.join("gradfield.svg").display());
    Ok(())
}
