"""Client SDK: group the calls of one agent run into an Autellix program, over the official `openai` SDK.

    from openai import OpenAI
    import autellix

    client = OpenAI(base_url="http://localhost:8000/v1", api_key="none")
    with autellix.Program(client) as p:                       # POST /v1/programs
        r = p.chat.completions.create(model=m, messages=...)  # tagged X-Program-ID / X-Thread-ID
        a, b = p.thread(), p.thread()                         # parallel calls: one thread each
    # the program is ended (DELETE /v1/programs/{id}) on exit, also when the block raised

`async with autellix.Program(AsyncOpenAI(...)) as p:` works the same way. Tagging uses
`client.with_options(default_headers=...)`, so every endpoint of the SDK (chat, completions, models,
`with_raw_response`, streaming) carries the program headers and shares the parent client's connections.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

import openai

log = logging.getLogger("autellix.client")
ClientT = TypeVar("ClientT", openai.OpenAI, openai.AsyncOpenAI)


class Thread(Generic[ClientT]):
    """One line of sequential calls of a program; use one per parallel branch."""

    def __init__(self, client: ClientT, program_id: str, thread_id: str) -> None:
        self.program_id = program_id
        self.id = thread_id
        self.headers = {"X-Program-ID": program_id, "X-Thread-ID": thread_id}
        self.client: ClientT = client.with_options(default_headers=self.headers)

    @property
    def chat(self) -> Any:
        return self.client.chat

    @property
    def completions(self) -> Any:
        return self.client.completions

    @property
    def models(self) -> Any:
        return self.client.models


class Program(Generic[ClientT]):
    """A gateway program (session). Use as a context manager (`with` or `async with`).

    `program_id`: join or open this id instead of a fresh one. Calls made through `p.chat`,
    `p.completions` (thread "0") or `p.thread()` objects are tagged with the program.
    """

    def __init__(self, client: ClientT, program_id: str | None = None) -> None:
        self._client: ClientT = client
        self._requested_id = program_id
        self._threads = itertools.count(1)
        self._main: Thread[ClientT] | None = None
        self.info: dict[str, Any] = {}

    # -- identity -----------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.main.program_id

    @property
    def main(self) -> Thread[ClientT]:
        if self._main is None:
            raise RuntimeError("program is not open: use `with Program(client) as p:`")
        return self._main

    @property
    def headers(self) -> dict[str, str]:
        """Headers that tag a call with this program's main thread (for `extra_headers=`)."""
        return dict(self.main.headers)

    @property
    def chat(self) -> Any:
        return self.main.chat

    @property
    def completions(self) -> Any:
        return self.main.completions

    def thread(self, name: str | None = None) -> Thread[ClientT]:
        """A new thread of this program (default names "1", "2", ...): for calls that run in parallel."""
        return Thread(self._client, self.id, name or str(next(self._threads)))

    def _opened(self, info: dict[str, Any]) -> None:
        self.info = info
        self._main = Thread(self._client, str(info["id"]), "0")

    def _body(self) -> dict[str, Any]:
        return {} if self._requested_id is None else {"program_id": self._requested_id}

    # -- sync ---------------------------------------------------------------------------------------

    def open(self) -> Program[ClientT]:
        client = self._sync()
        self._opened(client.post("/programs", cast_to=dict, body=self._body()))
        return self

    def status(self) -> dict[str, Any]:
        """The program's process-table entry (GET /v1/programs/{id})."""
        return self._sync().get(f"/programs/{self.id}", cast_to=dict)

    def close(self) -> None:
        if self._main is not None:
            try:
                self._sync().delete(f"/programs/{self.id}", cast_to=dict)
            except openai.NotFoundError:  # already expired or ended: nothing to do
                pass

    def __enter__(self) -> Program[ClientT]:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _close_quietly_if(exc is not None, self.close)

    def _sync(self) -> openai.OpenAI:
        if not isinstance(self._client, openai.OpenAI):
            raise TypeError("this Program wraps an AsyncOpenAI client: use `async with`")
        return self._client

    # -- async --------------------------------------------------------------------------------------

    async def aopen(self) -> Program[ClientT]:
        client = self._async()
        self._opened(await client.post("/programs", cast_to=dict, body=self._body()))
        return self

    async def astatus(self) -> dict[str, Any]:
        return await self._async().get(f"/programs/{self.id}", cast_to=dict)

    async def aclose(self) -> None:
        if self._main is not None:
            try:
                await self._async().delete(f"/programs/{self.id}", cast_to=dict)
            except openai.NotFoundError:
                pass

    async def __aenter__(self) -> Program[ClientT]:
        return await self.aopen()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is None:
            await self.aclose()
            return
        try:
            await self.aclose()
        except Exception as close_error:  # never mask the exception that is propagating
            log.warning("could not end program %s: %s", self.id, close_error)

    def _async(self) -> openai.AsyncOpenAI:
        if not isinstance(self._client, openai.AsyncOpenAI):
            raise TypeError("this Program wraps a sync OpenAI client: use `with`")
        return self._client


def _close_quietly_if(quiet: bool, close: Callable[[], None]) -> None:
    """Run `close`; when an exception is already propagating, log a failure instead of raising it."""
    if not quiet:
        close()
        return
    try:
        close()
    except Exception as close_error:
        log.warning("could not end program: %s", close_error)


__all__ = ["Program", "Thread"]
