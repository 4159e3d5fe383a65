"""Third-party model layouts, implemented by us so that published checkpoints load unchanged."""
