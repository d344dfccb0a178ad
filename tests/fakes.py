"""Real HTTP servers on 127.0.0.1 that stand in for the outside world: an OpenAI-compatible
LLM provider and webhook receivers that verify signatures with `standardwebhooks`."""

import asyncio
import hashlib
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


async def start_site(app: web.Application) -> tuple[web.AppRunner, int]:
    # Scripted handlers may be sleeping for a test that is already over: do not wait for them.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


@dataclass
class LLMRequest:
    at: float
    model: str
    text: str


_SLEEP = re.compile(r"\[\[sleep:([\d.]+)\]\]")
_SLEEP_FIRST = re.compile(r"\[\[sleep-first:([\d.]+):(\w+)\]\]")
_STATUS = re.compile(r"\[\[status:(\d{3})x(\d+):(\w+)\]\]")
_TOOL = re.compile(r"\[\[tool:(\w+)\]\]")
_USAGE = re.compile(r"\[\[usage:(\d+)\]\]")


class FakeLLM:
    """An OpenAI-compatible chat completions server. Markers in the prompt script it:
    `[[sleep:N]]` answers after N seconds; `[[status:429x2:tag]]` answers 429 (with
    Retry-After: 1) to the first two requests carrying `tag`, then normally;
    `[[sleep-first:N:tag]]` answers the first request carrying `tag` after N seconds and the
    others at once; `[[unclean]]` puts a NUL and a lone surrogate in the answer, as a real
    model may; `[[tool:name]]` calls the tool `name` (with the text of the task as its
    `text` argument) before answering, when the request offers that tool; `[[usage:N]]`
    reports N prompt tokens (else 11; always 7 completion tokens)."""

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []
        self.failures_sent: dict[str, int] = defaultdict(int)
        self.slept_once: dict[str, bool] = defaultdict(bool)
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner, self.port = await start_site(app)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def requests_with(self, marker: str) -> list[LLMRequest]:
        return [r for r in self.requests if marker in r.text]

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        self.requests.append(LLMRequest(time.time(), body.get("model", ""), text))
        status = _STATUS.search(text)
        if status:
            code, times, tag = int(status.group(1)), int(status.group(2)), status.group(3)
            if self.failures_sent[tag] < times:
                self.failures_sent[tag] += 1
                return web.json_response(
                    {"error": {"message": f"scripted {code}", "type": "rate_limit_error"}},
                    status=code,
                    headers={"Retry-After": "1"},
                )
        sleep = _SLEEP.search(text)
        if sleep:
            await asyncio.sleep(float(sleep.group(1)))
        first = _SLEEP_FIRST.search(text)
        if first and not self.slept_once[first.group(2)]:
            self.slept_once[first.group(2)] = True
            await asyncio.sleep(float(first.group(1)))
        task = next((ln for ln in text.splitlines() if ln.startswith("Current Task:")), "")
        task = task.removeprefix("Current Task:").strip()
        tool = _TOOL.search(text)
        offered = {t.get("function", {}).get("name") for t in body.get("tools") or []}
        answered = any(m.get("role") == "tool" for m in body.get("messages", []))
        if tool and tool.group(1) in offered and not answered:
            return self._reply(body, None, [self._tool_call(tool.group(1), task)])
        answer = f"Thought: I know it.\nFinal Answer: fake-llm says: {task}"
        if "[[unclean]]" in text:
            answer += " nul:\x00 lone:\ud800 end"
        return self._reply(body, answer, None)

    def _tool_call(self, name: str, task: str) -> dict[str, Any]:
        return {
            "id": f"call_{len(self.requests)}",
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps({"text": task}).decode()},
        }

    def _reply(
        self, body: dict[str, Any], answer: str | None, tool_calls: list[dict[str, Any]] | None
    ) -> web.Response:
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        usage = _USAGE.search(text)
        prompt_tokens = int(usage.group(1)) if usage else 11
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if tool_calls else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": 7,
                    "total_tokens": prompt_tokens + 7,
                },
            }
        )


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        return orjson.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Behaviour:
    fail_first: int = 0
    fail_status: int = 500
    sleep: float = 0.0
    status: int = 200
    secrets: list[str] = field(default_factory=list)
    body: bytes | None = None  # the answer's exact bytes, instead of a line of text
    seen: int = 0


class Receiver:
    """Webhook receivers at `/hooks/<name>`; each verifies signatures with the
    `standardwebhooks` library against the secrets it was given and records every request."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviours: dict[str, Behaviour] = defaultdict(Behaviour)
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        """A host of its own for each name: dispatchers limit and break circuits per
        receiver (scheme, host, port), so receivers sharing one origin would share them
        too. Every `*.localhost` name resolves to loopback (RFC 6761), here too."""
        host = hashlib.sha256(name.encode()).hexdigest()[:16]
        return f"http://r{host}.localhost:{self.port}/hooks/{name}"

    def configure(self, name: str, **kwargs: Any) -> Behaviour:
        self.behaviours[name] = Behaviour(**kwargs)
        return self.behaviours[name]

    def at(self, name: str) -> list[Received]:
        return [r for r in self.received if r.path == name]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/{name}", self._hook)
        self._runner, self.port = await start_site(app)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def wait_for(
        self, name: str, count: int, timeout: float = 30, status: int | None = 200
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.at(name) if status is None or r.status == status]
            if len(got) >= count:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"receiver {name}: {len(self.at(name))} requests, wanted {count} with {status}"
        )

    async def _hook(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        behaviour = self.behaviours[name]
        body = await request.read()
        headers = dict(request.headers)
        verified = False
        for secret in behaviour.secrets:
            try:
                Webhook(secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                pass
        behaviour.seen += 1
        if behaviour.sleep:
            await asyncio.sleep(behaviour.sleep)
        status = (
            behaviour.fail_status if behaviour.seen <= behaviour.fail_first else behaviour.status
        )
        self.received.append(Received(time.time(), name, headers, body, status, verified))
        if behaviour.body is not None:
            return web.Response(status=status, body=behaviour.body)
        return web.Response(status=status, text=f"receiver {name} answered {status}")


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of a server (a host and port, or a unix socket):
    `cut()` drops every connection through it and refuses new ones until `restore()`, as a
    network partition would for whoever connects through it."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.port = 0
        self.cut_off = False
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        if isinstance(self.target, str):
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._pipes |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
                self._pipes.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    def restore(self) -> None:
        self.cut_off = False

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def postgres_proxy(url: str) -> tuple[TcpProxy, Callable[[int], str]]:
    """A proxy for the Postgres at `url`, and how to make the URL that goes through it."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    socket_dir = query.pop("host", None)
    port = parts.port or 5432
    target: tuple[str, int] | str = (
        f"{socket_dir}/.s.PGSQL.{port}" if socket_dir else (parts.hostname or "", port)
    )
    user = parts.username or "postgres"

    def through(proxy_port: int) -> str:
        netloc = f"{user}@127.0.0.1:{proxy_port}"
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))

    return TcpProxy(target), through
