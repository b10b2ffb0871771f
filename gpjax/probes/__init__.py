"""Probes of trained models: accuracy under channel orderings (`permutation`)."""

from gpjax.probes.permutation import (check_orderings, make_probe, probe, probe_logits,
                                      probe_sums, random_orderings, summarize)
