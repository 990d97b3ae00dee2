"""CDS Hooks cards for the IEC-HS service: templates and treatment content in cards/, rendered by code.

from cds_service.cards import CardContext, render_patient_view, render_order_hook
"""

from __future__ import annotations

from cds_service.cards.content import CardContent, load_card_content
from cds_service.cards.invariants import CardInvariantError, check_card
from cds_service.cards.render import CardContext, render_order_hook, render_patient_view

__all__ = [
    "CardContent",
    "CardContext",
    "CardInvariantError",
    "check_card",
    "load_card_content",
    "render_order_hook",
    "render_patient_view",
]
