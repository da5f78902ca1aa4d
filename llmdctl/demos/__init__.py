"""Scripted demos (`llmdctl demo NAME`): kv-cache-wins, pd, wide-ep, kv-offload, semantic-kv."""

from llmdctl.demos.catalog import DEMOS, Demo, DemoResult, run_demo

__all__ = ["DEMOS", "Demo", "DemoResult", "run_demo"]
