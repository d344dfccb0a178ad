"""Webhook signing secrets sealed at rest with Fernet (`cryptography`), under the keys in
`CREWQ_SECRET_KEY` (and crew checkpoints, as bytes, under `CREWQ_CHECKPOINT_KEY`'s): a
comma-separated list, newest first. Everything is sealed with the
first key and opened with any of them, so a key is rotated by putting a new one first,
running `crewq secrets reseal` (re-seals every secret with it), then dropping the old one.

A database dump alone then holds no secret that could forge a webhook."""

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# Secrets stored before sealing existed are plaintext Standard Webhooks secrets; they are
# read as they are until `crewq secrets reseal` (or `crewq migrate`) seals them.
_PLAINTEXT_PREFIX = "whsec_"


class SecretKeyMissing(RuntimeError):
    pass


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretKeyMissing(
                "CREWQ_SECRET_KEY is not set: give it one or more Fernet keys"
                " (python -c 'from cryptography.fernet import Fernet;"
                " print(Fernet.generate_key().decode())'); crewq dev makes one for you"
            )
        try:
            self._fernet = MultiFernet([Fernet(k.strip().encode()) for k in keys])
        except ValueError as exc:
            raise SecretKeyMissing(
                f"CREWQ_SECRET_KEY holds a key that is not a Fernet key: {exc}"
            ) from None

    @classmethod
    def from_setting(cls, value: str | None) -> "SecretBox":
        return cls([k for k in (value or "").split(",") if k.strip()])

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        if stored.startswith(_PLAINTEXT_PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored.encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyMissing(
                "a signing secret was sealed with a key CREWQ_SECRET_KEY no longer lists;"
                " put the old key back (after the new one) and run crewq secrets reseal"
            ) from exc

    def seal_bytes(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def open_bytes(self, sealed: bytes) -> bytes:
        """Raises cryptography's InvalidToken when no key opens it (or it was altered)."""
        return self._fernet.decrypt(sealed)

    def reseal(self, stored: str) -> str:
        """The same secret sealed with the newest key (plaintext ones sealed for the first
        time)."""
        if stored.startswith(_PLAINTEXT_PREFIX):
            return self.seal(stored)
        return self._fernet.rotate(stored.encode()).decode()


def generate_key() -> str:
    return Fernet.generate_key().decode()
