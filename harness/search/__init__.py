"""``harness search``: NAS-style search over a study's axes (Optuna through Ray Tune).

A search space (``search_spaces/*.yaml``) names a base study (data, model, training,
scales) and the knobs to search, with plain distributions. Constraints are met by
construction: a ``groups.<stage>`` knob offers only the spatial groups that divide
that stage's feature size at the search's patch. A choice option may name another
registered ``model`` with its parameters (a search across families); a knob with
``when: {model: ...}`` is asked only of trials of those models (define-by-run). The Optuna study lives in a
JournalStorage file (or an RDB URL), so a search resumes and can be shared; every
trial is also an MLflow child run. Results: the Pareto set as a table and a plot, and
each Pareto point as a ready study variant for ``harness run``.

The package by job: ``schema`` (the file's fields), ``space`` (``Space``: knobs to trials),
``samplers`` (Optuna's samplers and storage, warm start, trials added back from MLflow),
``outputs`` (Pareto files, export, confirmation, hypervolume) and ``drive`` (the command).
"""

from harness.search.drive import SearchOptions, confirm_front, run_search
from harness.search.outputs import export_study, write_pareto
from harness.search.samplers import make_sampler, sampler_name
from harness.search.schema import SamplerCfg, SearchCfg, encode
from harness.search.space import Space

__all__ = ["SamplerCfg", "SearchCfg", "SearchOptions", "Space", "confirm_front", "encode", "export_study", "make_sampler", "run_search",
           "sampler_name", "write_pareto"]
