"""One table of named systems (policy/systems.py) read by the simulator, the plugin and the engine CLI."""

import pytest

from autellix.engine.config import resolve_config
from autellix.policy import POLICIES, ConfigError
from autellix.policy.systems import ENGINE_SYSTEMS, PLUGIN_SYSTEMS, SERVE_SYSTEMS, SYSTEMS, System, system


def test_every_system_runs_a_policy_core_order_and_is_named_by_its_key():
    for name, s in SYSTEMS.items():
        assert s.name == name and s.order in POLICIES
    with pytest.raises(ValueError, match="unknown order"):
        System("x", "lifo")


def test_stock_vllm_is_an_engine_system_but_never_the_plugin():
    assert SYSTEMS["vllm"].stock and "vllm" in ENGINE_SYSTEMS and "vllm" not in PLUGIN_SYSTEMS
    assert set(PLUGIN_SYSTEMS) < set(ENGINE_SYSTEMS)
    for name in PLUGIN_SYSTEMS:  # the plugin accepts exactly the plugin systems
        assert resolve_config(environ={"AUTELLIX_POLICY": name}).policy == name
    for name in set(SYSTEMS) - set(PLUGIN_SYSTEMS):
        with pytest.raises(ConfigError, match="not an engine policy"):
            resolve_config(environ={"AUTELLIX_POLICY": name})


def test_thunderagent_is_served_as_stock_engines_behind_the_gateways_pause_gate():
    ta = SYSTEMS["thunderagent"]
    assert ta.pause_gate and ta.stock and not ta.plugin and ta.engine == "vllm"
    assert "thunderagent" in SERVE_SYSTEMS and "thunderagent" not in ENGINE_SYSTEMS  # needs the gateway
    assert set(ENGINE_SYSTEMS) < set(SERVE_SYSTEMS)
    assert all(SYSTEMS[n].engine == n for n in PLUGIN_SYSTEMS) and SYSTEMS["vllm"].engine == "vllm"


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="choose one of .*thunderagent"):
        system("fifo")
