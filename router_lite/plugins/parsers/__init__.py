"""parsers plugins: one per module, registered by llm-d type name."""
