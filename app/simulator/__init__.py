"""A faithful stand-in for the retired Runner job service (docs/runner.md, docs/simulator.md)."""

from app.simulator.ansible_engine import AnsibleEngine, AnsibleNotInstalled
from app.simulator.app import SimulatorServer, create_simulator_app, simulator_of
from app.simulator.config import Faults, SimulatorConfig, SimUser, Variants
from app.simulator.control import SimulatorControl
from app.simulator.engine import Engine, RunContext, RunHandle, ScriptedEngine
from app.simulator.scripts import HostScript, parse_script
from app.simulator.shapes import fleet_job
from app.simulator.state import Simulator

__all__ = [
    "AnsibleEngine",
    "AnsibleNotInstalled",
    "Engine",
    "Faults",
    "HostScript",
    "RunContext",
    "RunHandle",
    "ScriptedEngine",
    "SimUser",
    "Simulator",
    "SimulatorConfig",
    "SimulatorControl",
    "SimulatorServer",
    "Variants",
    "create_simulator_app",
    "fleet_job",
    "parse_script",
    "simulator_of",
]
