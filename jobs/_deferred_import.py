"""A module loaded on first use, in a process that is one job run (``python -m jobs monitor``).

The monitoring job's modules import DuckDB and ``pyarrow.compute`` at the top, as the analytics
modules do, but an incremental run first lists, plans and reads the day's Parquet files, which needs
neither, and computes a clean day from its Arrow tables without DuckDB at all
(``ParquetStore.deferred_cursor``). :func:`defer` puts a stand-in in ``sys.modules`` so those
imports bind the stand-in, which loads the module, and hands over every attribute, on first use.
:func:`load_in_background`, called as the read starts, loads what the run will need (such as
``pyarrow.compute``) in a thread of its own while pyarrow decodes on both cores without the GIL
(the import machinery holds it); started any earlier, the imports would hold the GIL while the job
lists and plans in Python (measured in ``bench/monitor_bench.py``, see ``docs/MONITORING.md``).

Only for a process that runs nothing else: the stand-in is process-wide. A module whose import reads
an attribute of a deferred module (``duckdb.Error`` in a constant) loads it right there, which is
correct, only no longer deferred; the job's modules name such attributes where they are used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Callable, Iterable, Sequence


class DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its attributes is first read."""

    def __getattr__(self, attribute: str) -> object:
        # Called only for what the stand-in lacks: until the module is loaded, every public name.
        if attribute.startswith("__") and attribute.endswith("__"):
            raise AttributeError(attribute)
        return getattr(self.load(), attribute)

    def load(self) -> types.ModuleType:
        """Import the module (once; any thread), copy its names onto the stand-in, and return it.

        Importlib's own lock of the module serialises two threads loading it at once: the second
        finds it in ``sys.modules`` and waits until it is initialised.
        """
        name = self.__name__
        if sys.modules.get(name) is self:
            sys.modules.pop(name, None)
        try:
            module = importlib.import_module(name)
        except BaseException:
            sys.modules.setdefault(name, self)
            raise
        # Later reads through the stand-in (modules that imported it) no longer reach __getattr__.
        self.__dict__.update(module.__dict__)
        return module


def defer(names: Iterable[str]) -> list[DeferredModule]:
    """Put a stand-in in ``sys.modules`` for each module not imported yet; return the stand-ins.

    A name that is already imported, or that cannot be found, is left alone.
    """
    deferred = []
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        module = DeferredModule(name)
        module.__spec__ = spec
        module.__file__ = spec.origin
        module.__package__ = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
        if spec.submodule_search_locations is not None:
            module.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = module
        deferred.append(module)
    return deferred


def load_in_background(
    steps: Sequence[str | Callable[[], object]], *, when_deferred: str | None = None
) -> threading.Thread | None:
    """Where a module named in ``steps`` is deferred, run the steps in a daemon thread, in order.

    A step is a module name (a deferred module is loaded, a missing one imported) or a callable
    that needs the modules before it (say, opening a connection). ``None``, and nothing done, where
    no named module is deferred, as in any process that did not call :func:`defer`.

    A failing step is left for the first use to raise again, in the thread that needs its result.

    Args:
        steps: What to load, in order.
        when_deferred: Run only where this module is deferred (instead of one named in ``steps``):
            the sign of a process that chose to load late, whose loading it does not start.
    """
    signs = (
        [when_deferred] if when_deferred is not None else [step for step in steps if isinstance(step, str)]
    )
    if not any(isinstance(sys.modules.get(sign), DeferredModule) for sign in signs):
        return None

    def run_steps() -> None:
        for step in steps:
            try:
                if not isinstance(step, str):
                    step()
                elif isinstance(module := sys.modules.get(step), DeferredModule):
                    module.load()
                elif module is None:
                    importlib.import_module(step)
            except Exception:  # noqa: BLE001, S110 - raised again where the module is used
                pass

    thread = threading.Thread(target=run_steps, name="deferred-imports", daemon=True)
    thread.start()
    return thread
