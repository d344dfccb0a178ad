"""crewq: run CrewAI crews as background jobs.

Receivers verify webhooks with `crewq.verify_webhook(secret, headers, body)`.
"""

from shared.signing import WebhookVerificationError, verify_webhook
from shared.version import VERSION

__version__ = VERSION
__all__ = ["WebhookVerificationError", "__version__", "verify_webhook"]
