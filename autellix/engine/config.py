"""The engine plugin's one configuration path (read once when an engine starts). Pure Python.

`AUTELLIX_POLICY` (one of PLUGIN_POLICIES; default autellix) and the `AUTELLIX_<FIELD>` variables of
`PolicyConfig.from_env`; vLLM's `--additional-config '{"autellix": {"policy": "plas", "beta": 4}}'`
overrides them field by field.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from autellix.context import short_repr
from autellix.policy import ConfigError, PolicyConfig

PLUGIN_POLICIES = ("fcfs", "mlfq", "plas", "atlas", "autellix")


def resolve_config(additional_config: Any = None,
                   environ: Mapping[str, str] | None = None) -> tuple[str, PolicyConfig]:
    """Policy name and PolicyConfig from AUTELLIX_* variables, overridden by additional_config['autellix'].
    Raises ConfigError for an unknown policy or field, or an invalid value."""
    env = os.environ if environ is None else environ
    name = env.get("AUTELLIX_POLICY", "autellix").strip().lower()
    config = PolicyConfig.from_env(env)
    override = additional_config.get("autellix") if isinstance(additional_config, Mapping) else None
    if override:
        if not isinstance(override, Mapping):
            raise ConfigError(f"additional_config.autellix: expected an object, got {short_repr(override)}")
        fields = dict(override)
        name = str(fields.pop("policy", name)).strip().lower()
        parsed = PolicyConfig.from_dict(fields)
        config = dataclasses.replace(config, **{k: getattr(parsed, k) for k in fields})
    if name not in PLUGIN_POLICIES:
        raise ConfigError(f"AUTELLIX_POLICY: {name!r} is not an engine policy; choose one of {PLUGIN_POLICIES}")
    return name, config
