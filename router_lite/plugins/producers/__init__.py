"""Data producers (llm-d's PrepareData plugins): state other plugins read, named in their parameters."""
