"""``harness report``: a study's runs from MLflow -> the paper's table, judged claims, statistics,
plots; one module a job: ``runs`` (loading), ``claims`` (statistics and verdicts), ``tables`` (the
paper's layout and the formats), ``plots``, ``write`` (the report folder and the index), ``plan``
(``harness plan``: the seeds each claim needs and their hours)."""
from harness.report.runs import StudyRuns, evaluations, load_runs, wall_time
from harness.report.claims import (CLAIM_COLUMNS, UNIT, claim_id, claims_markdown,
                                   claims_table, comparisons, judge_claim, md_text, paired_difference, paired_test,
                                   paper_effect, summarise)
from harness.report.tables import (FORMATS, check_pinned, cost_table, layout_metrics, layout_table,
                                   layout_values, stats_table, verify)
from harness.report.plots import axis_curves, pareto_front, plots
from harness.report.write import write_index, write_report

__all__ = ["CLAIM_COLUMNS", "FORMATS", "StudyRuns", "UNIT", "axis_curves",
           "check_pinned", "claim_id", "claims_markdown", "claims_table", "comparisons",
           "cost_table", "evaluations", "judge_claim", "layout_metrics", "layout_table", "layout_values", "load_runs",
           "md_text", "paired_difference", "paired_test", "paper_effect", "pareto_front", "plots", "stats_table",
           "summarise", "verify", "wall_time", "write_index", "write_report"]
