"""Task streams in the browser: Server-Sent Events responses and a live dashboard page.

Needs the ``web`` extra (starlette; uvicorn to serve the dashboard).
"""

from __future__ import annotations

from ._dashboard import dashboard_app
from ._response import EventStreamResponse, sse_response
from ._wire import default_label, task_key

__all__ = ["EventStreamResponse", "dashboard_app", "default_label", "sse_response", "task_key"]
