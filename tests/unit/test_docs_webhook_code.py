"""The receivers' verification code that docs/webhooks.md gives for Node and Go, run as
printed against headers crewq's own signer made: a delivery signed with the current secret
or the one being rotated out passes; another secret, a changed body and a stale timestamp
fail. Each language runs where its toolchain is installed (Debian's `nodejs`,
`golang-go`); the Python receivers' helpers are tested in tests/client."""

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.webhooks.signing import sign_headers

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
# What each sample below must give: verified, or refused.
EXPECTED = [True, True, False, False, False]

NODE_RUNNER = """
import { verifyWebhook } from "./verify.mjs";
import { readFileSync } from "node:fs";
for (const s of JSON.parse(readFileSync(0, "utf8"))) {
  try {
    verifyWebhook(s.secret, s.headers, Buffer.from(s.body, "utf8"));
    console.log("true");
  } catch {
    console.log("false");
  }
}
"""

GO_RUNNER = """
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"

	"example.com/receiver/crewqhook"
)

func main() {
	var samples []struct {
		Secret  string            `json:"secret"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&samples); err != nil {
		panic(err)
	}
	for _, s := range samples {
		header := http.Header{}
		for k, v := range s.Headers {
			header.Set(k, v)
		}
		fmt.Println(crewqhook.Verify(s.Secret, header, []byte(s.Body)) == nil)
	}
}
"""


def _code(language: str) -> str:
    """The one fenced block of `language` in the webhooks page, as a file would hold it."""
    blocks = re.findall(rf"^( *)```{language}\n(.*?)^\1```", DOCS.read_text(), re.S | re.M)
    assert len(blocks) == 1, f"expected one {language} block in {DOCS}"
    return textwrap.dedent(blocks[0][1])


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _samples() -> list[dict[str, Any]]:
    new, old, other = _secret(), _secret(), _secret()
    body = '{"type":"job.completed","data":{"id":"job_1","note":"café ✓"}}'
    now = datetime.now(UTC)
    rotating = sign_headers([new, old], "msg_1", now, body.encode())
    stale = sign_headers([new], "msg_2", now - timedelta(minutes=10), body.encode())
    return [
        {"secret": new, "headers": rotating, "body": body},
        {"secret": old, "headers": rotating, "body": body},
        {"secret": other, "headers": rotating, "body": body},
        {"secret": new, "headers": rotating, "body": body + " "},
        {"secret": new, "headers": stale, "body": body},
    ]


def _verdicts(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> list[bool]:
    done = subprocess.run(
        command,
        cwd=cwd,
        input=json.dumps(_samples()),
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [line == "true" for line in done.stdout.split()]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_node_receiver_verifies_what_crewq_signs(tmp_path: Path) -> None:
    (tmp_path / "verify.mjs").write_text(_code("javascript"))
    (tmp_path / "run.mjs").write_text(NODE_RUNNER)
    assert _verdicts(["node", "run.mjs"], tmp_path) == EXPECTED


@pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed")
def test_the_go_receiver_verifies_what_crewq_signs(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module example.com/receiver\n\ngo 1.19\n")
    (tmp_path / "crewqhook").mkdir()
    (tmp_path / "crewqhook" / "verify.go").write_text(_code("go"))
    (tmp_path / "main.go").write_text(GO_RUNNER)
    # The standard library only: nothing to fetch, and a cache of the test's own.
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOCACHE": str(tmp_path / "c")}
    assert _verdicts(["go", "run", "."], tmp_path, env) == EXPECTED
