"""Collecting every problem with the input before any work starts, and reporting them in one error."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

MAX_LISTED = 50


class DataValidationError(ValueError):
    """Raised with every bad file and what to do about it; nothing has been written when it is raised."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"{len(problems)} problem(s) with the input data; nothing was written:"]
        for path, what, fix in problems[:MAX_LISTED]:
            lines.append(f"  - {path}: {what} -> {fix}")
        if len(problems) > MAX_LISTED:
            lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
        super().__init__("\n".join(lines))


@dataclass
class DataProblem:
    """A list of (path, what is wrong, how to fix it)."""

    problems: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, path: str | os.PathLike, what: str, fix: str) -> None:
        self.problems.append((str(path), what, fix))

    def __bool__(self) -> bool:
        return bool(self.problems)

    def raise_if_any(self) -> None:
        if self.problems:
            raise DataValidationError(self.problems)

    @staticmethod
    def single(path: str | os.PathLike, what: str, fix: str) -> DataValidationError:
        return DataValidationError([(str(path), what, fix)])
