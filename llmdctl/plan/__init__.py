"""Offline planning (`llmdctl plan`): the real router scheduler and simulated engines on a virtual clock.

`simulate` runs one deployment; `run_policies` one scenario under several scheduling policies; `sweep` a grid
of deployments with the Pareto front of cost versus TTFT / throughput.
"""

from llmdctl.plan.presets import LLMD_73, POLICIES, SCENARIOS, Scenario, policy_configs
from llmdctl.plan.run import SweepSpec, pareto, run_policies, sweep
from llmdctl.plan.sim import PlanConfig, PlanResult, PoolPlan, simulate

__all__ = [
    "LLMD_73",
    "POLICIES",
    "SCENARIOS",
    "PlanConfig",
    "PlanResult",
    "PoolPlan",
    "Scenario",
    "SweepSpec",
    "pareto",
    "policy_configs",
    "run_policies",
    "simulate",
    "sweep",
]
