"""The engine plugin's one configuration path (read once when an engine starts). Pure Python.

`AUTELLIX_POLICY` (one of policy.systems.PLUGIN_SYSTEMS; default autellix), `AUTELLIX_TRACE` (log every
call's life; default off) and the `AUTELLIX_<FIELD>` variables of `PolicyConfig.from_env`; vLLM's
`--additional-config '{"autellix": {"policy": "plas", "trace": true, "beta": 4}}'` overrides them field
by field.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from autellix.context import short_repr
from autellix.policy import ConfigError, PolicyConfig
from autellix.policy.config import parse_flag
from autellix.policy.systems import PLUGIN_SYSTEMS


class PluginConfig(NamedTuple):
    """What an engine's plugin runs. `trace`: one INFO line per call event (arrive, run, preempt, leave),
    for reading a schedule back; off by default, since a busy engine sees thousands of calls a minute."""

    policy: str
    config: PolicyConfig
    trace: bool = False


def resolve_config(additional_config: Any = None, environ: Mapping[str, str] | None = None) -> PluginConfig:
    """The plugin's settings from AUTELLIX_* variables, overridden by additional_config['autellix'].
    Raises ConfigError for an unknown policy or field, or an invalid value."""
    env = os.environ if environ is None else environ
    name = env.get("AUTELLIX_POLICY", "autellix").strip().lower()
    trace = parse_flag("AUTELLIX_TRACE", env.get("AUTELLIX_TRACE", ""))
    config = PolicyConfig.from_env(env)
    override = additional_config.get("autellix") if isinstance(additional_config, Mapping) else None
    if override:
        if not isinstance(override, Mapping):
            raise ConfigError(f"additional_config.autellix: expected an object, got {short_repr(override)}")
        fields = dict(override)
        name = str(fields.pop("policy", name)).strip().lower()
        if "trace" in fields:
            trace = parse_flag("additional_config.autellix.trace", fields.pop("trace"))
        parsed = PolicyConfig.from_dict(fields)
        config = dataclasses.replace(config, **{k: getattr(parsed, k) for k in fields})
    if name not in PLUGIN_SYSTEMS:
        raise ConfigError(f"AUTELLIX_POLICY: {name!r} is not an engine policy; "
                          f"choose one of {PLUGIN_SYSTEMS}")
    return PluginConfig(name, config, trace)

