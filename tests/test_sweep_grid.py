"""`python -m benchmarks.sweep --grid`: its options are checked before any run starts."""

from __future__ import annotations

import pytest

from benchmarks import sweep


@pytest.mark.parametrize("argv", [["--jobs", "bogus"], ["--jobs", ","], ["--workers", "0"]])
def test_grid_rejects_bad_options_before_running(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["--grid", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    assert "--" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written
