"""The widgets: they show view-models' state and forward the user's actions to them; they
never call the engine or the library (an import-linter contract checks it)."""
