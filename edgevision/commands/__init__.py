"""CLI commands beyond the core ones in `edgevision.cli`, one module each (thin: parse, call, present)."""
