//! Statistics across seeds (docs/PROTOCOL.md §4): mean, sample standard deviation, the 95% confidence interval of
//! the mean (Student's t), and Welch's t-test between two groups.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// A sample's summary.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Values summarized: the finite ones.
    pub n: usize,
    /// Arithmetic mean; NaN for n = 0.
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator); NaN for n < 2.
    pub std: f64,
    /// Half-width of the 95% confidence interval of the mean, `t(0.975, n - 1) std / sqrt(n)`; NaN for n < 2.
    pub ci95: f64,
}

/// Summarizes the finite values of `xs` (NaN and infinities are left out and not counted).
pub fn summarize(xs: &[f64]) -> Summary {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return Summary { n, mean: f64::NAN, std: f64::NAN, ci95: f64::NAN };
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Summary { n, mean, std: f64::NAN, ci95: f64::NAN };
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).map(|d| d.inverse_cdf(0.975)).unwrap_or(f64::NAN);
    Summary { n, mean, std, ci95: t * std / (n as f64).sqrt() }
}

/// Two-sided p-value of Welch's t-test for equal means (finite values only). `None` with fewer than 2 values on
/// a side. With no variance on either side the test degenerates: p = 1 for equal means, 0 otherwise.
pub fn welch_p(a: &[f64], b: &[f64]) -> Option<f64> {
    let (sa, sb) = (summarize(a), summarize(b));
    if sa.n < 2 || sb.n < 2 {
        return None;
    }
    let (va, vb) = (sa.std.powi(2) / sa.n as f64, sb.std.powi(2) / sb.n as f64);
    let se2 = va + vb;
    if se2 == 0.0 {
        return Some(if sa.mean == sb.mean { 1.0 } else { 0.0 });
    }
    let t = (sa.mean - sb.mean) / se2.sqrt();
    // Welch-Satterthwaite degrees of freedom.
    let df = se2.powi(2) / (va.powi(2) / (sa.n - 1) as f64 + vb.powi(2) / (sb.n - 1) as f64);
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some((2.0 * (1.0 - dist.cdf(t.abs()))).clamp(0.0, 1.0))
}
