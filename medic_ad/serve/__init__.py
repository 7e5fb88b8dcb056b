"""Serving MEDIC-AD to people: input sanity checks, overlays, one service used by the CLI, the REST API
(:mod:`medic_ad.serve.api`) and the web UI (:mod:`medic_ad.serve.ui`). See ``docs/serve.md``."""

from medic_ad.serve.sanity import REASONS, Limits, SanityError

__all__ = ["REASONS", "Limits", "SanityError"]
