"""The frame of every operation: who asks (:class:`Actor`) and who may (:func:`operation`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Concatenate, Generic, ParamSpec, TypeVar

from broker.errors import Denied
from broker.store.db import Store
from broker.store.listing import Viewer

P = ParamSpec("P")
R = TypeVar("R")

ENGINEER, AUDITOR, ADMIN = "engineer", "auditor", "admin"
EVERYONE = (ENGINEER, AUDITOR, ADMIN)


@dataclass(frozen=True)
class Actor:
    """Who asks. ``name`` is what the audit records as actor; ``via``: cli, token or login."""

    name: str
    role: str
    account_id: int | None = None
    via: str = "cli"

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.account_id or 0, self.role)


#: whoever runs the command line: it holds the data dir, so it is the broker's admin
COMMAND_LINE = Actor("admin", ADMIN, None, "cli")


class Operation(Generic[P, R]):
    """An operation with the roles that may call it (checked before anything else)."""

    def __init__(
        self, run: Callable[Concatenate[Store, Actor, P], Awaitable[R]], roles: tuple[str, ...]
    ) -> None:
        self.run = run
        self.roles = roles
        self.__name__ = run.__name__
        self.__doc__ = run.__doc__

    async def __call__(self, store: Store, actor: Actor, *args: P.args, **kwargs: P.kwargs) -> R:
        if actor.role not in self.roles:
            raise Denied(
                f"Your role ({actor.role}) may not do this; it needs {' or '.join(self.roles)}."
            )
        return await self.run(store, actor, *args, **kwargs)


def operation(
    *roles: str,
) -> Callable[[Callable[Concatenate[Store, Actor, P], Awaitable[R]]], Operation[P, R]]:
    def declare(run: Callable[Concatenate[Store, Actor, P], Awaitable[R]]) -> Operation[P, R]:
        return Operation(run, roles)

    return declare
