"""``loadtest.profile.summarise``: py-spy's raw samples summed by function, own and inclusive."""

from __future__ import annotations

from pathlib import Path

from loadtest.profile import summarise


def test_samples_are_summed_by_function_once_per_stack(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "run (asyncio/runners.py:118);relay (gateway/api/pipeline.py:260) 3\n"
        "run (asyncio/runners.py:118);relay (gateway/api/pipeline.py:261);"
        "relay (gateway/api/pipeline.py:262) 2\n"
        "run (asyncio/runners.py:118) 5\n")
    total, own, inclusive = summarise(raw, 10)
    assert total == 10
    assert dict(own) == {"relay (pipeline.py)": 5, "run (runners.py)": 5}
    assert dict(inclusive) == {"run (runners.py)": 10, "relay (pipeline.py)": 5}
