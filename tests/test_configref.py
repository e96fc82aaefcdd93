"""docs/config.md is generated from the config schema and lists every key."""

import dataclasses
import os
import re
import subprocess
import sys

from ptncn import configref, harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "config.md")
REGENERATE = "python -m ptncn.configref > docs/config.md"


def sections(text: str) -> dict:
    """Heading -> the keys in the first column of its tables."""
    out, heading = {}, ""
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("# ").strip()
        m = re.match(r"\| `([^`]+)` \|", line)
        if m:
            out.setdefault(heading, []).append(m.group(1))
    return out


def test_docs_config_md_is_up_to_date():
    with open(DOC, encoding="utf-8") as f:
        on_disk = f.read()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    fresh = subprocess.run([sys.executable, "-m", "ptncn.configref"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert fresh == configref.render()
    assert on_disk == fresh, f"docs/config.md is stale; regenerate it: {REGENERATE}"


def test_every_key_has_a_meaning():
    assert configref.missing() == [], \
        "add the meaning of these keys to ptncn/configref.py, then run " + REGENERATE


def test_every_schema_key_appears_in_its_section():
    got = sections(configref.render())
    assert got["Top level"] == list(harness.TOP_KEYS)
    assert got["[train]"] == list(harness.TRAIN_KEYS)
    assert got["[record]"] == list(harness.RECORD_KEYS)
    assert got["[optimizer]"] == list(harness.OPTIMIZER_KEYS)
    for name in harness.TASKS:
        cls, fixed = harness._task_class(name)
        keys = harness._signature_keys(cls, exclude=("split", "data_dir", "seed", *fixed))
        assert got[f'name = "{name}"'] == list(keys)
    assert got["[model]"] == ["learner"]
    assert set(configref.builtin_learners()) >= {"ptncn", "esn", "tbptt", "spiking_ptncn"}
    for name in configref.builtin_learners():
        config_cls = harness.learner_cls(name).Config
        assert got[f'learner = "{name}"'] == list(harness.model_schema(config_cls))
        assert set(got[f'learner = "{name}"']) == {
            f.name for f in dataclasses.fields(config_cls)} - set(harness.HARNESS_FIELDS)


def test_defaults_types_and_allowed_values_come_from_the_source():
    text = configref.render()
    assert '| `batches` | int >= 1 | 100 |' in text
    assert "| `compression` | one of 'lzf', 'gzip', 'none' | \"lzf\" |" in text
    assert '| `hidden` | list of int | [1000, 1000] |' in text          # PTNCNConfig
    assert "| `engine` | one of 'fast', 'reference' | \"fast\" |" in text
    assert "| `eps` | number > 0 | adam: 1e-08, rmsprop: 1e-10 |" in text
    assert '| `path` | string | required |' in text                      # [task] array
    assert "(no description)" not in text
