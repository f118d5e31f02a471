//! The codebook-collapse remedies' settings (docs/PROTOCOL.md §6.6): which combinations make sense, and the same run
//! without them. The remedies themselves live with the engines' steps; this is what the settings share.

use super::TrainConfig;
use crate::error::{Error, Result};
use crate::model::{BetaSchedule, CodebookInit, CodebookMode, LatentMap, Reparam, Sampling};

/// The largest weight a remedy takes (the penalty's lambda, the synchronized update's nu, the affine map's a).
const MAX_WEIGHT: f64 = 1e6;

impl TrainConfig {
    /// Refuses the remedies' settings that are out of range or make no sense together, each with the reason.
    pub(super) fn check_remedies(&self) -> Result<()> {
        if self.sampling == Sampling::Stochastic {
            if self.estimator.samples_gumbel() {
                return Err(Error::Input(format!(
                    "--sampling stochastic: the {} estimator samples its codes already (its own relaxation)",
                    self.estimator
                )));
            }
            if self.levels > 1 {
                return Err(Error::Input("--sampling stochastic takes one level (levels 1)".into()));
            }
        }
        let grad_one_level = self.codebook_mode == CodebookMode::Grad && self.levels == 1;
        let weights = [("orth-weight", self.orth_weight), ("sync-nu", self.sync_nu), ("affine-lr", self.affine_lr)];
        for (flag, weight) in weights {
            if !(weight.is_finite() && (0.0..=MAX_WEIGHT).contains(&weight)) {
                return Err(Error::Input(format!("{flag} must be in [0, {MAX_WEIGHT:e}], got {weight}")));
            }
            if weight > 0.0 && !grad_one_level {
                return Err(Error::Input(format!(
                    "--{flag} acts through the codebook's gradient: it takes --codebook-mode grad and one level"
                )));
            }
        }
        let lr = self.alternate_lr;
        if !(lr.is_finite() && lr > 0.0 && lr <= MAX_WEIGHT) {
            return Err(Error::Input(format!("alternate-lr must be in (0, {MAX_WEIGHT:e}], got {lr}")));
        }
        if self.codebook_mode == CodebookMode::Alternate && self.levels > 1 {
            return Err(Error::Input("--codebook-mode alternate takes one level (levels 1)".into()));
        }
        if self.codebook_mode != CodebookMode::Alternate && lr != super::default_alternate_lr() {
            return Err(Error::Input(
                "--alternate-lr is the step of --codebook-mode alternate: give that mode with it".into(),
            ));
        }
        self.check_fsq()?;
        if self.lookup_width > 0 && self.lookup_width <= self.latent {
            return Err(Error::Input(format!(
                "--lookup-dim {} must be below the encoder's width {} (--latent)",
                self.latent, self.lookup_width
            )));
        }
        let alone = self.reparam == Reparam::None && self.affine_lr == 0.0 && self.fsq_levels.is_empty();
        if self.cosine && !(grad_one_level && self.reset_dead == 0 && alone) {
            return Err(Error::Input(
                "--cosine learns unit codes through their normalization: it takes --codebook-mode grad, one level, \
                 no --reset-dead, no --reparam, no --affine-lr and no --fsq-levels"
                    .into(),
            ));
        }
        let plain_codebook = grad_one_level && self.reset_dead == 0;
        if self.reparam == Reparam::Simvq && !(plain_codebook && self.codebook_init != CodebookInit::Kmeans) {
            return Err(Error::Input(
                "--reparam simvq learns its codebook through a linear layer from its own random basis: it takes \
                 --codebook-mode grad, one level, no --reset-dead and no k-means init"
                    .into(),
            ));
        }
        if self.affine_lr > 0.0 && !(plain_codebook && self.reparam == Reparam::None) {
            return Err(Error::Input(
                "--affine-lr learns the codes under a shared scale and shift: it takes --codebook-mode grad, one \
                 level, no --reset-dead and no --reparam"
                    .into(),
            ));
        }
        Ok(())
    }

