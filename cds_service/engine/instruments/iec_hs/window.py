"""The IEC-HS evaluation window: the look-back window, never before the infusion."""

from __future__ import annotations

from datetime import datetime

from cds_service.engine.context import Context


def window_start(ctx: Context) -> datetime:
    infusion = ctx.therapy.infusion_time
    return max(ctx.window_start, infusion) if infusion is not None else ctx.window_start


def phase_window_start(ctx: Context, phase_start: datetime | None) -> datetime:
    """Where IEC-HS findings are read from: the ferritin low before its rise, within the window."""
    start = window_start(ctx)
    return max(start, phase_start) if phase_start is not None else start
