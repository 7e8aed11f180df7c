"""Study files (YAML) -> validated, scale-resolved trial specs, one module a job:

- ``schema``: the pydantic models of a study and a trial, and their error messages;
- ``expand``: a study's rows (variants, grid, landscape, combined rows) and the dict merge;
- ``checks``: components against the registries (names, signatures, values, the model built once);
- ``layout``: what the report renders (axes, baseline, the claims' sides);
- ``load``: reading a file (bounded YAML, ``extends``, plugins) and ``--data-root``;
- ``resolve``: a study at a scale -> trial specs and their hashes.

Every error names the field, the bad value and what is allowed (``ConfigError``, exit code 2).
"""
from harness.config.schema import (BEST, ClaimCfg, CombinedCfg, ComponentCfg, ConfigError, CostCfg, DataCfg,
                                   DeepSupervisionCfg, ExpectedValue, LayoutCfg, ModelCfg, PLAIN_NAME,
                                   ParamGroupCfg, ResourcesCfg, SCALES, ScaleCfg, Side, StudyCfg, SubmissionCfg,
                                   TaskScaleCfg, TrainCfg, TrialSpec, VariantCfg, Strict)
from harness.config.expand import merge, table_rows, variants
from harness.config.checks import (build_checked_model, check_data, check_exclusive, check_model, check_patch_fits,
                                   check_train)
from harness.config.layout import check_layout, claim_members
from harness.config.load import (MAX_YAML_NODES, MODULE_NAME, PORTABLE_DATA_PARAMS, with_data_roots, import_plugins,
                                 load_study, load_yaml)
from harness.config.resolve import combined_keys, config_hash, resolve, resolve_variant, spec_hash

__all__ = ["BEST", "ClaimCfg", "CombinedCfg", "ComponentCfg", "ConfigError", "CostCfg", "DataCfg",
           "DeepSupervisionCfg", "ExpectedValue", "LayoutCfg", "MAX_YAML_NODES", "MODULE_NAME",
           "ModelCfg", "PLAIN_NAME", "PORTABLE_DATA_PARAMS", "ParamGroupCfg", "ResourcesCfg", "SCALES", "ScaleCfg",
           "Side", "StudyCfg", "SubmissionCfg", "TaskScaleCfg", "TrainCfg", "TrialSpec", "VariantCfg", "Strict",
           "merge", "with_data_roots", "build_checked_model", "check_data", "check_exclusive", "check_layout", "check_model",
           "check_patch_fits", "check_train", "claim_members", "combined_keys", "config_hash", "import_plugins",
           "load_study", "load_yaml", "resolve", "resolve_variant", "spec_hash", "table_rows", "variants"]
