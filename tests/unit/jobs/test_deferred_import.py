"""``jobs._deferred_import``: a module stands in ``sys.modules`` until first used, then is the real one.

Each test writes its own small modules into a temporary folder on ``sys.path``; a module's body
counts its executions in a file, so "loaded once" and "not loaded yet" are read from disk.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs._deferred_import import DeferredModule, defer, load_in_background

pytestmark = pytest.mark.unit


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path``; the modules the test imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write_module(folder: Path, name: str, body: str = "") -> Path:
    """A module whose import appends a line to ``<name>.loads`` (then runs ``body``)."""
    counter = folder / f"{name}.loads"
    (folder / f"{name}.py").write_text(
        f"from pathlib import Path\n"
        f"with Path({str(counter)!r}).open('a') as counter:\n"
        f"    counter.write('loaded\\n')\n"
        f"VALUE = 42\n"
        f"def double(x):\n"
        f"    return 2 * x\n"
        f"{body}\n"
    )
    return counter


def loads(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_an_importer_binds_the_stand_in_and_the_first_use_loads_the_module(modules: Path) -> None:
    counter = write_module(modules, "mms_deferred_a")
    (stand_in,) = defer(["mms_deferred_a"])
    import mms_deferred_a  # the import statement is what is tested

    assert mms_deferred_a is stand_in and isinstance(mms_deferred_a, DeferredModule)
    assert loads(counter) == 0  # importing it ran nothing
    assert mms_deferred_a.double(mms_deferred_a.VALUE) == 84
    assert loads(counter) == 1
    real = sys.modules["mms_deferred_a"]
    assert real is not stand_in and not isinstance(real, DeferredModule)
    assert real.double is stand_in.double  # the stand-in now holds the module's own names
    import mms_deferred_a as again

    assert again is real and loads(counter) == 1


def test_dunder_names_do_not_load_and_unknown_names_still_raise(modules: Path) -> None:
    counter = write_module(modules, "mms_deferred_b")
    (stand_in,) = defer(["mms_deferred_b"])
    assert not hasattr(stand_in, "__wrapped__")
    assert stand_in.__spec__.name == "mms_deferred_b"
    assert loads(counter) == 0
    with pytest.raises(AttributeError):
        stand_in.missing_name  # noqa: B018 - the attribute read is the test
    assert loads(counter) == 1


def test_modules_already_imported_or_not_found_are_left_alone(modules: Path) -> None:
    write_module(modules, "mms_deferred_c")
    import mms_deferred_c

    assert defer(["mms_deferred_c", "mms_no_such_module_anywhere"]) == []
    assert sys.modules["mms_deferred_c"] is mms_deferred_c
    assert "mms_no_such_module_anywhere" not in sys.modules


def test_the_background_thread_loads_deferred_and_missing_modules_once(modules: Path) -> None:
    slow = write_module(modules, "mms_deferred_d", "import time\ntime.sleep(0.3)")
    plain = write_module(modules, "mms_deferred_e")
    (stand_in,) = defer(["mms_deferred_d"])
    # A callable step runs in turn, after the modules before it (as the job opens its connection).
    seen: list[bool] = []

    def after_d() -> None:
        seen.append(not isinstance(sys.modules["mms_deferred_d"], DeferredModule))

    def failing() -> None:
        raise RuntimeError("left for the first use to raise again")

    thread = load_in_background(["mms_deferred_d", after_d, failing, "mms_deferred_e"])
    assert thread is not None
    # Used from this thread while the other is still importing it: importlib's lock makes this one
    # wait for that import instead of running the module a second time.
    results: list[int] = []
    readers = [threading.Thread(target=lambda: results.append(stand_in.VALUE)) for _ in range(4)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(10)
    thread.join(10)
    assert results == [42] * 4 and seen == [True]
    assert loads(slow) == 1 and loads(plain) == 1
    assert not isinstance(sys.modules["mms_deferred_d"], DeferredModule)
    assert "mms_deferred_e" in sys.modules


def test_a_module_that_fails_to_import_fails_where_it_is_used_every_time(modules: Path) -> None:
    counter = write_module(modules, "mms_deferred_f", "raise RuntimeError('broken module')")
    (stand_in,) = defer(["mms_deferred_f"])
    thread = load_in_background(["mms_deferred_f"])
    assert thread is not None
    thread.join(10)  # the error is swallowed there
    assert loads(counter) == 1
    assert sys.modules["mms_deferred_f"] is stand_in
    for attempt in (2, 3):
        with pytest.raises(RuntimeError, match="broken module"):
            stand_in.VALUE  # noqa: B018
        assert loads(counter) == attempt


def test_nothing_is_loaded_where_nothing_was_deferred(modules: Path) -> None:
    """As in the studio or a test, where DuckDB is imported already: the job's call does nothing."""
    counter = write_module(modules, "mms_deferred_g")
    assert load_in_background(["json", "mms_deferred_g"]) is None
    assert loads(counter) == 0 and "mms_deferred_g" not in sys.modules


def test_when_deferred_names_the_sign_and_leaves_that_module_deferred(modules: Path) -> None:
    """The job loads its other modules where DuckDB is deferred, and leaves DuckDB to its first use."""
    sign = write_module(modules, "mms_deferred_h")
    other = write_module(modules, "mms_deferred_i")
    assert load_in_background(["mms_deferred_i"], when_deferred="mms_deferred_h") is None
    assert loads(other) == 0 and "mms_deferred_i" not in sys.modules
    (stand_in,) = defer(["mms_deferred_h"])
    thread = load_in_background(["mms_deferred_i"], when_deferred="mms_deferred_h")
    assert thread is not None
    thread.join(10)
    assert loads(other) == 1 and "mms_deferred_i" in sys.modules
    assert loads(sign) == 0 and isinstance(sys.modules["mms_deferred_h"], DeferredModule)
    assert stand_in.VALUE == 42 and loads(sign) == 1
