//! The codebook-collapse remedies' settings (docs/PROTOCOL.md §6.6): which combinations make sense, and the same run
//! without them. The remedies themselves live with the engines' steps; this is what the settings share.

use super::TrainConfig;
use crate::error::{Error, Result};
use crate::model::{CodebookInit, CodebookMode, Reparam, Sampling};

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
            return Err(Error::Input("--alternate-lr is the step of --codebook-mode alternate, not set".into()));
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

    /// The same run without any remedy: the protocol's nearest codes and plain codebook.
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
            ..self.clone()
        }
    }

    /// Whether the run uses any remedy.
    pub fn has_remedy(&self) -> bool {
        *self != self.without_remedies()
    }
}
