"""The compiled kernels of the numeric profile and of the label join (``analytics/_kernels.c``), when
they are built.

``make setup`` compiles them into ``analytics/_build/libmms_kernels.so`` (one ``cc`` call, see the
Makefile): in a folder that is no Python package, so the library is never taken for an extension
module (``import analytics._kernels``, ``pkgutil.walk_packages``).
Without that file, say in a notebook on a checkout nobody built, :func:`load_kernels` answers
``None`` and the profile runs its NumPy route, which gives the same numbers bit for bit.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

#: The library built from ``_kernels.c`` next to this module.
LIBRARY_PATH = Path(__file__).parent / "_build" / "libmms_kernels.so"

#: Set to ``0`` to run the NumPy route even where the library is built (e.g. to compare the two).
DISABLE_VARIABLE = "MMS_NATIVE_KERNELS"

_I64, _PTR, _DBL, _INT = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_int

#: Field of :class:`Kernels` -> (C function, argument types, result type), as ``_kernels.c`` declares
#: them. Arrays are passed as addresses (``ndarray.ctypes.data``).
_SIGNATURES: dict[str, tuple[str, list[type], type | None]] = {
    "nonfinite": ("mms_nonfinite", [_PTR, _I64, _PTR], _I64),
    "compact_finite": ("mms_compact_finite", [_PTR, _I64, _PTR], _I64),
    "sum_range": ("mms_sum_range", [_PTR, _I64, _PTR], _INT),
    "range": ("mms_range", [_PTR, _I64, _PTR], None),
    "bin_table": (
        "mms_bin_table",
        [_PTR, _I64, _INT, _I64, _I64, _I64, _PTR, _I64, _I64, _PTR, _I64, _PTR, _DBL, _INT],
        _DBL,
    ),
    "bin_fine": ("mms_bin_fine", [_PTR, _I64, _INT, _I64, _I64, _I64, _PTR, _I64, _DBL, _INT], _DBL),
    "m2": ("mms_m2", [_PTR, _I64, _DBL], _DBL),
    "hll_add": ("mms_hll_add", [_PTR, _I64, _INT, _PTR], None),
    "join_ids": ("mms_join_ids", [_PTR, _PTR, _PTR, _I64, _PTR, _PTR, _PTR, _I64, _PTR, _INT, _PTR], _INT),
}


@dataclass(frozen=True)
class Kernels:
    """The library's functions, with their C signatures declared (see ``_kernels.c``)."""

    nonfinite: ctypes._CFuncPtr
    compact_finite: ctypes._CFuncPtr
    sum_range: ctypes._CFuncPtr
    range: ctypes._CFuncPtr
    bin_table: ctypes._CFuncPtr
    bin_fine: ctypes._CFuncPtr
    m2: ctypes._CFuncPtr
    hll_add: ctypes._CFuncPtr
    join_ids: ctypes._CFuncPtr


def load_kernels(path: Path = LIBRARY_PATH) -> Kernels | None:
    """The kernels of the library at ``path``, or ``None`` when it is not built, not loadable or disabled.

    ``MMS_NATIVE_KERNELS`` is read here, not through the studio's settings: ``analytics`` is a library
    that notebooks import without the web app. It takes ``0`` or ``1``; anything else is an error.

    Raises:
        ValueError: if ``MMS_NATIVE_KERNELS`` is neither ``0`` nor ``1``.
    """
    flag = os.environ.get(DISABLE_VARIABLE, "1").strip()
    if flag not in ("0", "1"):
        raise ValueError(f"{DISABLE_VARIABLE} must be 0 or 1, got {flag!r}")
    if flag == "0" or not path.is_file():
        return None
    try:
        library = ctypes.CDLL(str(path))  # CDLL (not PyDLL): a call releases the GIL
        functions = {}
        for field, (name, argtypes, restype) in _SIGNATURES.items():
            function = getattr(library, name)
            function.argtypes, function.restype = argtypes, restype
            functions[field] = function
    except (OSError, AttributeError):  # not a library, or one built from another _kernels.c
        return None
    return Kernels(**functions)
