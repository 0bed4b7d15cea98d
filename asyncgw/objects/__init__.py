"""Above the gateways, pyacq's model: remote objects used through proxies,
remote logs forwarded here, gateways' deaths as events, and imports of the
caller's own modules served to remote code (DESIGN §5)."""

from __future__ import annotations
