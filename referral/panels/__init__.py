"""Multi-agency panel meetings and their decisions on cases."""
