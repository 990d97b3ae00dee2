"""The IEC-HS evaluation window: the look-back window, never before the infusion."""

from __future__ import annotations

from datetime import datetime

from cds_service.engine.context import Context


def window_start(ctx: Context) -> datetime:
    infusion = ctx.therapy.infusion_time
    return max(ctx.window_start, infusion) if infusion is not None else ctx.window_start
