"""The dependency graph between jobs: flows, order, and run_if decisions. Pure.

Works on a plain mapping `job -> names it runs after`, so that `config` can check a file's
graph while loading it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

Graph = Mapping[str, Sequence[str]]

# The statuses that make a run (and `cronflow run`, `logs -f`) count as failed (SPEC §7).
FAILED = frozenset({"failed", "timeout", "canceled", "upstream_failed", "lost"})
FINISHED = FAILED | {"success", "skipped", "missed"}


def find_cycle(graph: Graph) -> list[str] | None:
    """A cycle as a path that returns to its start (`["a", "b", "a"]`), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for up in graph.get(node, ()):
            if state.get(up) == 1:
                return path[path.index(up) :] + [up]
            if up in graph and up not in state and (found := visit(up)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        # A node that runs after nothing closes no cycle: most jobs, skipped cheaply.
        if graph[node] and node not in state and (found := visit(node)):
            return found
    return None


def topological(graph: Graph, nodes: Iterable[str] | None = None) -> tuple[str, ...]:
    """`nodes` (default: all) with every job after its upstreams; file order breaks ties."""
    wanted = list(graph if nodes is None else nodes)
    chosen = set(wanted)
    done: list[str] = []
    seen: set[str] = set()

    def visit(node: str) -> None:
        if node in seen:
            return
        seen.add(node)
        for up in graph.get(node, ()):
            if up in chosen:
                visit(up)
        done.append(node)

    for node in wanted:
        visit(node)
    return tuple(done)


def components(graph: Graph) -> list[tuple[str, ...]]:
    """The flows: connected parts of the graph, each in dependency order."""
    neighbours: dict[str, set[str]] = {n: set() for n in graph}
    for node, ups in graph.items():
        for up in ups:
            neighbours[node].add(up)
            neighbours.setdefault(up, set()).add(node)
    position = {name: i for i, name in enumerate(graph)}
    seen: set[str] = set()
    result: list[tuple[str, ...]] = []
    for start in graph:
        if start in seen:
            continue
        if not neighbours[start]:  # a job on its own, as most are: a flow of one
            seen.add(start)
            result.append((start,))
            continue
        part, stack = set(), [start]
        while stack:
            node = stack.pop()
            if node not in part:
                part.add(node)
                stack.extend(neighbours[node] - part)
        seen |= part
        result.append(topological(graph, sorted(part, key=position.__getitem__)))
    return result


def downstream(graph: Graph, job: str) -> tuple[str, ...]:
    """`job` and every job that runs after it, directly or not, in dependency order."""
    below = {job}
    changed = True
    while changed:
        changed = False
        for node, ups in graph.items():
            if node not in below and below.intersection(ups):
                below.add(node)
                changed = True
    return topological(graph, [n for n in graph if n in below])


def decide(run_if: str, upstream_statuses: Sequence[str]) -> str:
    """What to do with a job whose upstreams ended so: "run", "wait", "skipped" or
    "upstream_failed" (SPEC §3)."""
    if any(status not in FINISHED for status in upstream_statuses):
        return "wait"
    failed = any(status in FAILED for status in upstream_statuses)
    if run_if == "always":
        return "run"
    if run_if == "failure":
        return "run" if failed else "skipped"
    if failed:
        return "upstream_failed"
    # As Airflow's all_success: a skipped upstream skips what needed it to succeed.
    return "skipped" if "skipped" in upstream_statuses else "run"
