"""Discover plugins through entry points, validate their manifests, and register their hooks."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points

import pluggy

from citybrain.core.errors import CityBrainError
from citybrain.plugins.hookspecs import PROJECT, CityBrainSpec
from citybrain.plugins.manifest import Manifest, load_manifest

ENTRY_POINT_GROUP = "citybrain.plugins"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginRecord:
    """One discovered plugin: loaded with its manifest, or refused with the reason."""

    domain: str
    module: str
    manifest: Manifest | None
    error: str | None

    @property
    def loaded(self) -> bool:
        """Return whether the plugin passed validation and is registered."""
        return self.error is None


@dataclass
class PluginSet:
    """The plugin manager together with what discovery found."""

    pm: pluggy.PluginManager
    records: list[PluginRecord]


def load_plugins(sources: list[tuple[str, str]] | None = None) -> PluginSet:
    """Load plugins from (domain, module) pairs, or from the entry points when none are given."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(CityBrainSpec)
    if sources is None:
        sources = sorted((ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP))
    records: list[PluginRecord] = []
    for domain, module_name in sources:
        try:
            module = importlib.import_module(module_name)
            manifest = load_manifest(module, domain)
            pm.register(module, name=domain)
        except CityBrainError as exc:
            records.append(PluginRecord(domain, module_name, None, exc.message))
            log.warning("plugin refused", extra={"plugin": domain, "reason": exc.message})
            continue
        except (ImportError, ValueError) as exc:
            # a broken third-party plugin must not stop the node: report it instead
            reason = f"plugin {domain!r} failed to load: {exc}"
            records.append(PluginRecord(domain, module_name, None, reason))
            log.warning("plugin refused", extra={"plugin": domain, "reason": reason})
            continue
        records.append(PluginRecord(domain, module_name, manifest, None))
    return PluginSet(pm=pm, records=records)


@cache
def get_plugins() -> PluginSet:
    """Return the plugins discovered from the installed entry points, loaded once."""
    return load_plugins()


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager."""
    return get_plugins().pm
