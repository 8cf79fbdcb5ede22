"""A faithful stand-in for the retired Runner job service (docs/runner.md, docs/simulator.md)."""

from app.simulator.app import SimulatorServer, create_simulator_app, simulator_of
from app.simulator.config import Faults, SimulatorConfig, SimUser
from app.simulator.control import SimulatorControl
from app.simulator.engine import Engine, RunContext, RunHandle, ScriptedEngine
from app.simulator.scripts import HostScript, parse_script
from app.simulator.shapes import fleet_job
from app.simulator.state import Simulator

__all__ = [
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
    "create_simulator_app",
    "fleet_job",
    "parse_script",
    "simulator_of",
]
