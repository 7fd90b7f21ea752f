"""One-time form tokens: every form the dashboard renders carries a fresh random token,
remembered server-side with who it was made for, what it is for and what it carries (a
bulk action's exact set); a POST is acted on only when it brings a token that exists, is
unexpired, belongs to the same viewer and is for this action. The token is used up by that
POST, so a replayed form (the back button, a second click, a copied request) does nothing
but get a 403 page saying so. Tokens live in this process's memory, like the sessions.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kongtaskd import tunables


@dataclasses.dataclass(frozen=True)
class Form:
    viewer: str
    purpose: str
    data: Any
    expires: float


class Forms:
    def __init__(
        self,
        lifetime: float = tunables.WEB_FORM_SECONDS,
        limit: int = tunables.WEB_MAX_FORMS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime = lifetime
        self.limit = limit
        self._clock = clock
        self._forms: OrderedDict[str, Form] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, viewer: str, purpose: str, data: Any = None) -> str:
        """A new token for a form ``purpose`` (e.g. ``job:42:retry``) shown to ``viewer``."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._forms[token] = Form(viewer, purpose, data, self._clock() + self.lifetime)
            while len(self._forms) > self.limit:
                self._forms.popitem(last=False)  # the oldest open form goes first
        return token

    def take(self, token: str | None, viewer: str, purpose: str) -> tuple[bool, Any]:
        """Use up ``token``: (True, its data) when it was issued to ``viewer`` for
        ``purpose`` and has not expired or been used; (False, None) otherwise. A token
        offered for the wrong viewer or purpose is used up too: it has been seen."""
        if not token:
            return False, None
        with self._lock:
            form = self._forms.pop(token, None)
        if form is None or form.expires <= self._clock():
            return False, None
        same = hmac.compare_digest(form.viewer, viewer) and hmac.compare_digest(
            form.purpose, purpose
        )
        return (True, form.data) if same else (False, None)
