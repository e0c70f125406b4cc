"""Property tests of the configuration loader: any file gives a Config or a ConfigError.

Whatever one of the YAML files holds (random bytes, YAML-looking noise, or the shipped
catalog with a random value put at a random key path), ``load_config`` returns a valid
configuration or raises ``ConfigError`` whose every problem starts with the file's name
— never another exception. Fixed seeds, no example database, no deadline.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.config import Config, ConfigError, load_config
from tests.conftest import SHIPPED_CONFIG
from tests.strategies import FUZZ, json_like

FILES = ("providers.yaml", "routes.yaml", "settings.yaml", "schedules.yaml")
FUZZ_CONFIG = settings(FUZZ, max_examples=100)
values = json_like([10**30, -1, 0, math.inf, "Europe/Nowhere", "* * * * *", "+05:30"],
                   keys=st.text(max_size=6) | st.integers(), max_leaves=10)
yaml_noise = st.text(alphabet=st.sampled_from(list("ab1:-[]{}&*!|>#'\"\n \t.%@`?,\\\x00\x07é")),
                     max_size=120)


def _load(name: str, content: bytes) -> Config | ConfigError:
    with tempfile.TemporaryDirectory() as d:
        for f in SHIPPED_CONFIG.glob("*.yaml"):
            shutil.copy(f, Path(d) / f.name)
        (Path(d) / name).write_bytes(content)
        try:
            return load_config(d, simulate=True)
        except ConfigError as exc:
            assert exc.problems
            for problem in exc.problems:
                assert problem.startswith(name), problem
            return exc


@FUZZ_CONFIG
@given(name=st.sampled_from(FILES), content=st.binary(max_size=300))
def test_any_bytes_in_any_file(name: str, content: bytes) -> None:
    _load(name, content)


@FUZZ_CONFIG
@given(name=st.sampled_from(FILES), content=yaml_noise)
def test_yaml_looking_noise_in_any_file(name: str, content: str) -> None:
    _load(name, content.encode("utf-8"))


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    """Every key path of a loaded YAML document."""
    out = [path]
    if isinstance(node, dict):
        out += [p for k, v in node.items() for p in _paths(v, (*path, k))]
    elif isinstance(node, list):
        out += [p for i, v in enumerate(node) for p in _paths(v, (*path, i))]
    return out


SHIPPED = {name: yaml.safe_load((SHIPPED_CONFIG / name).read_text())
           for name in FILES if (SHIPPED_CONFIG / name).exists()}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_shipped_files_load(name: str) -> None:
    assert isinstance(_load(name, (SHIPPED_CONFIG / name).read_bytes()), Config)


@FUZZ_CONFIG
@given(data=st.data())
def test_a_wrong_value_at_any_key_path_is_refused_with_its_file(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(SHIPPED)))
    doc = yaml.safe_load((SHIPPED_CONFIG / name).read_text())
    path = data.draw(st.sampled_from(_paths(doc)))
    value = data.draw(values)
    if not path:
        doc = value
    else:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    _load(name, yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass"))


def test_an_inline_scheduled_job_with_yaml_dates_is_read_as_written(tmp_path: Path) -> None:
    """YAML reads ``2026-01-01`` as a date, which JSON cannot hold: the job keeps the text
    the user wrote instead of crashing the beat tick."""
    from workers.schedules import schedule_jobs

    shutil.copytree(SHIPPED_CONFIG, tmp_path / "c")
    (tmp_path / "c" / "schedules.yaml").write_text(
        "schedules:\n  daily:\n    cron: '0 6 * * *'\n    jobs:\n"
        "      - {body: {model: fast, messages: [{role: user, content: 2026-01-01}]}}\n")
    [job] = schedule_jobs(load_config(tmp_path / "c", simulate=True), "daily")
    assert job.body["messages"][0]["content"] == "2026-01-01"
