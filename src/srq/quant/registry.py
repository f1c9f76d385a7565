"""Name → class tables for the parts a :class:`~srq.quant.quantizer.Quantizer` is built from."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

__all__ = ["Registry"]

T = TypeVar("T", bound=type[Any])


class Registry(dict[str, type[Any]]):
    """The registered classes of one kind of part (grid, rounding, bit width, normaliser), by name.

    Values are typed ``type[Any]``: one table holds one kind of part, but the kinds share no base class, so
    callers annotate what they build from it (e.g. ``self.grid: Grid = GRIDS[name]()``).
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: file the class under ``name`` and set its ``name`` attribute."""
        def add(cls: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.name = name
            self[name] = cls
            return cls
        return add

    def get_class(self, name: str) -> type[Any]:
        """The class registered as ``name``; a ValueError naming the choices otherwise."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(self)}")
        return self[name]
