"""Simulated ageing cohort: real base heads, published brain and face ageing, acquisition effects.

Entry points: :func:`simulate_cohort` (a BIDS dataset on disk), :func:`sample_subject` and its
deterministic twin :func:`simulate_subject` (one subject in memory).
"""

from defacebench.simulate.dataset import sample_cohort, simulate_cohort
from defacebench.simulate.heads import BASE_HEADS, load_base_head
from defacebench.simulate.sampling import sample_subject
from defacebench.simulate.subject import simulate_subject

__all__ = ["BASE_HEADS", "load_base_head", "sample_cohort", "sample_subject", "simulate_cohort", "simulate_subject"]
