"""Example handlers of a small shop: what real kongtaskd tasks tend to look like.

conf/kongtask.yaml lists this module under ``task_modules:``, so the ``@kongtaskd.task``
functions below register themselves. ``examples/schema.sql`` adds the shop's tables and a
trigger that enqueues ``order_placed`` for every new order; ``examples/signup.py``
enqueues ``send_email`` from Python inside the application's own transaction.

Three habits worth copying:

* **Safe to repeat.** A job can run twice (a crash after the work, before the outcome is
  recorded), so each handler writes its result under a name derived from the job's
  input and replaces it atomically: a second run overwrites, it does not duplicate.
* **Follow-ups in the same transaction.** ``ctx.add_job`` enqueues on the handler's own
  connection: the follow-up jobs exist only if this handler succeeds.
* **Heavy work is fine.** Each job runs in a forked child process, so a CPU-bound
  handler uses its own core and never stalls the supervisor or the other jobs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import kongtaskd

#: Where send_email "delivers" (one file per message) and make_thumbnail writes; a
#: stand-in for an SMTP server and an object store.
OUTBOX_ENV = "EXAMPLE_OUTBOX"


def outbox() -> Path:
    """``$EXAMPLE_OUTBOX``, else ``kongtaskd-outbox`` in the temporary directory."""
    path = Path(os.environ.get(OUTBOX_ENV) or Path(tempfile.gettempdir(), "kongtaskd-outbox"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one (rename is atomic)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(path)


@kongtaskd.task("send_email")
def send_email(payload: dict[str, Any], ctx: Any) -> None:
    """Deliver one email: payload {to, subject, body}, plus an optional ``message_id``.

    The file is named after ``message_id`` (default: the job id), so a retry replaces
    the same message instead of sending a second one.
    """
    to, subject = payload["to"], payload.get("subject", "(no subject)")
    message_id = payload.get("message_id") or f"job-{ctx.job.id}"
    message = f"To: {to}\nSubject: {subject}\nMessage-ID: <{message_id}@example>\n\n"
    message += payload.get("body", "") + "\n"
    _write_atomically(outbox() / f"{message_id}.eml", message.encode())
    ctx.logger.info("sent %r to %s", subject, to)


def _render_image(seed: str, width: int, height: int) -> bytearray:
    """A deterministic greyscale 'photo' (8-bit pixels, row by row) from ``seed``."""
    pixels = bytearray(width * height)
    state = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") or 1
    for y in range(height):
        row = y * width
        for x in range(width):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF  # a cheap PRNG: noise
            # A gradient (at most 223) plus noise (at most 31): always a valid byte.
            pixels[row + x] = ((x * 224) // width + (y * 224) // height) // 2 + state % 32
    return pixels


def _shrink(pixels: bytearray, width: int, height: int, factor: int) -> tuple[bytes, int, int]:
    """Box-filter downscale by ``factor``: the mean of each factor x factor block."""
    out_w, out_h = width // factor, height // factor
    out = bytearray(out_w * out_h)
    area = factor * factor
    for oy in range(out_h):
        for ox in range(out_w):
            total = 0
            for dy in range(factor):
                start = (oy * factor + dy) * width + ox * factor
                total += sum(pixels[start : start + factor])
            out[oy * out_w + ox] = total // area
    return bytes(out), out_w, out_h


@kongtaskd.task("make_thumbnail")
def make_thumbnail(payload: dict[str, Any], ctx: Any) -> None:
    """Render a product 'photo' and shrink it to a thumbnail (PGM file): CPU-bound work.

    payload {sku, size (default 512), factor (default 8)}. Pure Python on purpose: it
    keeps one core busy for a noticeable moment, which is what such jobs do.
    """
    sku, size, factor = payload["sku"], int(payload.get("size", 512)), int(payload.get("factor", 8))
    image = _render_image(sku, size, size)
    thumb, width, height = _shrink(image, size, size, factor)
    header = f"P5\n{width} {height}\n255\n".encode()
    _write_atomically(outbox() / f"{sku}-thumb.pgm", header + thumb)
    ctx.logger.info("thumbnail of %s: %dx%d -> %dx%d", sku, size, size, width, height)


@kongtaskd.task("order_placed")
def order_placed(payload: dict[str, Any], ctx: Any) -> None:
    """Fan out the work of a new order (enqueued by the trigger in schema.sql).

    Reads the order on the handler's own connection, marks it confirmed and enqueues a
    confirmation email and one thumbnail per item, all in one transaction: if anything
    here fails, none of it happened and the whole job is retried. The job keys make a
    repeated run replace its follow-ups rather than add a second set.
    """
    order_id = int(payload["order_id"])
    with ctx.connection.cursor() as cur:
        cur.execute(
            "update shop_orders set confirmed_at = now() where id = %s "
            "returning customer_email, items",
            [order_id],
        )
        row = cur.fetchone()
    if row is None:
        ctx.logger.warning("order %d no longer exists; nothing to do", order_id)
        return
    email, items = row
    ctx.add_job(
        "send_email",
        {
            "to": email,
            "subject": f"Order {order_id} confirmed",
            "body": "You ordered: " + ", ".join(items),
            "message_id": f"order-{order_id}",
        },
        job_key=f"order-{order_id}-email",
    )
    for sku in items:
        ctx.add_job("make_thumbnail", {"sku": sku}, job_key=f"thumb-{sku}")
    ctx.logger.info("order %d confirmed: 1 email and %d thumbnails queued", order_id, len(items))
