"""MEDIC-AD: a clinically oriented medical vision-language model (detect, compare, explain)."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["MedicAD", "MedicADConfig", "__version__"]


def __getattr__(name: str):
    # Lazy: `import medic_ad` stays light for the CLI's fast paths (help, data summary).
    if name == "MedicAD":
        from medic_ad.models.medic_ad import MedicAD

        return MedicAD
    if name == "MedicADConfig":
        from medic_ad.models.config import MedicADConfig

        return MedicADConfig
    raise AttributeError(name)
