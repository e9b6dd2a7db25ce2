"""numpy for the geo modules, imported when a lookup first needs it, and the array types they use.

Every other command (``--no-geo`` runs too) is spared numpy's import (60-130 ms, 12 MiB). A module
that uses numpy holds a :class:`NumpyOnFirstUse` as its ``np`` until the first attribute is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    U8 = npt.NDArray[np.uint8]
    U32 = npt.NDArray[np.uint32]
    U64 = npt.NDArray[np.uint64]
    I64 = npt.NDArray[np.int64]
    Index = npt.NDArray[np.intp]
    Mask = npt.NDArray[np.bool_]


class NumpyOnFirstUse:
    """Stands for numpy in a module's globals (``np = NumpyOnFirstUse(globals())``) until first used:
    then numpy takes its place there, and the module reads numpy itself from then on."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self._namespace = namespace

    def __getattr__(self, name: str) -> Any:
        import numpy

        self._namespace["np"] = numpy
        return getattr(numpy, name)
