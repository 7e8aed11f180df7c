"""The documentation against the code: every command and option in docs/commands.md, every path
the README, docs and committed reports name exists, and the CLI's help carries no markup."""
import argparse
import re
from pathlib import Path

import pytest

from harness.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
# A repository path as the docs write them; reports/local/ is what a user's run writes.
PATH = re.compile(r"\b((?:harness|tests|benchmarks|docs|studies|search_spaces|reports)/[A-Za-z0-9_./-]+"
                  r"\.(?:py|md|yaml|csv|png|json|c))\b")


def _commands_doc() -> dict[str, str]:
    text = (ROOT / "docs" / "commands.md").read_text()
    parts = re.split(r"^## harness (\S+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_command_and_option_is_documented():
    _, sub = build_parser()
    sections = _commands_doc()
    assert set(sections) == set(sub.choices), "docs/commands.md: one '## harness NAME' section per command"
    missing = []
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for opt in action.option_strings:
                if opt.startswith("--") and f"`{opt}" not in sections[name]:
                    missing.append(f"{name} {opt}")
    assert not missing, f"options missing from docs/commands.md: {missing}"


def test_every_subcommand_is_named_in_help_without_markup(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    _, sub = build_parser()
    assert all(name in out for name in sub.choices) and "``" not in out
    for name in sub.choices:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "``" not in capsys.readouterr().out


@pytest.mark.parametrize("doc", sorted(str(p.relative_to(ROOT)) for p in [
    ROOT / "README.md", *ROOT.glob("docs/*.md"), ROOT / "search_spaces" / "README.md",
    *ROOT.glob("reports/*/README.md"), ROOT / "reports" / "index.md", ROOT / "reports" / "bench" / "README.md"]))
def test_paths_named_in_docs_and_committed_reports_exist(doc):
    named = {m for m in PATH.findall((ROOT / doc).read_text()) if not m.startswith("reports/local/")}
    missing = sorted(m for m in named if not (ROOT / m).exists() and not (ROOT / Path(doc).parent / m).exists())
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_a_mistyped_option_gets_did_you_mean(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "studies/gsp_table1.yaml", "--scael", "quick"])
    assert e.value.code == 2
    assert "did you mean --scale?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serach", "x.yaml"])
    assert "did you mean 'search'?" in capsys.readouterr().err
