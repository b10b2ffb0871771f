"""CNN backbones with selectable padding, and the paper's classifier heads."""

from gpjax.models.classifier import BACKBONES, HEADS, Classifier, check_ordering, random_ordering
from gpjax.models.padding import PADDINGS, PaddedConv
