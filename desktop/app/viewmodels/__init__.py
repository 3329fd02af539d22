"""View-models: what the widgets bind to. They live on the GUI thread, hold the app's state
in the user's terms, and reach the engine and the library (directly for quick reads, through
``desktop.app.worker`` for anything slow). Widgets import these, never the engine."""
