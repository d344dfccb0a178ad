"""The dashboard at /ui and the operators' health page at /ui/health, in a real browser
(Debian's Chromium, headless, driven by Playwright) against real crewq processes (API,
worker, dispatcher), the fake LLM and a webhook receiver: sign in, submit a job and watch
its steps arrive live, retry a failed delivery, answer a waiting job, the other views at
desktop and phone width and by keyboard, and a stopped worker marked on the health page.
Each page is saved as a full-page PNG in build/screenshots/, and the page weight of /ui is
measured (reported at the end of the run)."""

import gzip
import time
import uuid

import aiohttp
from playwright.async_api import Browser, Page, WebSocket, expect

from tests.browser.conftest import SCREENSHOTS, Dashboard, report
from tests.fakes import Receiver

LONG = 30_000  # ms: a job's run, a delivery's retry
_ERRORS: dict[Page, list[str]] = {}


async def open_page(browser: Browser, width: int = 1100, height: int = 800) -> Page:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    # A CSP violation or a script error is a failure, not a quiet console line.
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text) if msg.type == "error" and "404" not in msg.text else None
        ),
    )
    _ERRORS[page] = errors
    return page


async def shoot(page: Page, name: str) -> None:
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


async def sign_in(page: Page, dashboard: Dashboard, path: str = "") -> None:
    await page.goto(dashboard.url + path)
    await page.get_by_label("API key").fill(dashboard.platform.key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def no_errors(page: Page, refused: str | None = None) -> None:
    """No script error, CSP violation or failed request on the page; but the browser's own
    console line for a refusal the test provoked on purpose (`refused`, e.g. "409")."""
    unexpected = [e for e in _ERRORS[page] if refused is None or f"status of {refused}" not in e]
    assert unexpected == [], unexpected


async def test_submit_a_job_watch_its_steps_live_and_retry_its_failed_delivery(
    dashboard: Dashboard, browser: Browser, receiver: Receiver
) -> None:
    page = await open_page(browser)
    await page.goto(dashboard.url)
    await shoot(page, "sign-in")
    await sign_in(page, dashboard)
    await expect(page.get_by_role("heading", name="Jobs", level=1)).to_be_visible()

    hook = f"ui-{uuid.uuid4().hex[:8]}"
    # The job's own webhook: refused for good (410) the first time, accepted after.
    receiver.configure(
        hook, fail_first=1, fail_status=410, secrets=[dashboard.platform.signing_secret]
    )
    tag = f"ui{time.time_ns()}"
    await page.get_by_text("New job").click()
    form = page.get_by_role("form", name="New job")
    await form.get_by_label("Crew").select_option("relay")
    await form.get_by_label("baton").fill(tag)
    # The third leg's model call answers after 3 s: the first two legs' steps come first.
    await form.get_by_label("third").fill(f"[[sleep-first:3:{tag}]]")
    await form.get_by_text("Options").click()
    await form.get_by_label("Webhook URL").fill(receiver.url(hook))
    await form.get_by_role("button", name="Submit job").click()
    await page.wait_for_url("**/ui/jobs/**")
    # No reload from here on: a mark left on the window must survive to the end.
    await page.evaluate("window.crewqMark = 1")

    steps = page.get_by_test_id("step")
    await expect(steps.and_(page.locator("[data-type='task.completed']"))).to_have_count(
        2, timeout=LONG
    )
    # Two legs done while the third still waits on its model: the steps arrived live.
    await expect(page.get_by_test_id("job-status")).to_have_text("running")
    assert await page.locator("[data-testid='step'][data-type='job.completed']").count() == 0
    await expect(page.get_by_test_id("job-status")).to_have_text("completed", timeout=LONG)
    await expect(page.locator("[data-testid='step'][data-type='job.completed']")).to_have_count(1)
    assert await page.locator("[data-testid='step'][data-type='task.completed']").count() == 3
    assert await page.evaluate("window.crewqMark") == 1
    assert int(await page.get_by_test_id("tokens").inner_text()) > 0
    await expect(page.get_by_test_id("result")).to_contain_text("fake-llm says")

    # The outcome's delivery failed (410, not retried); retried by hand, it succeeds.
    delivery = page.get_by_test_id("delivery")
    await expect(delivery).to_have_attribute("data-status", "failed", timeout=LONG)
    await expect(delivery.get_by_test_id("delivery-attempts")).to_contain_text("HTTP 410")
    await delivery.get_by_role("button", name="Retry delivery").click()
    await expect(delivery).to_have_attribute("data-status", "succeeded", timeout=LONG)
    attempts = delivery.get_by_test_id("delivery-attempts").locator("li")
    await expect(attempts).to_have_count(2)
    await expect(attempts.nth(1)).to_contain_text("HTTP 200")
    [ok] = await receiver.wait_for(hook, 1)
    assert ok.verified and ok.event["type"] == "job.completed"
    await shoot(page, "job")

    await page.get_by_role("link", name="← Jobs").click()
    await page.get_by_label("Status").select_option("completed")
    await expect(page.get_by_test_id("job-row").first).to_have_attribute("data-status", "completed")
    await shoot(page, "jobs")
    no_errors(page)


async def test_answer_a_job_waiting_for_input(dashboard: Dashboard, browser: Browser) -> None:
    job = await dashboard.platform.submit("review", {"topic": f"ui-{time.time_ns()}"})
    page = await open_page(browser)
    await sign_in(page, dashboard, f"/jobs/{job['id']}")
    asked = page.get_by_test_id("input-request")
    await expect(asked).to_contain_text("Is the polished line ready to publish?", timeout=LONG)
    await expect(page.get_by_test_id("job-status")).to_have_text("awaiting_input")
    await shoot(page, "job-input")
    await asked.get_by_label("Feedback").fill("Good to go.")
    await asked.get_by_role("button", name="Approve").click()
    await expect(page.get_by_test_id("job-status")).to_have_text("completed", timeout=LONG)
    await expect(asked).to_have_count(0)
    done = await dashboard.platform.job(job["id"])
    assert done["status"] == "completed" and done["input_request"] is None
    no_errors(page)


async def test_the_jobs_list_follows_the_event_stream_live(
    dashboard: Dashboard, browser: Browser
) -> None:
    page = await open_page(browser)
    sockets: list[WebSocket] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    reads: list[str] = []
    page.on("request", lambda r: reads.append(r.url) if "/v1/jobs?" in r.url else None)
    await sign_in(page, dashboard)
    # Open under the page's CSP (`connect-src 'self'` lets ws:// to this origin through).
    await expect(page.get_by_test_id("live")).to_have_attribute("data-state", "live")
    await expect(page.get_by_test_id("live")).to_have_text("Live")
    [socket] = sockets
    assert socket.url.startswith(dashboard.url.replace("http://", "ws://", 1).removesuffix("/ui"))
    assert "/v1/stream?" in socket.url and dashboard.platform.key not in socket.url
    frames: list[str | bytes] = []
    socket.on("framereceived", lambda frame: frames.append(frame))
    await page.evaluate("window.crewqMark = 1")
    read_before = len(reads)

    # Two tasks, each model call 2 s: running for seconds, then completed, both seen in the
    # row without a reload and without a read of the list (no poll while the socket is up).
    job = await dashboard.platform.submit(
        "research", {"topic": f"live {time.time_ns()} [[sleep:2]]"}
    )
    row = page.locator(f"[data-testid='job-row'][data-job='{job['id']}']")
    await expect(row).to_have_attribute("data-status", "running", timeout=LONG)
    await expect(page.get_by_test_id("job-row").first).to_have_attribute("data-job", job["id"])
    await expect(row).to_have_attribute("data-status", "completed", timeout=LONG)
    await expect(row.locator("td").nth(3)).to_have_text("2/2")
    assert len(reads) == read_before, reads[read_before:]
    assert frames and not socket.is_closed()
    assert await page.evaluate("window.crewqMark") == 1
    await shoot(page, "jobs-live")
    no_errors(page)


async def _page_weight(dashboard: Dashboard, paths: list[str]) -> tuple[int, int]:
    """Bytes of the page and its files: as they are, and as sent to a browser (gzip)."""
    raw = sent = 0
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for path in paths:
            url = dashboard.platform.base_url + path
            async with http.get(url, headers={"Accept-Encoding": "identity"}) as plain:
                body = await plain.read()
            async with http.get(url, headers={"Accept-Encoding": "gzip"}) as packed:
                assert packed.headers["Content-Encoding"] == "gzip"
                assert gzip.decompress(await packed.read()) == body
                sent += len(await packed.read())
            raw += len(body)
    return raw, sent


async def test_the_other_views_by_keyboard_and_at_phone_width(
    dashboard: Dashboard, browser: Browser, receiver: Receiver
) -> None:
    page = await open_page(browser)
    loaded: list[str] = []
    page.on("request", lambda r: loaded.append(r.url))
    response = await page.goto(dashboard.url)
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    # Keyboard only: the key field has the focus; Enter signs in; Tab reaches the menu.
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.keyboard.type(dashboard.platform.key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Jobs", level=1)).to_be_visible()
    webhooks_link = page.get_by_role("link", name="Webhooks")
    for _ in range(40):  # past the jobs listed before it (earlier tests add some)
        await page.keyboard.press("Tab")
        if await webhooks_link.evaluate("el => el === document.activeElement"):
            break
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()

    ours = [u.removeprefix(dashboard.platform.base_url) for u in loaded if "/ui" in u]
    assert ours[0] == "/ui" and all("/ui/assets/" in u for u in ours[1:]), ours
    raw, sent = await _page_weight(dashboard, ours)
    report(
        f"/ui page weight: {len(ours)} files, {raw:,} bytes ({raw / 1024:.1f} KiB), "
        f"{sent:,} bytes gzipped ({sent / 1024:.1f} KiB) as sent"
    )
    assert sent < 40_000, (raw, sent)

    # Webhooks: create (its secret shown once), then test it.
    hook = f"ui-ep-{uuid.uuid4().hex[:8]}"
    receiver.configure(hook)
    await page.get_by_label("Endpoint URL").fill(receiver.url(hook))
    await page.get_by_label("Description").fill("the dashboard's receiver")
    await page.get_by_role("button", name="Create endpoint").click()
    await expect(page.get_by_test_id("secret")).to_contain_text("whsec_")
    endpoint = page.get_by_test_id("endpoint").filter(has_text=hook)
    await endpoint.get_by_role("button", name="Test").click()
    await expect(page.get_by_role("status")).to_contain_text(
        "Test delivered: HTTP 200", timeout=LONG
    )
    await shoot(page, "webhooks")

    status, _, _ = await dashboard.platform.request(
        "POST",
        "/v1/schedules",
        json={
            "crew": "echo",
            "inputs": {"message": "hi"},
            "cron": "0 9 * * 1-5",
            "timezone": "Europe/Paris",
        },
    )
    assert status == 201
    await page.get_by_role("link", name="Schedules").click()
    await expect(page.get_by_test_id("schedule")).to_have_count(1)
    await shoot(page, "schedules")
    await page.get_by_role("link", name="Keys").click()
    await expect(page.get_by_test_id("key").first).to_be_visible()
    # The IP allowlist: a list that leaves this browser out is refused, and a confirmation
    # offered naming its address; one that includes it is saved, and lifted again.
    allowlist = page.get_by_test_id("allowlist")
    await expect(allowlist).to_contain_text("any address")
    networks = page.get_by_label("Allowed networks, one per line (empty: any address)")
    await networks.fill("192.0.2.0/24")
    await page.get_by_role("button", name="Save allowlist").click()
    await expect(page.get_by_text("WOULD_LOCK_OUT_CALLER")).to_be_visible()
    await expect(page.get_by_label("Save it anyway: this browser (127.0.0.1)")).not_to_be_checked()
    await networks.fill("192.0.2.0/24\n127.0.0.0/8")
    await page.get_by_role("button", name="Save allowlist").click()
    await expect(allowlist).to_contain_text("from 2 network(s) only")
    await shoot(page, "keys")
    await networks.fill("")
    await page.get_by_role("button", name="Save allowlist").click()
    await expect(allowlist).to_contain_text("any address")
    await page.get_by_role("link", name="Usage").click()
    await expect(page.get_by_test_id("usage")).to_contain_text("unlimited")
    # The period's jobs by crew: the jobs the tests above ran, and the total.
    crews = page.get_by_test_id("crew-metrics")
    await expect(crews.filter(has_text="relay")).to_have_count(1)
    await expect(crews.last).to_contain_text("All crews")
    await shoot(page, "usage")

    # A phone's width: nothing wider than the screen but the tables, which scroll.
    await page.set_viewport_size({"width": 375, "height": 740})
    await page.get_by_role("link", name="Jobs").click()
    await expect(page.get_by_test_id("job-row").first).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await shoot(page, "jobs-phone")
    no_errors(page, refused="409")  # the allowlist that would have locked the browser out


async def test_the_health_page_marks_a_stopped_worker(
    dashboard: Dashboard, browser: Browser
) -> None:
    # Last: the module's worker is stopped (it signs off, as a scaled-down worker does).
    assert await dashboard.worker.stop() == 0
    page = await open_page(browser)
    await page.goto(f"{dashboard.url}/health")
    await page.get_by_label("Debug token").fill("not-the-token")
    await page.get_by_role("button", name="Open health page").click()
    await expect(page.get_by_role("alert")).to_contain_text("not admitted")
    await page.get_by_label("Debug token").fill(dashboard.debug_token)
    await page.get_by_role("button", name="Open health page").click()

    verdict = page.get_by_test_id("verdict")
    await expect(verdict).to_contain_text("degraded", timeout=LONG)
    workers = page.locator("[data-testid='component'][data-name='workers']")
    await expect(workers).to_have_attribute("data-status", "fail")
    await expect(workers).to_contain_text("no worker alive")
    await expect(page.locator("[data-testid='component'][data-name='database']")).to_have_attribute(
        "data-status", "ok"
    )
    stopped = page.locator(
        f"[data-testid='process-row'][data-role='worker'][data-pid='{dashboard.worker.pid}']"
    )
    await expect(stopped).to_have_attribute("data-state", "stopped")
    await expect(stopped.get_by_test_id("process-state")).to_have_text("stopped")
    assert "row-flagged" in (await stopped.get_attribute("class") or "")
    alive = page.locator("[data-testid='process-row'][data-state='alive']")
    await expect(alive.and_(page.locator("[data-role='dispatcher']"))).to_have_count(1)
    await expect(alive.and_(page.locator("[data-role='api']"))).to_have_count(1)
    await expect(alive.first).to_contain_text("CREWQ_SECRET_KEY")
    await shoot(page, "health")
    no_errors(page)
