"""The local target: the stack as supervised processes on 127.0.0.1 (plan, start, watch, stop)."""