    /// FSQ's settings: levels of 2 to 2^16, one per latent dimension, whose product is K; the fixed codebook with
    /// no commitment term, the estimators that act on one code, and no other remedy. A fixed codebook without FSQ
    /// (a frozen initial codebook) takes one level and no resets.
    fn check_fsq(&self) -> Result<()> {
        let fsq = &self.fsq_levels;
        if fsq.is_empty() {
            if self.codebook_mode == CodebookMode::Fixed && (self.reset_dead > 0 || self.levels > 1) {
                return Err(Error::Input("--codebook-mode fixed takes one level and no --reset-dead".into()));
            }
            return Ok(());
        }
        if let Some(l) = fsq.iter().find(|&&l| !(2..=65536).contains(&l)) {
            return Err(Error::Input(format!("fsq-levels must each be 2 to 65536, got {l}")));
        }
        let k = fsq.iter().try_fold(1u64, |k, &l| k.checked_mul(l as u64).filter(|&k| k <= u32::MAX as u64));
        if fsq.len() != self.latent as usize || k != Some(self.codes as u64) {
            return Err(Error::Input(format!(
                "fsq-levels {fsq:?} need latent m = {} (one level per dimension) and K = their product; got m = {} \
                 and K = {}",
                fsq.len(),
                self.latent,
                self.codes
            )));
        }
        let plain = TrainConfig { fsq_levels: Vec::new(), codebook_mode: CodebookMode::Grad, ..self.clone() };
        let alone = plain.without_remedies() == plain
            && self.codebook_mode == CodebookMode::Fixed
            && self.beta == 0.0
            && self.beta_schedule == BetaSchedule::Fixed
            && crate::Estimator::ROW.contains(&self.estimator)
            && self.levels == 1
            && self.reset_dead == 0
            && self.codebook_init != CodebookInit::Kmeans;
        if !alone {
            return Err(Error::Input(
                "--fsq-levels quantizes to a fixed grid with no commitment term: it takes --codebook-mode fixed, \
                 --beta 0, ste, rotation, rotation-trick or diveq, one level, no --reset-dead, no k-means init and \
                 no other remedy"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The same run without any remedy: the protocol's nearest codes and plain codebook, the lookup's width as m.
    /// FSQ's fixed mode and beta 0 stay (they are settings of their own).
    pub fn without_remedies(&self) -> TrainConfig {
        TrainConfig {
            sampling: Sampling::Nearest,
            orth_weight: 0.0,
            reparam: Reparam::None,
            sync_nu: 0.0,
            affine_lr: 0.0,
            codebook_mode: match self.codebook_mode {
                CodebookMode::Alternate => CodebookMode::Grad,
                mode => mode,
            },
            alternate_lr: super::default_alternate_lr(),
            fsq_levels: Vec::new(),
            cosine: false,
            lookup_width: 0,
            latent: if self.lookup_width > 0 { self.lookup_width } else { self.latent },
            ..self.clone()
        }
    }

    /// FSQ's levels for K codes (a power of 2 from 2) when none are given: levels of 4, with a 2 when log2 K is odd,
    /// so that each dimension carries 2 bits (docs/PROTOCOL.md §6.6).
    pub fn fsq_auto_levels(k: u32) -> Result<Vec<u32>> {
        if !(k >= 2 && k.is_power_of_two()) {
            return Err(Error::Input(format!("--fsq-levels auto takes K a power of 2 from 2, got {k}")));
        }
        let bits = k.trailing_zeros();
        let mut levels = vec![4; (bits / 2) as usize];
        if bits % 2 == 1 {
            levels.push(2);
        }
        Ok(levels)
    }

    /// This run with FSQ's `levels`: one latent dimension per level, the fixed grid, and no commitment term.
    pub fn with_fsq(&self, levels: Vec<u32>) -> TrainConfig {
        let latent = levels.len() as u32;
        TrainConfig { fsq_levels: levels, latent, codebook_mode: CodebookMode::Fixed, beta: 0.0, ..self.clone() }
    }

    /// The map of the encodings before the quantizer.
    pub fn latent_map(&self) -> LatentMap {
        match (self.cosine, self.fsq_levels.is_empty()) {
            (true, _) => LatentMap::Unit,
            (false, true) => LatentMap::None,
            (false, false) => LatentMap::Fsq(self.fsq_levels.clone()),
        }
    }

    /// Whether the run uses any remedy.
    pub fn has_remedy(&self) -> bool {
        *self != self.without_remedies()
    }
}
