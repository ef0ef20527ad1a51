"""A small reader of deploy/Dockerfile's stages, for the tests (no Docker engine here)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str
    base: str  # the image or the earlier stage it starts from
    copies: list[tuple[str | None, list[str], str]] = field(default_factory=list)  # (--from, sources, destination)
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, rest), in order


def instructions(text: str) -> list[tuple[str, str]]:
    """Each instruction with its continuation lines joined; comments and blank lines left out."""
    joined: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        joined.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued instruction"
    result = []
    for instruction in joined:
        keyword, _, rest = instruction.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def words(rest: str) -> list[str]:
    """The arguments of CMD, ENTRYPOINT or COPY: the JSON (exec) form or the shell words."""
    if rest.startswith("["):
        parsed = json.loads(rest)
        assert isinstance(parsed, list)
        return [str(word) for word in parsed]
    return shlex.split(rest)


def stages(path: Path) -> dict[str, Stage]:
    found: dict[str, Stage] = {}
    stage: Stage | None = None
    for keyword, rest in instructions(path.read_text(encoding="utf-8")):
        if keyword == "FROM":
            parts = rest.split()
            assert len(parts) == 3 and parts[1].upper() == "AS", f"every stage is named: FROM {rest}"
            stage = Stage(name=parts[2], base=parts[0])
            found[stage.name] = stage
            continue
        assert stage is not None, f"{keyword} before FROM"
        stage.instructions.append((keyword, rest))
        if keyword == "COPY":
            arguments = words(rest)
            source_stage = None
            while arguments[0].startswith("--"):
                flag = arguments.pop(0)
                if flag.startswith("--from="):
                    source_stage = flag.removeprefix("--from=")
            stage.copies.append((source_stage, arguments[:-1], arguments[-1]))
    return found


def chain(all_stages: dict[str, Stage], target: str) -> list[Stage]:
    """The stages a target is built on, the first first."""
    result: list[Stage] = []
    name: str | None = target
    while name in all_stages:
        result.insert(0, all_stages[name])
        name = all_stages[name].base
    return result


def last(all_stages: dict[str, Stage], target: str, keyword: str) -> str | None:
    """The instruction that counts for a target (the last one along its chain), or None."""
    found = None
    for stage in chain(all_stages, target):
        for instruction, rest in stage.instructions:
            if instruction == keyword:
                found = rest
    return found


def copied_from_context(all_stages: dict[str, Stage], target: str) -> set[str]:
    """Every path of the build context a target's own chain copies (not what other stages copy)."""
    return {source.rstrip("/") for stage in chain(all_stages, target)
            for source_stage, sources, _ in stage.copies if source_stage is None for source in sources}
