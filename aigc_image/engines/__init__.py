"""Engines turn prompts into images; the registry says which engine serves which model."""
