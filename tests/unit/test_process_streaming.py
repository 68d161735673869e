"""run(..., on_line=...) streams merged output line by line."""

from __future__ import annotations

import pytest

from pylima import process
from pylima.errors import CommandError, LimaError


def test_lines_arrive_in_order_with_stderr_merged() -> None:
    lines: list[str] = []
    res = process.run(["sh", "-c", "echo one; echo two >&2; echo three"], on_line=lines.append)
    assert lines == ["one", "two", "three"]
    assert res.returncode == 0 and res.stdout == ""


def test_failure_carries_the_tail() -> None:
    with pytest.raises(CommandError) as err:
        process.run(["sh", "-c", "echo working; echo 'E: broken' >&2; exit 3"],
                    on_line=lambda _: None)
    assert err.value.returncode == 3
    assert "E: broken" in err.value.stderr_tail


def test_input_and_timeout() -> None:
    lines: list[str] = []
    process.run(["cat"], input="a\nb\n", on_line=lines.append)
    assert lines == ["a", "b"]
    with pytest.raises(LimaError, match="timed out"):
        process.run(["sleep", "5"], timeout=0.3, on_line=lambda _: None)
