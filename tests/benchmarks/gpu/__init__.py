"""The GPU benchmark's device run (see README.md here); not collected by pytest."""
