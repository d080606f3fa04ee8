"""``jopt.contrib``: the names of ``optax.contrib``, so ``optax.contrib.<name>`` code switches by the import.

Most names here are also top-level ``jopt`` names; ``acprop``,
``scale_by_acprop``, ``momo``, ``momo_adam`` and their states are only here, as in
optax. ``reduce_on_plateau`` is optax's transform (``factor`` first), i.e.
:func:`jopt.schedules.scale_by_plateau`; the top-level ``jopt.reduce_on_plateau``
is the learning-rate form of the same logic. Each optimizer module adds its
names below as it lands.
"""

from jopt.schedules.plateau import ScaleByPlateauState as ReduceLROnPlateauState
from jopt.schedules.plateau import scale_by_plateau as reduce_on_plateau
from jopt.transforms.normalization import NormalizeState as NormalizeState
from jopt.transforms.schedule_free import ScheduleFreeState as ScheduleFreeState
from jopt.transforms.schedule_free import schedule_free as schedule_free
from jopt.transforms.schedule_free import schedule_free_eval_params as schedule_free_eval_params
from jopt.optimizers.schedule_free import schedule_free_adamw as schedule_free_adamw
from jopt.optimizers.schedule_free import schedule_free_sgd as schedule_free_sgd
from jopt.transforms.ema_mixture import ScaleByAdemamixState as ScaleByAdemamixState
from jopt.transforms.ema_mixture import ScaleBySimplifiedAdEMAMixState as ScaleBySimplifiedAdEMAMixState
from jopt.transforms.ema_mixture import scale_by_ademamix as scale_by_ademamix
from jopt.transforms.ema_mixture import scale_by_simplified_ademamix as scale_by_simplified_ademamix
from jopt.transforms.decorrelated_moments import scale_by_adopt as scale_by_adopt
from jopt.optimizers.momentum_variants import ademamix as ademamix
from jopt.optimizers.momentum_variants import simplified_ademamix as simplified_ademamix
from jopt.optimizers.momentum_variants import adopt as adopt
from jopt.transforms.sam import SAMState as SAMState
from jopt.transforms.sam import normalize as normalize
from jopt.transforms.sam import sam as sam
from jopt.transforms.second_order import HutchinsonState as HutchinsonState
from jopt.transforms.second_order import SophiaState as SophiaState
from jopt.transforms.second_order import (
    hutchinson_estimator_diag_hessian as hutchinson_estimator_diag_hessian,
)  # noqa: E501
from jopt.optimizers.second_order import sophia as sophia
from jopt.transforms.dual_averaging import MadgradState as MadgradState
from jopt.transforms.dual_averaging import scale_by_madgrad as scale_by_madgrad
from jopt.optimizers.dual_averaging import madgrad as madgrad
from jopt.transforms.low_rank import GaLoreDimensionNumbers as GaLoreDimensionNumbers
from jopt.transforms.low_rank import GaLoreState as GaLoreState
from jopt.transforms.low_rank import scale_by_galore as scale_by_galore
from jopt.optimizers.low_rank import galore as galore
from jopt.transforms.distance_estimates import DoGState as DoGState
from jopt.transforms.distance_estimates import DoWGState as DoWGState
from jopt.transforms.learning_rate_free import COCOBState as COCOBState
from jopt.transforms.learning_rate_free import scale_by_cocob as scale_by_cocob
from jopt.transforms.learning_rate_free import MechanicState as MechanicState
from jopt.transforms.learning_rate_free import mechanize as mechanize
from jopt.optimizers.learning_rate_free import DAdaptAdamWState as DAdaptAdamWState
from jopt.optimizers.learning_rate_free import ProdigyState as ProdigyState
from jopt.optimizers.learning_rate_free import cocob as cocob
from jopt.optimizers.learning_rate_free import dadapt_adamw as dadapt_adamw
from jopt.optimizers.learning_rate_free import dog as dog
from jopt.optimizers.learning_rate_free import dowg as dowg
from jopt.optimizers.learning_rate_free import prodigy as prodigy
from jopt.optimizers.muon import muon as muon
from jopt.transforms.muon import MuonDimensionNumbers as MuonDimensionNumbers
from jopt.transforms.muon import MuonState as MuonState
from jopt.transforms.muon import scale_by_muon as scale_by_muon
from jopt.optimizers.momentum_models import MomoAdamState as MomoAdamState
from jopt.optimizers.momentum_models import MomoState as MomoState
from jopt.optimizers.momentum_models import momo as momo
from jopt.optimizers.momentum_models import momo_adam as momo_adam
from jopt.transforms.privacy import DifferentiallyPrivateAggregateState as DifferentiallyPrivateAggregateState
from jopt.transforms.privacy import differentially_private_aggregate as differentially_private_aggregate
from jopt.transforms.privacy import dpsgd as dpsgd
from jopt.transforms.complex_valued import SplitRealAndImaginaryArrays as SplitRealAndImaginaryArrays
from jopt.transforms.complex_valued import SplitRealAndImaginaryState as SplitRealAndImaginaryState
from jopt.transforms.complex_valued import split_real_and_imaginary as split_real_and_imaginary
from jopt.transforms.centered_belief import scale_by_acprop as scale_by_acprop
from jopt.optimizers.centered_belief import acprop as acprop
