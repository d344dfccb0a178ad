"""Real HTTP servers on 127.0.0.1 that stand in for the outside world: an OpenAI-compatible
LLM provider and webhook receivers that verify signatures with `standardwebhooks`."""

import asyncio
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

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
_STATUS = re.compile(r"\[\[status:(\d{3})x(\d+):(\w+)\]\]")


class FakeLLM:
    """An OpenAI-compatible chat completions server. Markers in the prompt script it:
    `[[sleep:N]]` answers after N seconds; `[[status:429x2:tag]]` answers 429 (with
    Retry-After: 1) to the first two requests carrying `tag`, then normally."""

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []
        self.failures_sent: dict[str, int] = defaultdict(int)
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
        task = next((ln for ln in text.splitlines() if ln.startswith("Current Task:")), "")
        task = task.removeprefix("Current Task:").strip()
        answer = f"Thought: I know it.\nFinal Answer: fake-llm says: {task}"
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
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
        return f"http://127.0.0.1:{self.port}/hooks/{name}"

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
        return web.Response(status=status, text=f"receiver {name} answered {status}")
