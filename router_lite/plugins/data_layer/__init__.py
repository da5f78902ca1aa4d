"""dataLayer plugins (sources and extractors): one per module, registered by llm-d type name."""
