"""Build the pure pipeline's Engine from settings and the mappings folder (start-up only)."""

from __future__ import annotations

import gc

from prpgate.config import Settings
from prpgate.core.build import Deployment
from prpgate.core.mapping import Mapper
from prpgate.core.model import Coding
from prpgate.core.pipeline import Engine
from prpgate.core.units import UnitConverter
from prpgate.mappings_loader import load_mappings

__all__ = ["build_engine", "end_startup"]


def build_engine(settings: Settings, converter: UnitConverter | None = None) -> Engine:
    """Load and validate mappings/ and wire the Engine the pipeline runs with.

    Raises MappingError naming the file and key of a mapping that does not validate.
    Building the UCUM registry takes about half a second; pass ``converter`` to reuse one.
    """
    mappings = load_mappings(settings.mappings)
    units = converter or UnitConverter()
    units.warm_up()
    coding = mappings.rules.issue_coding
    return Engine(
        mapper=Mapper(mappings, units),
        rules_by_analyte=mappings.rules_by_analyte(),
        deployment=Deployment(
            identifier_system=mappings.rules.identifier_system,
            rule_code_system=mappings.rules.rule_code_system,
            issue_coding=Coding(coding.system, coding.code, coding.display),
        ),
        charset_overrides=mappings.charset_overrides(),
        assigning_authorities=mappings.assigning_authorities(),
        identifier_system_base=mappings.rules.patient_identifier_system_default,
        max_message_bytes=settings.max_message_bytes,
        max_bundle_entries=settings.max_bundle_entries,
    )


def end_startup() -> None:
    """Take what start-up loaded out of the garbage collector's scans (``gc.freeze``).

    The models, registries and mappings a long run loads are some 100 000 objects
    that live as long as the process; without this every older-generation collection
    walks them again while messages flow (about 5% of a replay's time).
    """
    gc.collect()
    gc.freeze()
