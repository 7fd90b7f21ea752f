"""Import errors name the module, the file and line that broke, and the exception: the one
report an operator gets (by the zygote at start-up, or for a refused reload)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kongtaskd.errors import TaskImportError
from kongtaskd.registry import load_handlers


@pytest.fixture()
def lib(tmp_path: Path) -> Iterator[Path]:
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:  # the next test imports its own versions
        del sys.modules[name]
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def error_of(lib: Path, spec: str) -> str:
    with pytest.raises(TaskImportError) as caught:
        load_handlers({"t": spec}, (), (lib,))
    message = caught.value.message
    assert "\n" not in message
    return message


def test_a_syntax_error_names_file_and_line_once(lib: Path) -> None:
    (lib / "syn_mod.py").write_text("x = 1\n\ndef f(p, c):\n    return (\n")
    message = error_of(lib, "syn_mod:f")
    assert message.startswith(f"task 't': cannot import module 'syn_mod' at {lib}/syn_mod.py:4: ")
    assert "SyntaxError: '(' was never closed" in message
    assert message.count("syn_mod.py") == 1


def test_an_exception_at_import_names_the_raising_line(lib: Path) -> None:
    (lib / "raise_mod.py").write_text("import os\n\nundefined_name\n")
    message = error_of(lib, "raise_mod:f")
    assert f"at {lib}/raise_mod.py:3: NameError: name 'undefined_name' is not defined" in message


def test_a_failure_deeper_down_names_the_innermost_user_line(lib: Path) -> None:
    (lib / "outer_mod.py").write_text("import inner_mod\n")
    (lib / "inner_mod.py").write_text("\n\nraise RuntimeError('boom')\n")
    message = error_of(lib, "outer_mod:f")
    assert f"module 'outer_mod' at {lib}/inner_mod.py:3: RuntimeError: boom" in message


def test_a_module_that_does_not_exist_has_no_location(lib: Path) -> None:
    message = error_of(lib, "no_such_mod_here:f")
    assert message == (
        "task 't': cannot import module 'no_such_mod_here': "
        "ModuleNotFoundError: No module named 'no_such_mod_here'"
    )
