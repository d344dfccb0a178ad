"""crewq: run CrewAI crews as background jobs.

Receivers verify webhooks with `crewq.verify_webhook(secret, headers, body)`.
"""

from shared.runtime.version import VERSION
from shared.webhooks.signing import WebhookVerificationError, verify_webhook

__version__ = VERSION
__all__ = ["WebhookVerificationError", "__version__", "verify_webhook"]
